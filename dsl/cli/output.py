"""Shared helpers of the tooling commands: reading a spec with its source and
writing a result atomically. Pure Python (no torch, no rich)."""

from __future__ import annotations

import os
import sys
import tempfile

from dsl.language.diagnostics import SpecError
from dsl.language.ir import Spec


def spec_format(path: str) -> str:
    """``"yaml"`` for ``.yaml``/``.yml``, ``"dsl"`` otherwise (as ``dsl.load`` decides)."""
    return "yaml" if os.path.splitext(path)[1].lower() in (".yaml", ".yml") else "dsl"


def load_with_source(path: str) -> tuple[Spec, str]:
    """The spec of ``path`` and its text; SpecError (with the source attached) on mistakes."""
    from dsl.api import loads, read_source

    text = read_source(path)
    try:
        return loads(text, spec_format(path), file=path), text
    except SpecError as e:
        e.sources.setdefault(path, text)
        raise


def write_atomic(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` in one step: a temporary file in the same
    folder, then ``os.replace``, so a reader never sees half a file and an
    interrupted write leaves the old one. An existing file keeps its mode; a
    symbolic link keeps pointing at the file, which is what gets replaced.
    A folder that cannot be written is a UsageError (exit 2), not a traceback."""
    from dsl.cli.main import UsageError

    try:
        _replace(os.path.realpath(path), text)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None


def _replace(path: str, text: str) -> None:
    folder = os.path.dirname(path)
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=".dsl-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def emit(text: str, output: str | None) -> None:
    """Write ``text`` to ``output`` (atomically) or to stdout when it is None or ``-``."""
    if output is None or output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_atomic(output, text)
