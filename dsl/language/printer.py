"""The canonical text form of a :class:`dsl.language.ir.Spec` (``dsl fmt``, ``Spec.to_text``).

Layout: params, then uses, blocks, the model and the train section, separated
by one blank line; 4-space indentation; one statement per line; binary
operators between single spaces and only the parentheses that precedence and
associativity need; floats as ``repr`` so that they read back identically;
strings double-quoted. A blank line between two statements of a body is kept
(as one), so hand-made grouping survives formatting.

Comments are re-attached by position: a comment that ends the line of a
statement (or of a ``block ... {`` header, or of a closing ``}``) is printed
after it; any other comment is printed on its own line before the next
statement, header or ``}``; what follows everything goes at the end. Printing
is idempotent, and parsing the output gives the same IR (spans aside).
Pure Python.

YAML specs print the same way: their comments carry positions too. YAML has
no ``}``, so a comment belongs inside a block only when it is indented deeper
than the block's key. In YAML, lines such as ``nodes:`` separate statements,
so a gap there is not a line count but a blank line, which the YAML reader
records as a comment with empty text (a marker, never printed).
:func:`layout` exposes the placement so that the YAML writer
(``yaml_comments.decorate``) puts comments and blank lines in the same places.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from dsl.language.ir import (
    COMPARISONS,
    Assign,
    BinOp,
    BlockDef,
    Bool,
    Call,
    Comment,
    Ellipsis_,
    Index,
    Input,
    ListExpr,
    Name,
    Node,
    NoneLit,
    Num,
    Output,
    Param,
    ParamDecl,
    Repeat,
    ShapeSpec,
    Slice,
    Spec,
    Str,
    TrainSection,
    UnaryOp,
    Use,
    Wildcard,
)

__all__ = [
    "Layout",
    "dim_to_text",
    "expr_to_text",
    "layout",
    "shape_to_text",
    "to_text",
]

INDENT = "    "

# --------------------------------------------------------------------------- expressions

_BINARY_PREC = {"+": 1, "-": 1, "*": 2, "/": 2, "//": 2, "%": 2, "@": 2, "**": 4,
                "<": 0, "<=": 0, ">": 0, ">=": 0, "==": 0, "!=": 0}
_UNARY_PREC = 3
_ATOM_PREC = 5


def _prec(e: object) -> int:
    if isinstance(e, BinOp):
        return _BINARY_PREC[e.op]
    if isinstance(e, UnaryOp):
        return _UNARY_PREC
    if isinstance(e, Num) and _num(e.value).startswith("-"):
        return _UNARY_PREC  # prints with a leading minus, so it binds like -x
    return _ATOM_PREC


def _wrap(e: object, needed: bool) -> str:
    text = expr_to_text(e)
    return f"({text})" if needed else text


def _num(value: int | float) -> str:
    if isinstance(value, bool):  # bool is an int subclass; never expected here
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):  # no literal for infinity: the smallest one that overflows
        return "1e999" if value > 0 else "-1e999"
    return _float_spelling(value)


def _float_spelling(value: float) -> str:
    """The shortest exact spelling, preferring ``5e-4`` over ``0.0005`` (as researchers
    write learning rates and weight decays) but ``0.003`` over ``3e-3`` and ``100.0``
    over ``1e2``."""
    plain = repr(value)
    if "e" in plain:  # 1e-05 -> 1e-5, 1e+20 -> 1e20
        mantissa, _, exponent = plain.partition("e")
        return f"{mantissa}e{int(exponent)}"
    if value == 0 or abs(value) >= 1:
        return plain
    for digits in range(17):
        mantissa, _, exponent = f"{value:.{digits}e}".partition("e")
        candidate = f"{mantissa}e{int(exponent)}"
        if float(candidate) == value:
            return candidate if len(candidate) <= len(plain) - 2 else plain
    return plain


_STRING_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}


def quote(value: str) -> str:
    """A double-quoted literal that the text front end reads back as ``value``."""
    return '"' + "".join(_STRING_ESCAPES.get(ch, ch) for ch in value) + '"'


def expr_to_text(e: object) -> str:
    """One expression in canonical form: ``GAT(x, edge_index, out=hidden * 2)``."""
    if isinstance(e, Num):
        return _num(e.value)
    if isinstance(e, Str):
        return quote(e.value)
    if isinstance(e, Bool):
        return "true" if e.value else "false"
    if isinstance(e, NoneLit):
        return "null"
    if isinstance(e, Name):
        return e.id
    if isinstance(e, UnaryOp):
        return e.op + _wrap(e.operand, _prec(e.operand) < _UNARY_PREC)
    if isinstance(e, BinOp):
        return _binop(e)
    if isinstance(e, Call):
        args = [expr_to_text(a) for a in e.args]
        args += [f"{k.name}={expr_to_text(k.value)}" for k in e.kwargs]
        return f"{e.func}({', '.join(args)})"
    if isinstance(e, ListExpr):
        return "[" + ", ".join(expr_to_text(i) for i in e.items) + "]"
    if isinstance(e, Index):
        items = ", ".join(subscript_text(i) for i in e.items)
        return f"{_wrap(e.value, _prec(e.value) < _ATOM_PREC)}[{items}]"
    if isinstance(e, Wildcard | Ellipsis_):
        return dim_to_text(e)
    raise TypeError(f"not an expression: {type(e).__name__}")


def subscript_text(item: object) -> str:
    """One item of a subscript as written: ``:T``, ``0``, ``...``."""
    if isinstance(item, Slice):
        parts = ["" if p is None else expr_to_text(p) for p in (item.start, item.stop)]
        text = ":".join(parts)
        return text + (f":{expr_to_text(item.step)}" if item.step is not None else "")
    return expr_to_text(item)


def _binop(e: BinOp) -> str:
    if e.op == "**":
        # Right-associative, and its left operand must be an atom (-2**2 is -(2**2)).
        left = _wrap(e.left, _prec(e.left) < _ATOM_PREC)
        right = _wrap(e.right, _prec(e.right) < _UNARY_PREC)
    elif e.op in COMPARISONS:  # not chained: neither side is a comparison
        left = _wrap(e.left, _prec(e.left) <= 0)
        right = _wrap(e.right, _prec(e.right) <= 0)
    else:
        p = _BINARY_PREC[e.op]
        left = _wrap(e.left, _prec(e.left) < p)
        right = _wrap(e.right, _prec(e.right) <= p)  # left-associative
    return f"{left} {e.op} {right}"


def dim_to_text(d: object) -> str:
    """One shape item: ``N``, ``64``, ``_``, ``...`` or ``hidden * heads``."""
    if isinstance(d, Wildcard):
        return "_"
    if isinstance(d, Ellipsis_):
        return "..."
    return expr_to_text(d)


def shape_to_text(shape: ShapeSpec) -> str:
    return "[" + ", ".join(dim_to_text(d) for d in shape.dims) + "]"


# --------------------------------------------------------------------------- comments

_Pos = tuple[int, int]
_Key = tuple[str, int]  # ("n" | "h" | "c", id(node)): a node, a header, a closer


@dataclass
class _Unit:
    key: _Key
    start: _Pos
    end: _Pos  # for a header: its start, so that "after it on its line" is trailing
    last_line: int = 0  # for a closer: the last line of its body


@dataclass
class _Comments:
    """Comments assigned to the lines the printer writes."""

    leading: dict[_Key, list[Comment]] = field(default_factory=dict)
    trailing: dict[_Key, Comment] = field(default_factory=dict)
    first_line: dict[_Key, int] = field(default_factory=dict)  # incl. leading comments
    end_line: dict[_Key, int] = field(default_factory=dict)
    rest: list[Comment] = field(default_factory=list)
    blank_lines: list[int] = field(default_factory=list)  # YAML: the source's blank lines


def _known(node: Node) -> bool:
    return node.span.line > 0


def _start(node: Node) -> _Pos:
    return node.span.line, node.span.col


def _end(node: Node) -> _Pos:
    return node.span.end_line, node.span.end_col


def _body_units(owner: Node, body: Iterable[Node]) -> Iterable[_Unit]:
    last = owner.span.line
    if _known(owner):
        yield _Unit(("h", id(owner)), _start(owner), _start(owner))
    for stmt in body:
        if isinstance(stmt, Repeat):
            for u in _body_units(stmt, stmt.body):
                last = max(last, u.last_line or u.end[0])
                yield u
        elif _known(stmt):
            last = max(last, stmt.span.end_line)
            yield _Unit(("n", id(stmt)), _start(stmt), _end(stmt))
    if _known(owner):
        close = (owner.span.end_line, max(owner.span.end_col - 1, 1))
        yield _Unit(("c", id(owner)), close, close, last)


def _units(spec: Spec) -> list[_Unit]:
    units: list[_Unit] = []
    for node in (*spec.params, *spec.uses):
        if _known(node):
            units.append(_Unit(("n", id(node)), _start(node), _end(node)))
    for block in (*spec.blocks, *([spec.model] if spec.model else [])):
        units.extend(_body_units(block, block.body))
    if spec.train is not None:
        units.extend(_body_units(spec.train, spec.train.entries))
    units.sort(key=lambda u: u.start)
    return units


def _closer_cols(spec: Spec) -> dict[_Key, int]:
    """YAML has no ``}``: a comment belongs inside a block (before its closer)
    only when it is indented deeper than the block's key. The column of that key,
    per closer; top-level sections have theirs in column 1."""
    cols: dict[_Key, int] = {}

    def body(stmts: Iterable[object]) -> None:
        for s in stmts:
            if isinstance(s, Repeat):
                cols[("c", id(s))] = max(s.span.col - 2, 1)  # the `- ` before `repeat:`
                body(s.body)

    for b in spec.blocks:
        cols[("c", id(b))] = b.span.col
        body(b.body)
    if spec.model is not None:
        cols[("c", id(spec.model))] = 1
        body(spec.model.body)
    if spec.train is not None:
        cols[("c", id(spec.train))] = 1
    return cols


def _assign_comments(spec: Spec) -> _Comments:
    """Give every comment to a unit: the one it trails on the same line, else the
    first unit (in source order) that ends after it, else the end of the file.
    Indexed by line and by a running maximum of ends, so that it stays fast on
    files with many thousands of statements and comments."""
    out = _Comments()
    units = _units(spec)
    by_end_line: dict[int, list[_Unit]] = {}
    reach: list[_Pos] = []  # reach[i]: the largest end among units[: i + 1]
    for u in units:
        out.first_line[u.key] = u.start[0]
        out.end_line[u.key] = u.end[0]
        by_end_line.setdefault(u.end[0], []).append(u)
        reach.append(max(reach[-1], u.end) if reach else u.end)
    # YAML closers sit where the next key starts: never the owner of a comment on that line.
    closer_cols = _closer_cols(spec) if spec.format == "yaml" else {}
    if spec.format == "yaml":  # no `}` line: a block ends where its body does
        for u in units:
            if u.key[0] == "c":
                out.end_line[u.key] = u.last_line
    for c in sorted(spec.comments, key=lambda c: (c.span.line, c.span.col)):
        where: _Pos = (c.span.line, c.span.col)
        if not c.text:  # a blank-line marker of the YAML reader
            out.blank_lines.append(c.span.line)
            continue
        if c.span.line <= 0:
            out.rest.append(c)
            continue
        # After something on the same line: that thing's trailing comment.
        before = [
            u for u in by_end_line.get(where[0], ()) if u.end <= where and u.key not in closer_cols
        ]
        if before:
            owner = max(before, key=lambda u: u.end)
            if owner.key not in out.trailing:
                out.trailing[owner.key] = c
                continue
        nxt = None
        for i in range(
            bisect.bisect_right(reach, where), len(units)
        ):  # the first whose end is past `where`
            u = units[i]
            if u.end > where and c.span.col > closer_cols.get(u.key, 0):
                nxt = u
                break
        if nxt is None:
            out.rest.append(c)
        else:
            out.leading.setdefault(nxt.key, []).append(c)
            out.first_line[nxt.key] = min(out.first_line[nxt.key], where[0])
    return out


# --------------------------------------------------------------------------- layout


class _Writer:
    def __init__(self, comments: _Comments, blank_lines: list[int] | None = None):
        self.c = comments
        self.lines: list[str] = []
        self.blank_lines = blank_lines  # YAML: where the source had blank lines
        self.gapped: set[_Key] = set()  # keys printed after a blank line

    def emit(
        self,
        key: _Key,
        depth: int,
        text: str,
        prev: _Key | None = None,
        comment_depth: int | None = None,
    ) -> None:
        """Write one line with its comments; a blank line first where the source
        had one between ``prev`` and this line."""
        if prev is not None and self._gap(prev, key):
            self.lines.append("")
            self.gapped.add(key)
        pad = INDENT * (depth if comment_depth is None else comment_depth)
        for com in self.c.leading.get(key, ()):
            self.lines.append(pad + com.text)
        trailing = self.c.trailing.get(key)
        self.lines.append(INDENT * depth + text + (f"  {trailing.text}" if trailing else ""))

    def _gap(self, prev: _Key, key: _Key) -> bool:
        end = self.c.end_line.get(prev)
        first = self.c.first_line.get(key)
        if end is None or first is None:
            return False
        if self.blank_lines is not None:  # YAML: key lines such as `nodes:` are no gap
            i = bisect.bisect_right(self.blank_lines, end)
            return i < len(self.blank_lines) and self.blank_lines[i] < first
        return first - end > 1

    def blank(self) -> None:
        if self.lines and self.lines[-1] != "":
            self.lines.append("")


def _params_text(params: tuple[ParamDecl, ...]) -> str:
    parts = []
    for p in params:
        text = p.name
        if p.type is not None:
            text += f": {p.type}"
        if p.default is not None:
            text += f" = {expr_to_text(p.default)}"
        parts.append(text)
    return f"({', '.join(parts)})" if parts else ""


def _tensor_decl(s: Input | Output) -> str:
    word = "input" if isinstance(s, Input) else "output"
    text = f"{word} {s.name}"
    if s.shape is not None:
        text += f": {shape_to_text(s.shape)}"
        if s.dtype is not None:
            text += f" {s.dtype}"
    return text


def _write_body(w: _Writer, owner: Node, body: Iterable[object], depth: int) -> None:
    prev: _Key | None = None  # no blank line right after a header
    for stmt in body:
        key: _Key = ("n", id(stmt))
        if isinstance(stmt, Repeat):
            var = f" as {stmt.var}" if stmt.var is not None else ""
            key = ("h", id(stmt))
            w.emit(key, depth, f"repeat {expr_to_text(stmt.count)}{var} {{", prev)
            _write_body(w, stmt, stmt.body, depth + 1)
            key = ("c", id(stmt))
        elif isinstance(stmt, Input | Output):
            w.emit(key, depth, _tensor_decl(stmt), prev)
        elif isinstance(stmt, Assign):
            targets = ", ".join(t.name for t in stmt.targets)
            w.emit(key, depth, f"{targets} = {expr_to_text(stmt.value)}", prev)
        else:
            raise TypeError(f"not a statement: {type(stmt).__name__}")
        prev = key
    w.emit(("c", id(owner)), depth - 1, "}", comment_depth=depth)


def _write_block(w: _Writer, b: BlockDef) -> None:
    word = "model" if b.is_model else "block"
    w.emit(("h", id(b)), 0, f"{word} {b.name}{_params_text(b.params)} {{")
    _write_body(w, b, b.body, 1)


def _write_train(w: _Writer, t: TrainSection) -> None:
    w.emit(("h", id(t)), 0, "train {")
    width = max((len(e.key) for e in t.entries), default=0)
    prev: _Key | None = None
    for e in t.entries:
        key: _Key = ("n", id(e))
        w.emit(key, 1, f"{e.key.ljust(width)} = {expr_to_text(e.value)}", prev)
        prev = key
    w.emit(("c", id(t)), 0, "}", comment_depth=1)


@dataclass
class Layout:
    """The canonical text and the decisions behind it, which the YAML writer
    reuses to put the same comments and blank lines in the same places."""

    text: str
    comments: _Comments
    gapped: set[_Key]


def write(spec: Spec) -> str:
    """The format registry's entry point (:mod:`dsl.language.formats`)."""
    return to_text(spec)


def to_text(spec: Spec) -> str:
    """The canonical text of a spec; comments and blank lines between
    statements kept where the spans say."""
    return layout(spec).text


def layout(spec: Spec) -> Layout:
    """:func:`to_text` with the comment placement and blank lines it chose."""
    comments = _assign_comments(spec)
    blanks = sorted(comments.blank_lines) if spec.format == "yaml" else None
    w = _Writer(comments, blanks)
    prev: _Key | None = None
    for group in (spec.params, spec.uses):
        for node in group:
            key: _Key = ("n", id(node))
            if isinstance(node, Param):
                text = f"param {node.name} = {expr_to_text(node.value)}"
            else:
                assert isinstance(node, Use)
                text = f"use {quote(node.path)}"
            w.emit(key, 0, text, prev)
            prev = key
        w.blank()
        prev = None
    for b in spec.blocks:
        _write_block(w, b)
        w.blank()
    if spec.model is not None:
        _write_block(w, spec.model)
        w.blank()
    if spec.train is not None:
        _write_train(w, spec.train)
        w.blank()
    for com in w.c.rest:
        w.lines.append(com.text)
    while w.lines and w.lines[-1] == "":
        w.lines.pop()
    text = "\n".join(w.lines) + "\n" if w.lines else ""
    return Layout(text, w.c, w.gapped)
