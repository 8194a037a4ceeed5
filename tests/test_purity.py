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


BYO_SPEC = """
model M {{
    input x: {shape}
    h = flatten(x, start=1)
    logits = Linear(h, out=N_y)
    output logits: [B, N_y]
}}
train {{
    data = {data}
    loss = cross_entropy(logits, y)
    metrics = [accuracy(logits, y), f1(logits, y)]
    loggers = [csv, tensorboard]
}}
"""


def test_checking_your_own_data_imports_no_torch_pandas_or_pil(tmp_path) -> None:
    """table() on a CSV and images() read headers and cells in pure Python; a Parquet table
    needs pyarrow (and numpy with it), never torch, pandas or Pillow."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    frame = pd.DataFrame({"a": [0.5, 1.5, 2.5, 3.5], "color": ["r", "g", "b", "r"], "y": [0, 1, 0, 1]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    for label in ("0", "1"):
        (tmp_path / "img" / label).mkdir(parents=True)
        for name in ("a", "b"):  # two per class: enough to split into train, val and test
            Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "img" / label / f"{name}.png")
    specs = {
        "csv": BYO_SPEC.format(shape="[B, F]", data='table("t.csv", categorical=["color"])'),
        "png": BYO_SPEC.format(shape="[B, 1, 8, 8]", data='images("img")'),
        "parquet": BYO_SPEC.format(shape="[B, F]", data='table("t.parquet", categorical=["color"])'),
    }
    for name, text in specs.items():
        (tmp_path / f"{name}.dsl").write_text(text)
    code = (
        "import sys, dsl.cli\n"
        "for name, banned in (('csv', 'numpy'), ('png', 'numpy'), ('parquet', 'pandas')):\n"
        f"    assert dsl.cli.main(['check', {str(tmp_path)!r} + f'/{{name}}.dsl']) == 0, name\n"
        "    bad = [m for m in ('torch', 'pandas', 'PIL', banned) if m in sys.modules]\n"
        "    print(name, 'IMPORTED:' + ','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["csv", "IMPORTED:", "png", "IMPORTED:", "parquet", "IMPORTED:"], out.stdout
