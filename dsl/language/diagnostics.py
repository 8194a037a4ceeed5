"""Diagnostics: stable codes, spans, notes, help; rustc-style rendering.

Pure Python. Every problem the front half finds is a :class:`Diagnostic`; they
are collected, sorted by position and raised together as a :class:`SpecError`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict

from dsl.language.files import read_bounded

# Stable codes. The hundreds group the stage: 01xx syntax, 02xx names and
# structure, 03xx shapes and dtypes, 04xx hyperparameters, 05xx train section,
# 06xx build, 07xx YAML and files, 08xx limits.
CODES: dict[str, str] = {
    "E0101": "syntax error",
    "E0102": "input nested too deeply or too long",
    "E0201": "unknown name",
    "E0202": "wrong number of arguments",
    "E0203": "duplicate definition",
    "E0204": "import problem",
    "E0205": "import cycle",
    "E0206": "not a tensor",
    "E0207": "not a constant",
    "E0208": "model missing",
    "E0209": "unknown argument",
    "E0210": "wrong number of targets",
    "E0211": "invalid statement",
    "E0212": "undefined output",
    "E0213": "invalid identifier",
    "E0301": "shape mismatch",
    "E0302": "dtype mismatch",
    "E0303": "rank mismatch",
    "E0304": "output assertion failed",
    "E0305": "invalid shape",
    "E0306": "dimension conflict",
    "E0307": "index out of range",
    "E0401": "invalid hyperparameter",
    "E0402": "unknown hyperparameter",
    "E0403": "missing hyperparameter",
    "E0404": "invalid override",
    "E0405": "constant evaluation failed",
    "E0501": "invalid train section",
    "E0502": "unknown data source",
    "E0503": "unknown train name",
    "E0601": "unknown size",
    "E0602": "build failed",
    "E0603": "export failed",
    "E0701": "invalid YAML",
    "E0702": "file not found",
    "E0703": "invalid data file",
    "E0704": "invalid run directory",
    "E0705": "run directory in use",
    "E0706": "run directory already holds a run",
    "E0801": "limit exceeded",
    "E0802": "model too large",
    "E0901": "plugin failed",
}


class Span(BaseModel):
    """A region of a source file: 1-based line and column, end exclusive."""

    model_config = ConfigDict(frozen=True)

    file: str = "<input>"
    line: int = 0
    col: int = 0
    end_line: int = 0
    end_col: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    @property
    def known(self) -> bool:
        return self.line > 0

    def sort_key(self) -> tuple[str, int, int]:
        return (self.file, self.line, self.col)


NO_SPAN = Span()


@dataclass
class Note:
    """An explanation attached to a diagnostic, optionally pointing somewhere."""

    message: str
    span: Span | None = None


@dataclass
class Diagnostic:
    code: str
    message: str
    span: Span = NO_SPAN
    label: str = ""
    notes: list[Note] = field(default_factory=list)
    help: str | None = None
    severity: str = "error"

    def note(self, message: str, span: Span | None = None) -> Diagnostic:
        self.notes.append(Note(message, span))
        return self

    def to_dict(self) -> dict:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "file": self.span.file,
            "line": self.span.line,
            "col": self.span.col,
            "end_line": self.span.end_line,
            "end_col": self.span.end_col,
            "label": self.label,
            "notes": [n.message for n in self.notes],
            "help": self.help,
        }

    def render(self, sources: dict[str, str] | SourceLines | None = None) -> str:
        return render(self, sources if isinstance(sources, SourceLines) else SourceLines(sources))

    def __str__(self) -> str:
        return self.render()


def sort_diagnostics(diags: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Sort by file then position; keep insertion order for ties; drop exact repeats."""
    seen: set[tuple] = set()
    unique = []
    for d in diags:
        key = (d.code, d.message, d.span.sort_key())
        if key not in seen:
            seen.add(key)
            unique.append(d)
    return sorted(unique, key=lambda d: d.span.sort_key())


class SourceLines:
    """The lines of each source file a rendering shows, split once per file.

    ``sources`` maps a file name to its text; a file not in it is read from disk
    (once). Splitting once per file, not per diagnostic, keeps rendering linear in
    the size of the source however many diagnostics point into it.
    """

    def __init__(self, sources: dict[str, str] | None = None):
        self.texts = dict(sources or {})
        self.lines: dict[str, list[str] | None] = {}

    def line(self, span: Span) -> str | None:
        if span.file not in self.lines:
            self.lines[span.file] = self._read(span.file)
        lines = self.lines[span.file]
        if lines is not None and 1 <= span.line <= len(lines):
            return lines[span.line - 1]
        return None

    def _read(self, file: str) -> list[str] | None:
        text = self.texts.get(file)
        if text is None:
            try:  # a regular file only: a FIFO or a device named by a span must not block the rendering
                text = read_bounded(file, MAX_SOURCE_CHARS).decode("utf-8")
            except (OSError, ValueError):
                return None
        return text.splitlines()


MAX_SOURCE_CHARS = 5_000_000  # a source file read to show its lines (the spec size limit)
MAX_SHOWN = 50  # diagnostics rendered in full; the rest are counted ("and N more")

_SHOWN = 120  # characters of a long source line shown around the caret


def _window(line: str, start: int, length: int) -> tuple[str, int, int]:
    """Cut a long line (hostile input has 10,000-character lines) to the part
    around the caret, marked with `...`; return the new caret start and length."""
    if len(line) <= _SHOWN:
        return line, start, length
    left = max(0, min(start - 1 - _SHOWN // 3, len(line) - _SHOWN))
    piece = line[left : left + _SHOWN]
    prefix = "..." if left > 0 else ""
    suffix = "..." if left + _SHOWN < len(line) else ""
    start = start - left + len(prefix)
    length = max(1, min(length, _SHOWN - (start - len(prefix)) + 1))
    return prefix + piece + suffix, start, length


def render(d: Diagnostic, sources: SourceLines) -> str:
    out = [f"{d.severity}[{d.code}]: {d.message}"]
    width = len(str(d.span.line)) if d.span.known else 1
    pad = " " * width
    if d.span.known:
        out.append(f"{pad}--> {d.span}")
        line = sources.line(d.span)
        if line is not None:
            out.append(f"{pad} |")
            start = max(d.span.col, 1)
            if d.span.end_line == d.span.line and d.span.end_col > d.span.col:
                length = d.span.end_col - d.span.col
            else:
                length = 1
            line, start, length = _window(line.expandtabs(4), start, length)
            out.append(f"{d.span.line:>{width}} | {line}")
            caret = " " * (start - 1) + "^" * max(length, 1)
            out.append(f"{pad} | {caret}" + (f" {d.label}" if d.label else ""))
        elif d.label:
            out.append(f"{pad} = {d.label}")
    elif d.span.file and d.span.file != "<input>":
        out.append(f"{pad}--> {d.span.file}")
        if d.label:
            out.append(f"{pad} = {d.label}")
    elif d.label:
        out.append(f"{pad} = {d.label}")
    for n in d.notes:
        where = f" ({n.span})" if n.span is not None and n.span.known else ""
        out.append(f"{pad} = note: {n.message}{where}")
    if d.help:
        out.append(f"{pad} = help: {d.help}")
    return "\n".join(out)


def render_all(diags: list[Diagnostic], sources: dict[str, str] | None = None, limit: int | None = None) -> str:
    """Every diagnostic rendered (the first ``limit`` when given, then a count of the rest)."""
    lines = SourceLines(sources)
    shown = diags if limit is None else diags[:limit]
    parts = [render(d, lines) for d in shown]
    if len(diags) > len(shown):
        parts.append(f"... and {len(diags) - len(shown)} more")
    errors = sum(1 for d in diags if d.severity == "error")
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''} found")
    return "\n\n".join(parts)


def suggest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """'Did you mean' candidates: close spellings, case-insensitive matches first."""
    import difflib

    pool = sorted(set(choices))
    lowered = {c.lower(): c for c in pool}
    exact_ci = [lowered[name.lower()]] if name.lower() in lowered and lowered[name.lower()] != name else []
    close = difflib.get_close_matches(name, pool, n=n, cutoff=0.6)
    if not close:
        close = [lowered[c] for c in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)]
    out: list[str] = []
    for c in exact_ci + close:
        if c not in out and c != name:
            out.append(c)
    return out[:n]


def did_you_mean(name: str, choices: Iterable[str]) -> str | None:
    s = suggest(name, choices)
    if not s:
        return None
    return "did you mean " + " or ".join(f"`{c}`" for c in s) + "?"
