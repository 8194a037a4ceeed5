"""Spans (1-based line and column in characters, end exclusive) and LSP
positions (0-based, columns in the client's code units, UTF-16 by default)."""

from __future__ import annotations

from collections.abc import Sequence

from lsprotocol import types
from pygls.workspace.position_codec import PositionCodec

from dsl.language.diagnostics import Span

Point = tuple[int, int]  # (1-based line, 1-based column in characters), as spans count


def span_range(span: Span, lines: Sequence[str], codec: PositionCodec) -> types.Range:
    """The LSP range of ``span``; an unknown span is the file's first character, an
    empty one covers one character so that an editor can show it."""
    if not span.known:
        return types.Range(types.Position(0, 0), types.Position(0, 1))
    start = (span.line - 1, max(span.col, 1) - 1)
    if span.end_line > span.line or (span.end_line == span.line and span.end_col > span.col):
        end = (span.end_line - 1, max(span.end_col, 1) - 1)
    else:
        end = (start[0], start[1] + 1)
    return types.Range(_client(lines, start, codec), _client(lines, end, codec))


def _client(lines: Sequence[str], point: tuple[int, int], codec: PositionCodec) -> types.Position:
    line, char = point
    if line >= len(lines):
        return types.Position(line, char)
    return codec.position_to_client_units(lines, types.Position(line, min(char, len(lines[line]))))


def point_of(position: types.Position, lines: Sequence[str], codec: PositionCodec) -> Point:
    """The (line, column) a span would give the character at ``position``."""
    server = codec.position_from_client_units(lines, types.Position(position.line, position.character))
    return server.line + 1, server.character + 1


def contains(span: Span, point: Point, file: str | None = None) -> bool:
    """Whether ``point`` lies in ``span`` (its end included, so that a cursor just
    after a name still names it)."""
    if not span.known or (file is not None and span.file != file):
        return False
    end = (span.end_line, span.end_col) if span.end_line else (span.line, span.col + 1)
    return (span.line, span.col) <= point <= end


def size(span: Span) -> tuple[int, int]:
    """How large a span is, for picking the innermost of nested spans."""
    return (span.end_line - span.line, span.end_col - span.col if span.end_line == span.line else 10**6)


def name_span(lines: Sequence[str], span: Span, name: str, keyword: str = "") -> Span:
    """Where a declaration names ``name``: past its keyword in the text form (``input x``,
    ``param p``), at its start in YAML (``x: {shape: ...}``); else the whole ``span``."""
    line = lines[span.line - 1] if 0 < span.line <= len(lines) else ""
    after = len(keyword) if keyword and line[span.col - 1:].startswith(keyword) else 0
    return word_span(lines, span, name, after) or span


def word_span(text_lines: Sequence[str], span: Span, word: str, after: int = 0) -> Span | None:
    """The span of the first whole-word ``word`` inside ``span`` (skipping ``after``
    characters of its first line): where a declaration names what it declares."""
    if not span.known or span.line > len(text_lines):
        return None
    last = min(span.end_line or span.line, len(text_lines))
    for n in range(span.line, last + 1):
        line = text_lines[n - 1]
        start = span.col - 1 + after if n == span.line else 0
        stop = span.end_col - 1 if n == span.end_line and span.end_col else len(line)
        col = _find_word(line, word, start, stop)
        if col is not None:
            return Span(file=span.file, line=n, col=col + 1, end_line=n, end_col=col + 1 + len(word))
    return None


def _find_word(line: str, word: str, start: int, stop: int) -> int | None:
    i = line.find(word, start, stop)
    while i >= 0:
        before = line[i - 1] if i > 0 else " "
        after = line[i + len(word)] if i + len(word) < len(line) else " "
        if not (before.isalnum() or before == "_") and not (after.isalnum() or after == "_"):
            return i
        i = line.find(word, i + 1, stop)
    return None
