"""Comments (and blank lines) in the YAML that ``to_yaml`` writes.

Reading them is the reader's (:func:`dsl.language.yaml_reader.extract_comments`).
Writing: :func:`decorate` takes the comment-free YAML that ``to_yaml`` writes,
reads it back to learn the line of every statement, and inserts the comments
and blank lines that the text printer would print (:func:`printer.layout`) at
the matching lines: a leading comment on its own line before the statement, a
trailing one after it, a comment before a block's ``}`` after the block's last
line, indented inside it. So text -> YAML -> text gives the canonical text
back, comments and blank lines included. Pure Python.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from dsl.language.errors import SpecError
from dsl.language.ir import BlockDef, Node, Repeat, Spec, TrainSection, strip_spans
from dsl.language.printer import layout
from dsl.language.yaml_reader import parse_yaml

__all__ = ["decorate"]


_Key = tuple[str, int]
_SECTION_KEY = re.compile(r"\s+(nodes|inputs|outputs):\s*\Z")


class _Places:
    """Where each unit of the original spec sits in the written YAML."""

    def __init__(self) -> None:
        self.anchor: dict[_Key, int] = {}  # line before which leading comments go
        self.trail: dict[_Key, int] = {}  # line that takes its trailing comment
        self.last: dict[_Key, int] = {}  # closers: the line after which they go
        self.indent: dict[_Key, int] = {}  # closers: the indentation of the body


def _pairs(a: Iterable[Node], b: Iterable[Node]) -> Iterator[tuple[Node, Node]]:
    yield from zip(a, b, strict=True)


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _body(
    p: _Places, lines: list[str], orig: Iterable[Node], new: Iterable[Node]
) -> tuple[int, int]:
    """Record the statements of a body; return its last line (0 when empty) and
    the indentation of its statements (-1 when empty)."""
    last, indent = 0, -1
    for o, n in _pairs(orig, new):
        indent = _indent_of(lines[n.span.line - 1])
        if isinstance(o, Repeat):
            assert isinstance(n, Repeat)
            p.anchor[("h", id(o))] = p.trail[("h", id(o))] = n.span.line
            end, inner = _body(p, lines, o.body, n.body)
            _closer(p, o, end or n.span.line, inner, n.span.col)
            last = max(last, end or n.span.line)
        else:
            p.anchor[("n", id(o))] = n.span.line
            p.trail[("n", id(o))] = n.span.end_line
            last = max(last, n.span.end_line)
    return last, indent


def _closer(p: _Places, owner: Node, last: int, indent: int, inner_col: int) -> None:
    """Comments before ``owner``'s ``}`` go after its ``last`` line, indented as
    its statements (and at least at ``inner_col``), so that they read back inside."""
    key = ("c", id(owner))
    p.last[key] = last
    p.indent[key] = max(indent, inner_col - 1)


def _header_line(lines: list[str], n: BlockDef | TrainSection, word: str) -> int:
    """The ``model:``/``train:`` line that opens a section whose mapping starts at ``n``."""
    line = n.span.line
    if line > 1 and lines[line - 2].strip() == f"{word}:":
        return line - 1
    return line


def _places(orig: Spec, new: Spec, lines: list[str]) -> _Places:
    p = _Places()
    for o, n in (*_pairs(orig.params, new.params), *_pairs(orig.uses, new.uses)):
        p.anchor[("n", id(o))] = n.span.line
        p.trail[("n", id(o))] = n.span.end_line
    for o, n in _pairs(orig.blocks, new.blocks):
        assert isinstance(o, BlockDef) and isinstance(n, BlockDef)
        p.anchor[("h", id(o))] = p.trail[("h", id(o))] = n.span.line
        end, indent = _body(p, lines, o.body, n.body)
        _closer(p, o, end or n.span.line, indent, n.span.col + 2)
    if orig.model is not None and new.model is not None:
        o, n = orig.model, new.model
        p.anchor[("h", id(o))] = _header_line(lines, n, "model")
        p.trail[("h", id(o))] = n.span.line  # the `name:` line: where the header's span starts
        end, indent = _body(p, lines, o.body, n.body)
        _closer(p, o, end or n.span.line, indent, 3)
    if orig.train is not None and new.train is not None:
        o, n = orig.train, new.train
        head = _header_line(lines, n, "train")
        p.anchor[("h", id(o))] = p.trail[("h", id(o))] = head
        end = head
        for oe, ne in _pairs(o.entries, n.entries):
            p.anchor[("n", id(oe))] = ne.span.line
            p.trail[("n", id(oe))] = ne.span.end_line
            end = max(end, ne.span.end_line)
        _closer(p, o, end, 2, 3)
    return p


def _gap_line(lines: list[str], anchor: int) -> int:
    """A blank line before a statement goes above the ``nodes:``-like keys right
    before it, where a reader sees it as separating groups."""
    while anchor > 1 and _SECTION_KEY.match(lines[anchor - 2]):
        anchor -= 1
    return anchor


def decorate(spec: Spec, plain: str) -> str:
    """``plain`` (the comment-free YAML of ``spec``) with ``spec``'s comments and
    blank lines put back."""

    lay = layout(spec)
    c = lay.comments
    if not any(com.text for com in spec.comments) and not lay.gapped:
        return plain
    try:
        new = parse_yaml(plain, "<yaml>")
    except SpecError:  # not readable back (over the YAML size limits): no places to put comments
        return plain
    if strip_spans(new) != strip_spans(spec):  # never expected; then there is no safe place either
        return plain
    lines = plain.splitlines()
    p = _places(spec, new, lines)
    before: dict[int, list[str]] = {}
    after: dict[int, list[str]] = {}
    trailing: dict[int, str] = {}

    def lead(line: int, text: str, indent: int | None = None) -> None:
        pad = " " * (_indent_of(lines[line - 1]) if indent is None else indent)
        before.setdefault(line, []).append(pad + text)

    for key in lay.gapped:
        if key in p.anchor:
            before.setdefault(_gap_line(lines, p.anchor[key]), []).insert(0, "")
    for key, coms in c.leading.items():
        if key[0] == "c":
            for com in coms:
                after.setdefault(p.last[key], []).append(" " * p.indent[key] + com.text)
        elif key in p.anchor:
            line = p.anchor[key]
            if line > 1 and lines[line - 2] == "params:":  # the file's opening comments stay on top
                line -= 1
            for com in coms:
                lead(line, com.text)
    for key, com in c.trailing.items():
        if key[0] == "c":  # YAML has no `}` to follow
            after.setdefault(p.last[key], []).append(" " * p.indent[key] + com.text)
        elif key in p.trail and p.trail[key] not in trailing:
            trailing[p.trail[key]] = com.text
        elif key in p.anchor:  # a second comment for a shared line (`use: [...]`)
            lead(p.anchor[key], com.text)
    out: list[str] = []
    for i, line in enumerate(lines, 1):
        out.extend(before.get(i, ()))
        out.append(line + (f"  {trailing[i]}" if i in trailing else ""))
        out.extend(after.get(i, ()))
    out.extend(com.text for com in c.rest)
    return "\n".join(out) + "\n"
