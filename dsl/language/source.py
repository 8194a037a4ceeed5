"""Reading specs: from text (``loads``) or a file (``load``), in either format.

Spec files are untrusted: only a regular file is read, and at most
``MAX_FILE_BYTES`` of it; text that is not UTF-8 is a diagnostic with the
position of the first bad byte.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

from dsl.language import formats
from dsl.language.diagnostics import Diagnostic, Span
from dsl.language.errors import SpecError
from dsl.language.files import read_bounded
from dsl.language.ir import Spec

MAX_FILE_BYTES = 5_000_000


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while parsing or checking.

    Both build many long-lived objects (parse trees, IR nodes, spans) and little
    cyclic garbage; every full collection walks all of them, which made a large
    spec cost quadratic time. Mercurial pauses the collector around its parsers
    for the same reason.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def loads(text: str, format: str = "dsl", file: str = "<input>") -> Spec:
    """Parse spec text (``format`` is "dsl" or "yaml"); raise SpecError on mistakes."""
    fmt = formats.lookup(format)
    with gc_paused():
        return formats.read(text, fmt.name, file)


def read_source(path: str) -> str:
    """The text of a spec file; a SpecError (E0702, E0801) when it cannot be used."""
    try:
        data = read_bounded(path, MAX_FILE_BYTES, "spec file")
    except FileNotFoundError:
        raise SpecError([Diagnostic("E0702", f"cannot read `{path}`: no such file", Span(file=path))]) from None
    except OSError as e:
        code = "E0801" if "limit" in str(e) or "over" in str(e) else "E0702"
        message = e.strerror if e.strerror else str(e)
        raise SpecError([Diagnostic(code, f"cannot read `{path}`: {message}", Span(file=path))]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        span = Span(file=path, line=line, col=col, end_line=line, end_col=col + 1)
        raise SpecError([Diagnostic("E0702", f"cannot read `{path}`: byte 0x{data[e.start]:02x} is not UTF-8 text",
                                    span, label="not UTF-8")],
                        {path: data.decode("utf-8", errors="replace")}) from None


def load(path: str | os.PathLike[str]) -> Spec:
    """Load a ``.dsl`` or ``.yaml`` spec from a file."""
    path = os.fspath(path)
    if isinstance(path, str) and "\n" in path and not os.path.lexists(path):  # spec text where a path belongs
        raise SpecError([Diagnostic("E0702", "expected a spec file's path, got spec text", Span(file="<input>"),
                                    help="parse text with dsl.loads(text) (format=\"dsl\" or \"yaml\") and pass "
                                         "the Spec it returns")])
    text = read_source(path)
    try:
        return loads(text, formats.format_of(path), file=path)
    except SpecError as e:
        e.sources.setdefault(path, text)
        raise
