"""Shared helpers of the tooling commands: reading a spec with its source and
writing a result atomically. Pure Python (no torch, no rich)."""

from __future__ import annotations

import sys

from dsl.language.errors import SpecError
from dsl.language.files import atomic_text
from dsl.language.formats import format_of
from dsl.language.ir import Spec
from dsl.language.source import loads, read_source

spec_format = format_of

def load_with_source(path: str) -> tuple[Spec, str]:
    """The spec of ``path`` and its text; SpecError (with the source attached) on mistakes."""
    text = read_source(path)
    try:
        return loads(text, spec_format(path), file=path), text
    except SpecError as e:
        e.sources.setdefault(path, text)
        raise


def write_atomic(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` in one step (:func:`dsl.language.files.atomic_text`);
    a folder that cannot be written is a UsageError (exit 2), not a traceback."""
    from dsl.cli.main import UsageError

    try:
        atomic_text(path, text)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None


def emit(text: str, output: str | None) -> None:
    """Write ``text`` to ``output`` (atomically) or to stdout when it is None or ``-``."""
    if output is None or output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_atomic(output, text)
