"""Every spec in specs/ checks and compiles through the CLI; every broken copy fails
with its expected diagnostics and never a traceback."""

from __future__ import annotations

import re

import pytest
from conftest import SPECS, run_cli

import dsl

GOOD = sorted(p for p in SPECS.glob("*") if p.suffix in (".dsl", ".yaml"))
BROKEN = sorted((SPECS / "broken").glob("*"))
# symbolic dims whose size only the data (or --dim) gives
DIMS = {"siamese.dsl": ["--dim", "F=12"]}


@pytest.mark.parametrize("path", GOOD, ids=[p.name for p in GOOD])
def test_spec_checks(path):
    code, out, err = run_cli("check", str(path))
    assert code == 0, err


@pytest.mark.parametrize("path", GOOD, ids=[p.name for p in GOOD])
def test_spec_compiles(path):
    code, out, err = run_cli("compile", str(path), *DIMS.get(path.name, []))
    assert code == 0, err
    assert "total" in out


def _expected(path) -> list[tuple[str, int, int]]:
    """A broken spec lists what it must produce in `# expect: CODE line:col` comments."""
    return [(m[0], int(m[1]), int(m[2])) for m in re.findall(r"# expect: (E\d{4}) (\d+):(\d+)", path.read_text())]


@pytest.mark.parametrize("path", BROKEN, ids=[p.name for p in BROKEN])
def test_broken_spec_fails_with_expected_diagnostics(path):
    expected = _expected(path)
    assert expected, f"{path.name} declares no `# expect:` lines"
    got = [(d.code, d.span.line, d.span.col) for d in dsl.check(path)]
    assert got == expected
    code, out, err = run_cli("check", str(path))
    assert code == 1 and "Traceback" not in err
    for c, line, col in expected:
        assert f"error[{c}]" in err and f":{line}:{col}" in err
