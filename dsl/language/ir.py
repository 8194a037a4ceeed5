"""The IR: immutable pydantic models, one per concept, each with its source span.

All three front ends (text, YAML, the Python builder) produce a :class:`Spec`.
Expressions are shared by constants, tensor computations and the train section:
what a name means (param, tensor, block, data field) is decided later by the
resolver and checker, never by the front end.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from dsl.language import formats
from dsl.language.diagnostics import NO_SPAN, Span


class Node(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)
    span: Span = NO_SPAN

    def children(self) -> Iterator[Node]:
        """The nodes directly inside this one, in source order."""
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, Node):
                yield value
            elif isinstance(value, tuple):
                yield from (v for v in value if isinstance(v, Node))

    def walk(self) -> Iterator[Node]:
        """This node and every node inside it, depth first, in source order."""
        stack: list[Node] = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(list(node.children())))


# --------------------------------------------------------------------------- expressions


class Num(Node):
    kind: Literal["num"] = "num"
    value: int | float


class Str(Node):
    kind: Literal["str"] = "str"
    value: str


class Bool(Node):
    kind: Literal["bool"] = "bool"
    value: bool


class NoneLit(Node):
    kind: Literal["none"] = "none"


class Name(Node):
    kind: Literal["name"] = "name"
    id: str


class UnaryOp(Node):
    kind: Literal["unary"] = "unary"
    op: Literal["-", "+"]
    operand: Expr


COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")


class BinOp(Node):
    """Binary operator. On tensors ``+ - * / @`` broadcast as in torch and the
    comparisons give bool tensors; on constants ``+ - * / // % **`` are evaluated
    by the one constant evaluator (:mod:`dsl.language.constants`)."""

    kind: Literal["binop"] = "binop"
    op: Literal["+", "-", "*", "/", "//", "%", "**", "@", "<", "<=", ">", ">=", "==", "!="]
    left: Expr
    right: Expr


class Keyword(Node):
    name: str
    value: Expr


class Call(Node):
    """``func(args..., key=value...)``. With no positional arguments and a
    capitalised name it is a block value (a template or a shared instance)."""

    kind: Literal["call"] = "call"
    func: str
    func_span: Span = NO_SPAN
    args: tuple[Expr, ...] = ()
    kwargs: tuple[Keyword, ...] = ()

    def kwarg(self, name: str) -> Expr | None:
        for k in self.kwargs:
            if k.name == name:
                return k.value
        return None


class ListExpr(Node):
    kind: Literal["list"] = "list"
    items: tuple[Expr, ...] = ()


class Slice(Node):
    """``start:stop:step`` inside a subscript; a part left out is None."""

    kind: Literal["slice"] = "slice"
    start: Expr | None = None
    stop: Expr | None = None
    step: Expr | None = None


class Index(Node):
    """``value[item, ...]``: basic indexing as in torch. An item is an expression (one
    position), a :class:`Slice` or ``...`` (:class:`Ellipsis_`)."""

    kind: Literal["index"] = "index"
    value: Expr
    items: tuple[Subscript, ...] = ()


Expr = Annotated[
    Num | Str | Bool | NoneLit | Name | UnaryOp | BinOp | Call | ListExpr | Index,
    Field(discriminator="kind"),
]

# --------------------------------------------------------------------------- shapes


class Wildcard(Node):
    """``_``: any one dimension."""

    kind: Literal["wildcard"] = "wildcard"


class Ellipsis_(Node):
    """``...``: any number of leading dimensions."""

    kind: Literal["ellipsis"] = "ellipsis"


DimExpr = Annotated[
    Num | Name | BinOp | UnaryOp | Wildcard | Ellipsis_,
    Field(discriminator="kind"),
]

Subscript = Annotated[
    Num | Str | Bool | NoneLit | Name | UnaryOp | BinOp | Call | ListExpr | Index | Slice | Ellipsis_,
    Field(discriminator="kind"),
]


class ShapeSpec(Node):
    dims: tuple[DimExpr, ...] = ()


DTYPES = ("float", "long", "int", "bool")


class TensorDecl(Node):
    """``input name: [dims] dtype`` / ``output name: [dims]``."""

    name: str
    shape: ShapeSpec | None = None
    dtype: Literal["float", "long", "int", "bool"] | None = None


# --------------------------------------------------------------------------- statements


class Input(TensorDecl):
    kind: Literal["input"] = "input"


class Output(TensorDecl):
    kind: Literal["output"] = "output"


class Target(Node):
    name: str


class Assign(Node):
    """``a, b = expr``."""

    kind: Literal["assign"] = "assign"
    targets: tuple[Target, ...]
    value: Expr


class Repeat(Node):
    """``repeat n as i { ... }``: unrolled into n copies, each with its own weights."""

    kind: Literal["repeat"] = "repeat"
    count: Expr
    var: str | None = None
    body: tuple[Stmt, ...] = ()


Stmt = Annotated[Input | Output | Assign | Repeat, Field(discriminator="kind")]


# --------------------------------------------------------------------------- definitions


class ParamDecl(Node):
    """A typed parameter of a ``model`` or ``block``: ``name: type = default``."""

    name: str
    type: Literal["int", "float", "bool", "str"] | None = None
    default: Expr | None = None


class Param(Node):
    """Top-level ``param name = expr``."""

    name: str
    value: Expr


class Use(Node):
    """``use "other.dsl"``: import the params and blocks of another spec."""

    path: str


class BlockDef(Node):
    """A composite ``block`` or the ``model``: typed params and a body."""

    name: str
    name_span: Span = NO_SPAN
    params: tuple[ParamDecl, ...] = ()
    body: tuple[Stmt, ...] = ()
    is_model: bool = False

    @property
    def inputs(self) -> list[Input]:
        return [s for s in self.body if isinstance(s, Input)]

    @property
    def outputs(self) -> list[Output]:
        return [s for s in self.body if isinstance(s, Output)]


class TrainEntry(Node):
    key: str
    key_span: Span = NO_SPAN
    value: Expr


class TrainSection(Node):
    entries: tuple[TrainEntry, ...] = ()

    def get(self, key: str) -> TrainEntry | None:
        for e in self.entries:
            if e.key == key:
                return e
        return None


class Comment(Node):
    """A source comment, kept so that formatting and conversion preserve it."""

    text: str


class Spec(Node):
    """One spec file: params, imports, blocks, at most one model and train section."""

    file: str = "<input>"
    format: Literal["dsl", "yaml", "python"] = "dsl"
    params: tuple[Param, ...] = ()
    uses: tuple[Use, ...] = ()
    blocks: tuple[BlockDef, ...] = ()
    model: BlockDef | None = None
    train: TrainSection | None = None
    comments: tuple[Comment, ...] = ()

    def to_text(self) -> str:
        """The canonical text form (what ``dsl fmt`` writes)."""
        return formats.write(self, "dsl")

    def to_yaml(self) -> str:
        """The YAML form (what ``dsl convert --to yaml`` writes)."""
        return formats.write(self, "yaml")

    def block(self, name: str) -> BlockDef | None:
        for b in self.blocks:
            if b.name == name:
                return b
        return None


for _m in (UnaryOp, BinOp, Keyword, Call, ListExpr, Slice, Index, Repeat, ShapeSpec, Assign, BlockDef):
    _m.model_rebuild()


def strip_spans(node):
    """A copy of an IR value with every span reset: for comparing IR across front ends."""
    if isinstance(node, BaseModel):
        updates = {}
        for name in type(node).model_fields:
            value = getattr(node, name)
            if isinstance(value, Span):
                updates[name] = NO_SPAN
            elif name == "file":
                updates[name] = "<input>"
            elif name == "format":
                updates[name] = "dsl"
            elif name == "comments":
                updates[name] = ()
            else:
                updates[name] = strip_spans(value)
        return node.model_copy(update=updates)
    if isinstance(node, tuple):
        return tuple(strip_spans(v) for v in node)
    return node
