from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# torch.compile's C++ builder imports distutils; once a test has moved sys.path around
# (the plugin tests), setuptools' distutils shim can assert on the stdlib copy. The
# stdlib copy is what inductor needs on Python 3.11, so ask the shim to stand aside.
os.environ.setdefault("SETUPTOOLS_USE_DISTUTILS", "stdlib")

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


@pytest.fixture
def write(tmp_path: Path):
    """Write a spec file into a temporary folder and return its path."""

    def _write(text: str, name: str = "spec.dsl") -> str:
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return str(p)

    return _write


def run_cli(*args: str, cwd: str | None = None) -> tuple[int, str, str]:
    """Run `dsl` in-process, capturing exit code, stdout and stderr."""
    import contextlib
    import io

    from dsl.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        old = os.getcwd()
        try:
            if cwd:
                os.chdir(cwd)
            try:
                code = main(list(args))
            except SystemExit as e:  # argparse usage errors
                code = int(e.code or 0)
        finally:
            os.chdir(old)
    return code, out.getvalue(), err.getvalue()


sys.path.insert(0, str(Path(__file__).resolve().parent))
