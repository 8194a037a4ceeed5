"""The pipeline's layers, as import-linter contracts (pyproject.toml), hold and are enforced."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _lint(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code, "--no-cache"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_layer_contracts_hold() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "KEPT" in result.stdout and "BROKEN" not in result.stdout


def test_an_upward_import_breaks_them(tmp_path: Path) -> None:
    """The language layer importing the command line (even inside a function) fails the check."""
    shutil.copytree(ROOT / "dsl", tmp_path / "dsl", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    ir = tmp_path / "dsl" / "language" / "ir.py"
    ir.write_text(ir.read_text() + "\n\ndef _upward() -> None:\n    import dsl.cli.main  # noqa: F401\n")
    result = _lint(tmp_path, pythonpath=tmp_path)
    assert result.returncode != 0
    assert "dsl.language is not allowed to import dsl.cli" in result.stdout
