"""The front half never imports torch (or torch_geometric, or rich for `dsl check`)."""

from __future__ import annotations

import subprocess
import sys

from conftest import SPECS

SCRIPT = """
import sys
import dsl, dsl.cli
from dsl.language import registry
registry.load()
for path in {paths!r}:
    spec = dsl.load(path)
    dsl.check(spec)
    spec.to_text(); spec.to_yaml()
g = dsl.Graph("M", params={{"hidden": 4}})
x = g.input("x", ["B", 8])
g.output("y", g.Linear(x, out=g.param("hidden")), shape=["B", 4])
dsl.check(g.build())
dsl.cli.main(["check", {first!r}])
# the spec tools are front half too: fmt, convert, graph, schema, the block reference
for args in (["fmt", "--stdout"], ["convert", "--to", "yaml"], ["convert", "--to", "dsl"], ["graph"],
             ["graph", "--format", "dot", "--expand"], ["graph", "--format", "html"]):
    for path in {paths!r}:
        assert dsl.cli.main([*args, path]) == 0, (args, path)
assert dsl.cli.main(["schema"]) == 0
from dsl.tools.catalogue import markdown
markdown()
bad = [m for m in ("torch", "torch_geometric", "rich", "numpy", "sklearn") if m in sys.modules]
print("IMPORTED:" + ",".join(bad))
"""


def test_check_never_imports_torch():
    paths = sorted(str(p) for p in SPECS.glob("*.dsl")) + sorted(str(p) for p in SPECS.glob("*.yaml"))
    code = SCRIPT.format(paths=paths, first=paths[0])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("IMPORTED:")][-1]
    assert line == "IMPORTED:", line
