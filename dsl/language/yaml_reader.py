"""The YAML front end: YAML text -> :class:`~dsl.language.ir.Spec` (``parse_yaml``).

The YAML form is the same IR as the text language (DESIGN §3)::

    params: {hidden: 16}
    use: ["other.yaml"]
    blocks:
      Expert:
        args: {dim: {type: int}, width: 64}
        inputs: {x: {shape: ["...", dim]}}
        nodes: [{id: y, op: Linear, in: [x], with: {out: "${dim}"}}]
        outputs: {y: {}}
    model:
      name: Classifier
      args: {classes: 10}
      inputs: {x: {shape: [B, 64], dtype: float}}
      nodes:
        - {id: h, op: Linear, in: [x], with: {out: "${hidden}"}}
        - {id: h, expr: "relu(h)"}
        - {repeat: 2, as: i, nodes: [...]}
        - {input: y, shape: [B]}          # an input/output where the body needs it
      outputs: {logits: {shape: [B, "${classes}"]}}
    train: {data: "digits(batch=64)", loss: "cross_entropy(logits, y)", epochs: 10}

Loading is safe by construction: the document is *composed* (``yaml.compose``
with the safe loader, which builds plain nodes and never constructs objects)
and converted node by node here, so every IR node keeps the line and column
it came from. Explicit tags are refused, aliases are counted as they are
expanded (an alias bomb stops at ``MAX_NODES`` visits) and nesting is bounded.

Plain (unquoted) scalars are read with the YAML 1.2 core schema: ``5e-4`` is a
number and ``on``/``yes`` are strings, unlike PyYAML's YAML 1.1 defaults.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Iterator, Sequence
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from dsl.language.diagnostics import NO_SPAN, Diagnostic, Span, did_you_mean
from dsl.language.errors import SpecError
from dsl.language.ir import (
    DTYPES,
    Assign,
    BlockDef,
    Bool,
    Call,
    Comment,
    DimExpr,
    Expr,
    Input,
    Keyword,
    ListExpr,
    NoneLit,
    Num,
    Output,
    Param,
    ParamDecl,
    Repeat,
    ShapeSpec,
    Spec,
    Stmt,
    Str,
    Target,
    TensorDecl,
    TrainEntry,
    TrainSection,
    UnaryOp,
    Use,
    Wildcard,
)
from dsl.language.reserved import RESERVED_WORDS

MAX_NODES = 100_000  # YAML nodes visited, aliases expanded: stops alias bombs
MAX_DEPTH = 64  # nesting of lists, block values and repeats
PARAM_TYPES = ("int", "float", "bool", "str")

TOP_KEYS = ("params", "use", "blocks", "model", "train")
BODY_KEYS = ("args", "inputs", "nodes", "outputs")
MODEL_KEYS = ("name", *BODY_KEYS)
ASSIGN_KEYS = ("id", "op", "in", "with", "expr")
REPEAT_KEYS = ("repeat", "as", "nodes")
INPUT_KEYS = ("input", "shape", "dtype")
OUTPUT_KEYS = ("output", "shape")
NODE_KEYS = tuple(dict.fromkeys(ASSIGN_KEYS + REPEAT_KEYS + INPUT_KEYS + OUTPUT_KEYS))

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Words the text language reserves: a name spelled like one could not be printed back.
RESERVED = RESERVED_WORDS

_TAG = "tag:yaml.org,2002:"
_WRAPPED = re.compile(r"\$\{(.*)\}\Z", re.S)


def check_identifier(name: str) -> str | None:
    """Why ``name`` cannot name a tensor, param or block, or None when it can."""
    if not IDENTIFIER.match(name):
        return f"`{name}` is not an identifier (letters, digits and `_`, not starting with a digit)"
    if name in RESERVED:
        return f"`{name}` is a reserved word"
    return None


# --------------------------------------------------------------------------- scalars

_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_TRUES = frozenset({"true", "True", "TRUE"})
_FALSES = frozenset({"false", "False", "FALSE"})
_INT = re.compile(r"[-+]?[0-9]+\Z")
_HEX = re.compile(r"0x[0-9a-fA-F]+\Z")
_OCT = re.compile(r"0o[0-7]+\Z")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?\Z")
_SPECIAL_FLOATS = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}


def plain_scalar(text: str) -> Any:
    """The value of an unquoted scalar under the YAML 1.2 core schema."""
    if text in _NULLS:
        return None
    if text in _TRUES:
        return True
    if text in _FALSES:
        return False
    if _INT.match(text):
        return int(text)
    if _HEX.match(text):
        return int(text, 16)
    if _OCT.match(text):
        return int(text[2:], 8)
    if _FLOAT.match(text):
        return float(text)
    if text.lower() in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[text.lower()]
    return text


# --------------------------------------------------------------------------- reader


class _Abort(Exception):
    """Stop converting: a limit was hit (the diagnostic is already recorded)."""


class _Reader:
    """Converts composed YAML nodes to IR, collecting every problem it finds."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.diags: list[Diagnostic] = []
        self.visits = 0
        self._resolver = yaml.resolver.Resolver()

    # ----------------------------------------------------------------- plumbing

    def span(self, node: Node, end: Node | None = None) -> Span:
        last = end if end is not None else node
        return Span(
            file=self.file,
            line=node.start_mark.line + 1,
            col=node.start_mark.column + 1,
            end_line=last.end_mark.line + 1,
            end_col=last.end_mark.column + 1,
        )

    def error(self, node: Node | Span, message: str, label: str = "", help: str | None = None,
              code: str = "E0701") -> None:  # fmt: skip
        span = node if isinstance(node, Span) else self.span(node)
        self.diags.append(Diagnostic(code, message, span, label=label, help=help))

    def visit(self, node: Node, depth: int) -> bool:
        """Count a node (aliases re-count: that is what stops alias bombs); refuse
        explicit tags. False when the node must be skipped."""
        self.visits += 1
        if self.visits > MAX_NODES:
            self.error(node, f"the YAML expands to more than {MAX_NODES} nodes", code="E0801",
                       label="too many nodes (an alias bomb?)")  # fmt: skip
            raise _Abort
        if depth > MAX_DEPTH:
            self.error(node, f"the YAML is nested more than {MAX_DEPTH} levels deep", code="E0102",
                       label="nested too deeply")  # fmt: skip
            raise _Abort
        if node.tag != self._implicit_tag(node):
            self.error(node, f"YAML tags are not allowed (found `{node.tag.replace(_TAG, '!!')}`)",
                       label="remove this tag",
                       help="a spec is plain data: mappings, lists, strings, numbers")  # fmt: skip
            return False
        return True

    def _implicit_tag(self, node: Node) -> str:
        if isinstance(node, ScalarNode):
            plain = node.style is None
            return self._resolver.resolve(ScalarNode, node.value, (plain, not plain))
        return _TAG + ("seq" if isinstance(node, SequenceNode) else "map")

    def kind(self, node: Node, want: type, what: str) -> bool:
        if isinstance(node, want):
            return True
        words = {MappingNode: "a mapping", SequenceNode: "a list", ScalarNode: "a scalar"}
        self.error(node, f"{what} must be {words[want]}", label=f"expected {words[want]}, found {_describe(node)}")
        return False

    def items(self, node: Node, what: str, depth: int) -> Iterator[tuple[str, ScalarNode, Node]]:
        """The (key, key node, value node) pairs of a mapping; merge keys expanded,
        duplicate keys reported."""
        if not self.kind(node, MappingNode, what):
            return
        seen: dict[str, ScalarNode] = {}
        for key, knode, vnode in self._pairs(node, depth):
            if key in seen:
                self.error(knode, f"duplicate key `{key}` in {what}", label="defined again here")
                continue
            seen[key] = knode
            yield key, knode, vnode

    def _pairs(self, node: MappingNode, depth: int) -> Iterator[tuple[str, ScalarNode, Node]]:
        merged: list[tuple[str, ScalarNode, Node]] = []
        own: list[tuple[str, ScalarNode, Node]] = []
        for knode, vnode in node.value:
            if isinstance(knode, ScalarNode) and knode.tag == _TAG + "merge":
                merged.extend(self._merge(vnode, depth))
                continue
            if not self.visit(knode, depth):
                continue
            if not isinstance(knode, ScalarNode) or not isinstance(_scalar(knode), str):
                self.error(knode, "mapping keys must be names", label="not a name")
                continue
            own.append((knode.value, knode, vnode))
        # Explicit keys override merged ones, as in YAML's merge-key convention.
        own_keys = {k for k, _, _ in own}
        yield from [m for m in merged if m[0] not in own_keys]
        yield from own

    def _merge(self, vnode: Node, depth: int) -> list[tuple[str, ScalarNode, Node]]:
        sources = vnode.value if isinstance(vnode, SequenceNode) else [vnode]
        out: list[tuple[str, ScalarNode, Node]] = []
        for src in sources:
            if not self.visit(src, depth + 1):
                continue
            if not self.kind(src, MappingNode, "a merge key (`<<`) value"):
                continue
            have = {k for k, _, _ in out}
            out.extend(p for p in self._pairs(src, depth + 1) if p[0] not in have)
        return out

    def unknown(self, key: str, knode: Node, allowed: Sequence[str], where: str) -> None:
        self.error(knode, f"unknown key `{key}` in {where}", label="unknown key",
                   help=did_you_mean(key, allowed) or f"expected one of: {', '.join(allowed)}")  # fmt: skip

    def name(self, node: Node, what: str, code: str = "E0213") -> str | None:
        """An identifier from a scalar (a key or a value)."""
        if not isinstance(node, ScalarNode):
            self.error(node, f"{what} must be a name", label=f"found {_describe(node)}")
            return None
        text = node.value
        problem = check_identifier(text)
        if problem:
            self.error(node, f"invalid {what}: {problem}", label="not a valid name", code=code)
            return None
        return text

    # ----------------------------------------------------------------- expressions

    def _origin(self, node: ScalarNode, skip: int = 0) -> tuple[int, int]:
        """Line and column (1-based) of character ``skip`` of a scalar's text.
        Exact for one-line scalars; multi-line ones point at the scalar start."""
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
        if node.start_mark.line != node.end_mark.line or node.style in ("|", ">"):
            return line, col
        return line, col + skip + (1 if node.style in ("'", '"') else 0)

    def expr_text(self, node: ScalarNode, text: str, skip: int = 0) -> Expr:
        from dsl.language.text import parse_expr

        line, col = self._origin(node, skip)
        try:
            return parse_expr(text, self.file, line, col)
        except SpecError as exc:
            self.diags.extend(exc.diagnostics)
            return NoneLit(span=self.span(node))

    def unwrap(self, node: ScalarNode) -> tuple[str, int] | None:
        """The text inside ``${...}`` and its offset, or None when not wrapped.
        A string that mixes text and ``${...}`` is an error (reported here)."""
        text = node.value
        m = _WRAPPED.match(text)
        if m:  # the inner text may itself hold "${" inside a string literal
            return m.group(1), 2
        if "${" in text:
            self.error(node, "`${...}` must be the whole string", label="mixes text and `${...}`",
                       help='write the whole value as one expression, e.g. "${a * 2}"')  # fmt: skip
            return "", -1
        return None

    def string_value(self, node: ScalarNode) -> Expr:
        """A string in a hyperparameter position: ``${expr}`` or a string literal."""
        inner = self.unwrap(node)
        if inner is None:
            return Str(value=node.value, span=self.span(node))
        if inner[1] < 0:
            return NoneLit(span=self.span(node))
        return self.expr_text(node, inner[0], inner[1])

    def literal(self, node: ScalarNode, value: Any) -> Expr:
        return literal_expr(value, self.span(node))

    def value(self, node: Node, depth: int) -> Expr:
        """A hyperparameter value (``with``, params, defaults)."""
        if not self.visit(node, depth):
            return NoneLit(span=self.span(node))
        if isinstance(node, ScalarNode):
            v = _scalar(node)
            return self.string_value(node) if isinstance(v, str) else self.literal(node, v)
        if isinstance(node, SequenceNode):
            items = tuple(self.value(n, depth + 1) for n in node.value)
            return ListExpr(items=items, span=self.span(node))
        return self.block_value(node, depth)

    def block_value(self, node: MappingNode, depth: int) -> Expr:
        """``{op: Expert, with: {...}}``: a block value (a call without tensors)."""
        func, func_span, kwargs = None, NO_SPAN, ()
        for key, knode, vnode in self.items(node, "a block value", depth):
            if key == "op":
                func, func_span = self._op(vnode, depth), self.span(vnode)
            elif key == "with":
                kwargs = self.kwargs(vnode, depth + 1)
            else:
                self.unknown(key, knode, ("op", "with"), "a block value")
        if func is None:
            self.error(node, "a block value needs `op`", label="no `op` here",
                       help="write {op: Name, with: {...}}")  # fmt: skip
            func = "_"
        return Call(func=func, func_span=func_span, kwargs=kwargs, span=self.span(node))

    def _op(self, node: Node, depth: int) -> str | None:
        if not self.visit(node, depth + 1):
            return None
        return self.name(node, "`op`")

    def kwargs(self, node: Node, depth: int) -> tuple[Keyword, ...]:
        out = []
        for key, knode, vnode in self.items(node, "`with`", depth):
            if check_identifier(key):
                self.error(knode, f"invalid argument name: {check_identifier(key)}", code="E0213")
                continue
            value = self.value(vnode, depth + 1)
            out.append(Keyword(name=key, value=value, span=self.span(knode, vnode)))
        return tuple(out)

    def tensor_arg(self, node: Node, depth: int) -> Expr:
        """An ``in`` item: a text expression (usually a name), a number or a list."""
        return self.list_or_expression(node, depth, "an `in` item must be a name or an expression",
                                       "block values go in `with`")  # fmt: skip

    def list_or_expression(self, node: Node, depth: int, what: str, help: str) -> Expr:
        """A scalar text expression, or a (nested) list of them; a mapping is an error."""
        if not self.visit(node, depth):
            return NoneLit(span=self.span(node))
        if isinstance(node, SequenceNode):
            items = tuple(self.list_or_expression(n, depth + 1, what, help) for n in node.value)
            return ListExpr(items=items, span=self.span(node))
        if isinstance(node, MappingNode):
            self.error(node, what, label="found a mapping", help=help)
            return NoneLit(span=self.span(node))
        return self.expression(node)

    def expression(self, node: ScalarNode) -> Expr:
        """A scalar holding a text expression (``${...}`` optional); numbers,
        booleans and null stay literals."""
        v = _scalar(node)
        if not isinstance(v, str):
            return self.literal(node, v)
        inner = self.unwrap(node)
        if inner is None:
            return self.expr_text(node, node.value)
        if inner[1] < 0:
            return NoneLit(span=self.span(node))
        return self.expr_text(node, inner[0], inner[1])

    # ----------------------------------------------------------------- shapes

    def shape(self, node: Node, depth: int) -> ShapeSpec | None:
        if not self.visit(node, depth):
            return None
        if isinstance(node, ScalarNode) and _scalar(node) is None:
            return None
        if not self.kind(node, SequenceNode, "`shape`"):
            return None
        dims = tuple(self.dim(n, depth + 1) for n in node.value)
        return ShapeSpec(dims=dims, span=self.span(node))

    def dim(self, node: Node, depth: int) -> DimExpr:
        from dsl.language.text import parse_dim

        if not self.visit(node, depth) or not self.kind(node, ScalarNode, "a dimension"):
            return Wildcard(span=self.span(node))
        v = _scalar(node)
        if isinstance(v, int) and not isinstance(v, bool):
            return literal_expr(v, self.span(node))  # type: ignore[return-value]
        if not isinstance(v, str):
            self.error(node, "a dimension must be an integer, a name or an expression",
                       label=f"found {_describe(node)}")  # fmt: skip
            return Wildcard(span=self.span(node))
        inner = self.unwrap(node) or (node.value, 0)
        if inner[1] < 0:
            return Wildcard(span=self.span(node))
        line, col = self._origin(node, inner[1])
        try:
            return parse_dim(inner[0], self.file, line, col)
        except SpecError as exc:
            self.diags.extend(exc.diagnostics)
            return Wildcard(span=self.span(node))

    def dtype(self, node: Node, depth: int) -> str | None:
        if not self.visit(node, depth) or not self.kind(node, ScalarNode, "`dtype`"):
            return None
        if _scalar(node) is None:
            return None
        if node.value not in DTYPES:
            self.error(node, f"unknown dtype `{node.value}`", label="unknown dtype",
                       help=did_you_mean(node.value, DTYPES) or f"use one of: {', '.join(DTYPES)}")  # fmt: skip
            return None
        return node.value

    # ----------------------------------------------------------------- definitions

    def tensor_decls(self, node: Node, cls: type[TensorDecl], depth: int) -> list[TensorDecl]:
        """``inputs:``/``outputs:``: name -> {shape, dtype} (``{}``/null: no shape)."""
        what = "`inputs`" if cls is Input else "`outputs`"
        allowed = ("shape", "dtype") if cls is Input else ("shape",)
        out: list[TensorDecl] = []
        for key, knode, vnode in self.items(node, what, depth):
            name = self.name(knode, "tensor name")
            fields: dict[str, Any] = {}
            if isinstance(vnode, SequenceNode):  # shorthand: `x: [B, 64]`
                fields["shape"] = self.shape(vnode, depth + 1)
            elif self.visit(vnode, depth + 1) and not (isinstance(vnode, ScalarNode) and _scalar(vnode) is None):
                for k, kn, vn in self.items(vnode, f"`{key}`", depth + 1):
                    if k == "shape":
                        fields["shape"] = self.shape(vn, depth + 2)
                    elif k == "dtype" and cls is Input:
                        fields["dtype"] = self.dtype(vn, depth + 2)
                    else:
                        self.unknown(k, kn, allowed, f"{what[:-2]}` `{key}`")
            if name is not None:
                out.append(cls(name=name, span=self.span(knode, vnode), **fields))
        return out

    def param_decls(self, node: Node, depth: int) -> list[ParamDecl]:
        """``args:``: name -> default (type inferred) or {type, default}."""
        out = []
        for _key, knode, vnode in self.items(node, "`args`", depth):
            name = self.name(knode, "argument name")
            decl = self.param_decl(vnode, depth + 1)
            if name is not None and decl is not None:
                type_, default = decl
                out.append(ParamDecl(name=name, type=type_, default=default, span=self.span(knode, vnode)))
        return out

    def param_decl(self, node: Node, depth: int) -> tuple[str | None, Expr | None] | None:
        if not self.visit(node, depth):
            return None
        if isinstance(node, MappingNode):
            type_, default = None, None
            for k, kn, vn in self.items(node, "an argument", depth):
                if k == "type":
                    type_ = self.param_type(vn, depth + 1)
                elif k == "default":
                    default = self.value(vn, depth + 1)
                else:
                    self.unknown(k, kn, ("type", "default"), "an argument")
            return type_, default
        if isinstance(node, ScalarNode) and _scalar(node) is None:
            return None, None
        default = self.value(node, depth)
        return infer_type(default), default

    def param_type(self, node: Node, depth: int) -> str | None:
        if not self.visit(node, depth) or not self.kind(node, ScalarNode, "`type`"):
            return None
        if node.value not in PARAM_TYPES:
            self.error(node, f"unknown argument type `{node.value}`", label="unknown type",
                       help=did_you_mean(node.value, PARAM_TYPES) or f"use one of: {', '.join(PARAM_TYPES)}")  # fmt: skip
            return None
        return node.value

    def body(self, node: Node, depth: int, where: str, name_key: bool) -> tuple[dict[str, Any], list[Stmt]]:
        """A model or block mapping: returns (header fields, statements)."""
        allowed = MODEL_KEYS if name_key else BODY_KEYS
        head: dict[str, Any] = {"params": ()}
        inputs: list[Stmt] = []
        nodes: list[Stmt] = []
        outputs: list[Stmt] = []
        for key, knode, vnode in self.items(node, where, depth):
            if key == "name" and name_key:
                if self.visit(vnode, depth + 1):
                    head["name"] = self.name(vnode, "model name")
                    head["name_span"] = self.span(vnode)
            elif key == "args":
                head["params"] = tuple(self.param_decls(vnode, depth + 1))
            elif key == "inputs":
                inputs = list(self.tensor_decls(vnode, Input, depth + 1))
            elif key == "outputs":
                outputs = list(self.tensor_decls(vnode, Output, depth + 1))
            elif key == "nodes":
                nodes = self.statements(vnode, depth + 1)
            else:
                self.unknown(key, knode, allowed, where)
        return head, inputs + nodes + outputs

    # ----------------------------------------------------------------- statements

    def statements(self, node: Node, depth: int) -> list[Stmt]:
        if not self.visit(node, depth) or not self.kind(node, SequenceNode, "`nodes`"):
            return []
        out: list[Stmt] = []
        for item in node.value:
            stmt = self.statement(item, depth + 1)
            if stmt is not None:
                out.append(stmt)
        return out

    def statement(self, node: Node, depth: int) -> Stmt | None:
        if not self.visit(node, depth) or not self.kind(node, MappingNode, "a node"):
            return None
        pairs = list(self.items(node, "a node", depth))
        keys = {k for k, _, _ in pairs}
        if "repeat" in keys:
            return self.repeat(node, pairs, depth)
        if "input" in keys or "output" in keys:
            return self.inline_decl(node, pairs, depth)
        return self.assign(node, pairs, depth)

    def _check(self, pairs: list, allowed: Sequence[str], where: str) -> dict[str, tuple[ScalarNode, Node]]:
        found = {}
        for key, knode, vnode in pairs:
            if key in allowed:
                found[key] = (knode, vnode)
            else:
                self.unknown(key, knode, allowed, where)
        return found

    def assign(self, node: MappingNode, pairs: list, depth: int) -> Stmt | None:
        f = self._check(pairs, ASSIGN_KEYS, "a node")
        targets = self.targets(f["id"][1], depth + 1) if "id" in f else None
        if "id" not in f:
            self.error(node, "a node needs an `id`", label="no `id` here",
                       help="write {id: name, op: Block, in: [...]} or {id: name, expr: \"...\"}")  # fmt: skip
        if ("op" in f) == ("expr" in f):
            self.error(node, "a node needs exactly one of `op` and `expr`",
                       label="both given" if "op" in f else "neither given")  # fmt: skip
            return None
        if "expr" in f:
            for extra in ("in", "with"):
                if extra in f:
                    self.error(f[extra][0], f"`{extra}` goes with `op`, not with `expr`", label="not used")
            value = self.expr_node(f["expr"][1], depth + 1)
        else:
            value = self.call(node, f, depth)
        if not targets:
            return None
        return Assign(targets=tuple(targets), value=value, span=self.span(node))

    def expr_node(self, node: Node, depth: int) -> Expr:
        if not self.visit(node, depth) or not self.kind(node, ScalarNode, "`expr`"):
            return NoneLit(span=self.span(node))
        return self.expression(node)

    def call(self, node: MappingNode, f: dict, depth: int) -> Expr:
        onode = f["op"][1]
        func = self._op(onode, depth) or "_"
        args: tuple[Expr, ...] = ()
        if "in" in f:
            inode = f["in"][1]
            if self.visit(inode, depth + 1):
                seq = inode.value if isinstance(inode, SequenceNode) else [inode]
                args = tuple(self.tensor_arg(n, depth + 2) for n in seq)
        kwargs = self.kwargs(f["with"][1], depth + 1) if "with" in f else ()
        return Call(func=func, func_span=self.span(onode), args=args, kwargs=kwargs, span=self.span(node))

    def targets(self, node: Node, depth: int) -> list[Target] | None:
        if not self.visit(node, depth):
            return None
        seq = node.value if isinstance(node, SequenceNode) else [node]
        out = []
        for n in seq:
            if isinstance(node, SequenceNode) and not self.visit(n, depth + 1):
                continue
            name = self.name(n, "`id`")
            if name is not None:
                out.append(Target(name=name, span=self.span(n)))
        if not seq:
            self.error(node, "`id` names no tensor", label="empty list")
        return out if len(out) == len(seq) else None

    def repeat(self, node: MappingNode, pairs: list, depth: int) -> Stmt | None:
        f = self._check(pairs, REPEAT_KEYS, "a repeat")
        cnode = f["repeat"][1]
        count: Expr = NoneLit(span=self.span(cnode))
        if self.visit(cnode, depth + 1) and self.kind(cnode, ScalarNode, "`repeat`"):
            count = self.expression(cnode)
        var = None
        if "as" in f and self.visit(f["as"][1], depth + 1):
            var = self.name(f["as"][1], "loop variable")
        if "nodes" not in f:
            self.error(node, "a repeat needs `nodes`", label="no `nodes` here")
        body = self.statements(f["nodes"][1], depth + 1) if "nodes" in f else []
        return Repeat(count=count, var=var, body=tuple(body), span=self.span(node))

    def inline_decl(self, node: MappingNode, pairs: list, depth: int) -> Stmt | None:
        is_input = any(k == "input" for k, _, _ in pairs)
        allowed = INPUT_KEYS if is_input else OUTPUT_KEYS
        f = self._check(pairs, allowed, "an input" if is_input else "an output")
        head = "input" if is_input else "output"
        if head not in f or not self.visit(f[head][1], depth + 1):
            return None
        name = self.name(f[head][1], "tensor name")
        shape = self.shape(f["shape"][1], depth + 1) if "shape" in f else None
        dtype = self.dtype(f["dtype"][1], depth + 1) if "dtype" in f else None
        if name is None:
            return None
        if is_input:
            return Input(name=name, shape=shape, dtype=dtype, span=self.span(node))
        return Output(name=name, shape=shape, span=self.span(node))

    # ----------------------------------------------------------------- top level

    def spec(self, root: Node | None, text: str) -> Spec:
        fields: dict[str, Any] = {}
        if root is None:
            return Spec(file=self.file, format="yaml")
        if not self.visit(root, 0):
            return Spec(file=self.file, format="yaml")
        for key, knode, vnode in self.items(root, "the spec", 0):
            if key == "params":
                fields["params"] = tuple(self.params(vnode, 1))
            elif key == "use":
                fields["uses"] = tuple(self.uses(vnode, 1))
            elif key == "blocks":
                fields["blocks"] = tuple(self.blocks(vnode, 1))
            elif key == "model":
                fields["model"] = self.model(vnode, 1, knode)
            elif key == "train":
                fields["train"] = self.train(vnode, 1)
            else:
                self.unknown(key, knode, TOP_KEYS, "the spec")
        return Spec(file=self.file, format="yaml", span=self.span(root), **fields)

    def params(self, node: Node, depth: int) -> list[Param]:
        out = []
        for _key, knode, vnode in self.items(node, "`params`", depth):
            name = self.name(knode, "param name")
            value = self.value(vnode, depth + 1)
            if name is not None:
                out.append(Param(name=name, value=value, span=self.span(knode, vnode)))
        return out

    def uses(self, node: Node, depth: int) -> list[Use]:
        if not self.visit(node, depth):
            return []
        seq = node.value if isinstance(node, SequenceNode) else [node]
        out = []
        for n in seq:
            if isinstance(node, SequenceNode) and not self.visit(n, depth + 1):
                continue
            if not isinstance(n, ScalarNode) or not isinstance(_scalar(n), str):
                self.error(n, "`use` takes file paths", label=f"found {_describe(n)}")
                continue
            out.append(Use(path=n.value, span=self.span(n)))
        return out

    def blocks(self, node: Node, depth: int) -> list[BlockDef]:
        out = []
        for key, knode, vnode in self.items(node, "`blocks`", depth):
            name = self.name(knode, "block name")
            if not self.visit(vnode, depth + 1):
                continue
            head, body = self.body(vnode, depth + 1, f"block `{key}`", name_key=False)
            if name is not None:
                out.append(BlockDef(name=name, name_span=self.span(knode), params=head["params"],
                                    body=tuple(body), span=self.span(knode, vnode)))  # fmt: skip
        return out

    def model(self, node: Node, depth: int, key: Node) -> BlockDef | None:
        if not self.visit(node, depth):
            return None
        head, body = self.body(node, depth, "`model`", name_key=True)
        if "name" not in head and isinstance(node, MappingNode):
            self.error(key, "`model` needs a `name`", label="no `name` in this mapping", help="add `name: MyModel`")
        if not head.get("name"):
            return None
        return BlockDef(name=head["name"], name_span=head["name_span"], params=head["params"],
                        body=tuple(body), is_model=True, span=self.span(node))  # fmt: skip

    def train(self, node: Node, depth: int) -> TrainSection | None:
        if not self.visit(node, depth):
            return None
        entries = []
        for key, knode, vnode in self.items(node, "`train`", depth):
            if check_identifier(key):
                self.error(knode, f"invalid train key: {check_identifier(key)}", code="E0213")
                continue
            value = self.train_value(vnode, depth + 1)
            entries.append(TrainEntry(key=key, key_span=self.span(knode), value=value,
                                      span=self.span(knode, vnode)))  # fmt: skip
        return TrainSection(entries=tuple(entries), span=self.span(node))

    def train_value(self, node: Node, depth: int) -> Expr:
        return self.list_or_expression(node, depth, "a train value must be an expression, a number or a list",
                                       'write calls as text, e.g. optimizer: "adam(lr=0.01)"')  # fmt: skip


def literal_expr(value: Any, span: Span = NO_SPAN) -> Expr:
    """A Python literal as IR, spelled as the text parser would: ``-1`` is
    ``UnaryOp("-", Num(1))`` so that every front end gives the same IR."""
    if value is None:
        return NoneLit(span=span)
    if isinstance(value, bool):
        return Bool(value=value, span=span)
    if isinstance(value, (int, float)) and value < 0:
        return UnaryOp(op="-", operand=Num(value=-value, span=span), span=span)
    return Num(value=value, span=span)


def _scalar(node: ScalarNode) -> Any:
    """A scalar's value: plain scalars by the core schema, quoted ones are strings."""
    return plain_scalar(node.value) if node.style is None else node.value


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    v = _scalar(node)
    return "null" if v is None else f"`{node.value}`"


def infer_type(default: Expr | None) -> str | None:
    if isinstance(default, Bool):
        return "bool"
    if isinstance(default, Num):
        return "int" if isinstance(default.value, int) else "float"
    if isinstance(default, Str):
        return "str"
    return None


def _syntax_error(exc: yaml.YAMLError, file: str) -> Diagnostic:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    span = NO_SPAN
    if mark is not None:
        span = Span(file=file, line=mark.line + 1, col=mark.column + 1, end_line=mark.line + 1,
                    end_col=mark.column + 2)  # fmt: skip
    context = getattr(exc, "context", None)
    d = Diagnostic("E0701", f"YAML syntax error: {problem}", span, label=problem)
    if context:
        d.note(context)
    return d


def _length_error(text: str, file: str) -> Diagnostic | None:
    """The text front end's size limits (file and line length), checked first."""
    from dsl.language.text import MAX_CHARS, MAX_LINE

    if len(text) > MAX_CHARS:
        return Diagnostic("E0102", f"file too long: {len(text):,} characters (the limit is {MAX_CHARS:,})",
                          Span(file=file, line=1, col=1, end_line=1, end_col=2), label="the file starts here")  # fmt: skip
    for number, line in enumerate(text.split("\n"), 1):
        if len(line) > MAX_LINE:
            span = Span(file=file, line=number, col=MAX_LINE + 1, end_line=number, end_col=MAX_LINE + 2)
            return Diagnostic("E0102", f"line too long: {len(line):,} characters (the limit is {MAX_LINE:,})", span,
                              label="the line is cut here")  # fmt: skip
    return None


def _flow_depth_error(text: str, file: str) -> Diagnostic | None:
    """Refuse deeply nested ``[[[...`` before PyYAML sees it: its scanner is
    quadratic in the flow nesting depth. Quotes and comments are skipped."""
    depth, quote, line, col = 0, "", 1, 0
    prev = "\n"
    for ch in text:
        col += 1
        if ch == "\n":
            line, col = line + 1, 0
            if quote == "#":
                quote = ""
        elif quote:
            if ch == quote and quote != "#":
                quote = ""
        elif ch in "'\"" and prev in " \t\n[{,:":
            quote = ch
        elif ch == "#" and prev in " \t\n":
            quote = "#"
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                span = Span(file=file, line=line, col=col, end_line=line, end_col=col + 1)
                return Diagnostic("E0102", f"the YAML is nested more than {MAX_DEPTH} levels deep", span,
                                  label="nested too deeply")  # fmt: skip
        elif ch in "]}":
            depth = max(depth - 1, 0)
        prev = ch
    return None


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [x for kv in node.value for x in kv]
    return []


def _mark_span(node: Node, file: str) -> Span:
    m = node.start_mark
    return Span(file=file, line=m.line + 1, col=m.column + 1, end_line=m.line + 1, end_col=m.column + 2)


def _expansion_error(root: Node | None, file: str) -> Diagnostic | None:
    """Refuse an alias bomb (or a recursive alias) before any conversion.

    The composed document is a graph in which an alias is the anchored node
    itself, so the size with aliases expanded is computed once per distinct node
    (memoised, iterative, capped at MAX_NODES + 1): linear in the text. The
    diagnostic points at the smallest node that alone expands past the limit,
    which is where the aliases multiply."""
    if root is None:
        return None
    cap = MAX_NODES + 1
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    culprit: Node | None = None
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            kids = _children(node)
            total = min(cap, 1 + sum(size[id(k)] for k in kids))
            size[key] = total
            if total == cap and culprit is None and all(size[id(k)] < cap for k in kids):
                culprit = node
            continue
        if key in size:
            continue
        if key in on_path:  # an alias inside its own anchor
            return Diagnostic("E0801", "recursive YAML alias: a node contains itself", _mark_span(node, file),
                              label="this anchored node is used inside itself")  # fmt: skip
        on_path.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in size)
    if size.get(id(root), 0) < cap:
        return None
    where = culprit if culprit is not None else root
    return Diagnostic("E0801", f"the YAML expands to more than {MAX_NODES} nodes", _mark_span(where, file),
                      label="this node alone expands past the limit (an alias bomb?)",
                      help="aliases (*name) copy what they point to; nest fewer of them")  # fmt: skip


class _TooDeep(Exception):
    def __init__(self, mark: yaml.Mark) -> None:
        super().__init__("too deep")
        self.mark = mark


class _DepthLimitedLoader(yaml.SafeLoader):
    """The safe loader, stopping as soon as nodes nest deeper than MAX_DEPTH:
    PyYAML's composer is recursive, and a deeply indented document is large
    (quadratic in its depth), so stopping early keeps rejection fast."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: object) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH + 1:  # the document's root is level 0 for _Reader.visit
                raise _TooDeep(self.peek_event().start_mark)
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._depth -= 1


def _deep_block_error(text: str, file: str) -> Diagnostic:
    """Where block-style nesting first goes deeper than MAX_DEPTH (PyYAML's
    composer is recursive; its event parser is not, so it can locate the spot)."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH + 1:  # the document's root is level 0 for _Reader.visit
                    m = event.start_mark
                    span = Span(file=file, line=m.line + 1, col=m.column + 1, end_line=m.line + 1,
                                end_col=m.column + 2)  # fmt: skip
                    return Diagnostic("E0102", f"the YAML is nested more than {MAX_DEPTH} levels deep", span,
                                      label="nested too deeply")  # fmt: skip
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError:
        pass
    return Diagnostic("E0102", f"the YAML is nested more than {MAX_DEPTH} levels deep", Span(file=file, line=1, col=1))


def parse_yaml(text: str, file: str = "<input>") -> Spec:
    """Parse a YAML spec into the IR; raise SpecError with every problem found."""
    reader = _Reader(file)
    too_deep = _length_error(text, file) or _flow_depth_error(text, file)
    if too_deep is not None:
        raise SpecError([too_deep], {file: text})
    try:
        root = yaml.compose(text, Loader=_DepthLimitedLoader)
    except _TooDeep as exc:
        span = Span(file=file, line=exc.mark.line + 1, col=exc.mark.column + 1, end_line=exc.mark.line + 1,
                    end_col=exc.mark.column + 2)  # fmt: skip
        d = Diagnostic("E0102", f"the YAML is nested more than {MAX_DEPTH} levels deep", span, label="nested too deeply")
        raise SpecError([d], {file: text}) from None
    except yaml.YAMLError as exc:
        raise SpecError([_syntax_error(exc, file)], {file: text}) from None
    except RecursionError:
        raise SpecError([_deep_block_error(text, file)], {file: text}) from None
    too_big = _expansion_error(root, file)
    if too_big is not None:
        raise SpecError([too_big], {file: text})
    try:
        spec = reader.spec(root, text)
    except _Abort:
        spec = None
    if reader.diags or spec is None:
        raise SpecError(reader.diags, {file: text})
    return spec.model_copy(update={"comments": extract_comments(text, file)})


def read(text: str, file: str = "<input>") -> Spec:
    """The format registry's entry point (:mod:`dsl.language.formats`)."""
    return parse_yaml(text, file)


# --------------------------------------------------------------------------- comments


def _token_ranges(text: str) -> tuple[list[int], list[int]]:
    """Start and end offsets of every token with an extent, sorted by start."""
    starts: list[int] = []
    ends: list[int] = []
    # libyaml when present: the same tokens, faster. It counts offsets from after
    # a byte-order mark, PyYAML from before it.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    shift = 1 if text.startswith("\ufeff") and loader is not yaml.SafeLoader else 0
    for tok in yaml.scan(text, Loader=loader):
        a, b = tok.start_mark.index + shift, tok.end_mark.index + shift
        if b > a:
            starts.append(a)
            ends.append(b)
    return starts, ends


def _inside(pos: int, starts: list[int], ends: list[int]) -> bool:
    i = bisect.bisect_right(starts, pos) - 1
    return i >= 0 and pos < ends[i]


def extract_comments(text: str, file: str = "<input>") -> tuple[Comment, ...]:
    """Every comment of a YAML document that PyYAML has already accepted, and a
    marker (a comment with empty text) for every blank line: in YAML, lines such
    as ``nodes:`` also sit between statements, so only these say where the
    author left a gap."""
    starts, ends = _token_ranges(text) if "#" in text else ([], [])
    out: list[Comment] = []
    offset = 0
    for lineno, line in enumerate(text.splitlines(keepends=True), 1):
        if not line.strip():
            out.append(
                Comment(
                    text="", span=Span(file=file, line=lineno, col=1, end_line=lineno, end_col=1)
                )
            )
        col = line.find("#")
        while col >= 0:
            pos = offset + col
            if (col == 0 or line[col - 1] in " \t") and not _inside(pos, starts, ends):
                body = line[col:].rstrip("\r\n").rstrip()
                span = Span(
                    file=file,
                    line=lineno,
                    col=col + 1,
                    end_line=lineno,
                    end_col=col + 1 + len(body),
                )
                out.append(Comment(text=body, span=span))
                break
            col = line.find("#", col + 1)
        offset += len(line)
    return tuple(out)


# --------------------------------------------------------------------------- writing



