"""The Python builder: ``dsl.Graph`` writes a Spec from Python calls (DESIGN §4).

::

    g = dsl.Graph("Classifier", params={"hidden": 64})
    x = g.input("x", ["B", 64])
    h = g.relu(g.Linear(x, out=g.param("hidden")))
    g.output("logits", g.Linear(h, out=10), shape=["B", 10])
    spec = g.build()

Any attribute ``g.Name(...)`` calls the block or function ``Name``: positional
arguments are tensor handles, keyword arguments are hyperparameters (Python
literals, ``g.param(...)`` arithmetic, block values) or optional tensor inputs
(handles). A call without positional arguments is a block value:
``enc = g.MLP(hidden=8, out=4)`` then ``enc(a)``, ``enc(b)`` share one instance.
A block without tensor inputs takes its constants positionally:
``g.Parameter([128, 64], init="normal", std=0.02)``, ``g.arange(g.dim("T"))``.
Handles slice as tensors do: ``pos[:g.dim("T")]``, ``x[:, 0]``, ``x[..., :4]``
(indexing a call with several outputs by an int picks that output instead).
``g.block("Name", args=...)`` defines a composite block from Python: build its
body on the returned builder, then call it as ``g.Name(x, ...)``.

How values get names (deterministic, decided by ``build()``):

* an intermediate used exactly once, in the same ``repeat`` body (or at top
  level) where it was made, is written inline: ``relu(Linear(x, out=hidden))``;
* ``g.let("h", value)`` names a value (rebinding ``h`` as in the text language,
  which is how a value carries through ``g.repeat``); ``g.output("y", value)``
  names the value ``y`` when it has no name yet;
* any other value that needs a statement gets an automatic name from its block,
  ``linear_1``, ``relu_2`` (``moe_1, moe_1_balance`` for several outputs), and a
  shared block value gets ``mlp_1 = MLP(...)``. Automatic names never clash with
  names given by the user.

Every IR node's span is the line (and, on Python >= 3.11, column) of the user's
call, so diagnostics about a built spec point at the user's Python code.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from dsl.language.diagnostics import NO_SPAN, Diagnostic, Span
from dsl.language.errors import SpecError
from dsl.language.ir import (
    DTYPES,
    Assign,
    BinOp,
    BlockDef,
    Call,
    DimExpr,
    Ellipsis_,
    Expr,
    Index,
    Input,
    Keyword,
    ListExpr,
    Name,
    Output,
    Param,
    ParamDecl,
    Repeat,
    ShapeSpec,
    Slice,
    Spec,
    Stmt,
    Str,
    Target,
    TrainEntry,
    TrainSection,
    UnaryOp,
    Use,
    Wildcard,
)

_THIS_FILE = os.path.normcase(os.path.abspath(__file__))
# Frames skipped to find the user's call: this file, and contextlib for `with g.repeat(...)`.
_SKIP_FILES = frozenset({_THIS_FILE, os.path.normcase(os.path.abspath(contextmanager.__code__.co_filename))})
_OPS = {"+": "add", "-": "sub", "*": "mul", "/": "div", "//": "floordiv", "%": "mod", "**": "pow", "@": "matmul"}
_TYPES = {int: "int", float: "float", bool: "bool", str: "str"}


def _caller_span() -> Span:
    """The position of the first frame outside this file: the user's call."""
    frame = sys._getframe(1)
    while frame is not None and os.path.normcase(os.path.abspath(frame.f_code.co_filename)) in _SKIP_FILES:
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return NO_SPAN
    line, col, end_line, end_col = frame.f_lineno, 1, frame.f_lineno, 1
    code = frame.f_code
    if hasattr(code, "co_positions") and frame.f_lasti >= 0:  # Python >= 3.11: the call's columns
        pos = next(itertools.islice(code.co_positions(), frame.f_lasti // 2, None), None)
        if pos is not None and pos[0] is not None and pos[2] is not None:
            line, end_line = pos[0], pos[1] or pos[0]
            col = pos[2] + 1
            end_col = (pos[3] if pos[3] is not None else pos[2]) + 1
    return Span(file=frame.f_code.co_filename, line=line, col=col, end_line=end_line, end_col=end_col)


def _fail(message: str, span: Span, label: str = "", code: str = "E0213", help: str | None = None) -> SpecError:
    return SpecError([Diagnostic(code, message, span, label=label, help=help)])


def _short(value: Any, limit: int = 60) -> str:
    """``repr`` of a user value, cut short (it goes into a one-line message)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _at_call(parse: Any, span: Span) -> Any:
    """Run a text parse of a Python string; its errors point at the user's call,
    since text inside a Python string has no position of its own in the file."""
    try:
        return parse()
    except SpecError as err:
        for d in err.diagnostics:
            d.span = span
        raise SpecError(err.diagnostics) from None


def _identifier(name: Any, what: str, span: Span) -> str:
    from dsl.language.yaml_reader import check_identifier

    if not isinstance(name, str):
        raise _fail(f"{what} must be a string, got {type(name).__name__}", span, "not a name")
    problem = check_identifier(name)
    if problem:
        raise _fail(f"invalid {what}: {problem}", span, "not a valid name")
    return name


# --------------------------------------------------------------------------- graph nodes


@dataclass(eq=False)
class _Scope:
    """A statement list: the model body or a repeat body."""

    parent: _Scope | None = None
    items: list[Any] = field(default_factory=list)  # _Node | _RepeatItem, creation order


@dataclass(eq=False)
class _RepeatItem:
    count: Expr
    var: str | None
    scope: _Scope
    span: Span


@dataclass(eq=False)
class _Node:
    """One value-producing thing. ``kind``:
    input | call | op | unary | block (a block value) | alias (``let`` of an
    existing value) | output (an Output statement) | const (params, loop vars)
    | index (``x[...]``, the subscript in ``key``)."""

    kind: str
    scope: _Scope
    span: Span
    order: int
    func: str | None = None
    callee: Handle | None = None  # calling a block value: enc(x)
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    op: str | None = None
    const: Expr | None = None
    names: list[str] = field(default_factory=list)  # names the user gave (let, input, output)
    shape: ShapeSpec | None = None
    dtype: str | None = None
    key: tuple[Any, ...] = ()


class Handle:
    """A value in a :class:`Graph`: a tensor, a constant (param arithmetic) or a
    block value. Supports ``+ - * @`` (and ``/ // % **`` for constants)."""

    __slots__ = ("_graph", "_node", "_index")

    def __init__(self, graph: Graph, node: _Node, index: int = 0) -> None:
        self._graph = graph
        self._node = node
        self._index = index

    @property
    def is_constant(self) -> bool:
        n = self._node
        if n.kind == "alias":
            return n.args[0].is_constant
        return n.kind == "const" or (n.kind in ("op", "unary") and all(_constant(a) for a in n.args))

    @property
    def is_block_value(self) -> bool:
        n = self._node
        return n.kind == "block" or (n.kind == "alias" and n.args[0].is_block_value)

    def _block_func(self) -> str | None:
        """The block a call (or a block value, through lets) instantiates."""
        n = self._node
        if n.kind == "alias":
            return n.args[0]._block_func()
        return n.func if n.callee is None else n.callee._block_func()

    def __repr__(self) -> str:
        what = "constant" if self.is_constant else "block value" if self.is_block_value else "tensor"
        label = self._node.func or self._node.op or (self._node.names[:1] or ["?"])[0]
        return f"<dsl.Graph {what} {label}{f'[{self._index}]' if self._index else ''}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Handle:
        if not self.is_block_value:
            raise TypeError(f"{self!r} is not a block value; only a block called without tensors can be called")
        return self._graph._call(None, args, kwargs, callee=self)

    def __getitem__(self, key: Any) -> Handle:
        """Output ``key`` of a call with several outputs (``g.MoE(h, ...)[1]``); otherwise
        the tensor indexed or sliced as in torch (``x[:, 0]``, ``pos[:g.dim("T")]``)."""
        if isinstance(key, int) and not isinstance(key, bool) and self._picks_output():
            if key < 0:
                raise TypeError("pick an output with an int >= 0")
            return Handle(self._graph, self._node, key)
        return self._graph._index(self, key)

    def _picks_output(self) -> bool:
        """Whether an int subscript selects one of several outputs (a call not yet split)."""
        n = self._node
        if n.kind != "call" or self._index != 0:
            return False
        try:
            return self._graph._output_count(self) > 1
        except TypeError:
            return True  # unknown block: as before, an int picks an output

    def __iter__(self) -> Iterator[Handle]:
        """``z, balance = g.MoE(...)``: as many handles as the block has outputs."""
        n = self._graph._output_count(self)
        return iter([self[i] for i in range(n)])

    def __bool__(self) -> bool:
        raise TypeError("a dsl.Graph value has no truth value: it is computed when the model runs")

    def _bin(self, op: str, other: Any, reverse: bool = False) -> Handle:
        left, right = (other, self) if reverse else (self, other)
        return self._graph._op(op, left, right)

    def __add__(self, o: Any) -> Handle:
        return self._bin("+", o)

    def __radd__(self, o: Any) -> Handle:
        return self._bin("+", o, True)

    def __sub__(self, o: Any) -> Handle:
        return self._bin("-", o)

    def __rsub__(self, o: Any) -> Handle:
        return self._bin("-", o, True)

    def __mul__(self, o: Any) -> Handle:
        return self._bin("*", o)

    def __rmul__(self, o: Any) -> Handle:
        return self._bin("*", o, True)

    def __matmul__(self, o: Any) -> Handle:
        return self._bin("@", o)

    def __rmatmul__(self, o: Any) -> Handle:
        return self._bin("@", o, True)

    def __truediv__(self, o: Any) -> Handle:
        return self._bin("/", o)

    def __rtruediv__(self, o: Any) -> Handle:
        return self._bin("/", o, True)

    def __floordiv__(self, o: Any) -> Handle:
        return self._bin("//", o)

    def __rfloordiv__(self, o: Any) -> Handle:
        return self._bin("//", o, True)

    def __mod__(self, o: Any) -> Handle:
        return self._bin("%", o)

    def __rmod__(self, o: Any) -> Handle:
        return self._bin("%", o, True)

    def __pow__(self, o: Any) -> Handle:
        return self._bin("**", o)

    def __rpow__(self, o: Any) -> Handle:
        return self._bin("**", o, True)

    def __neg__(self) -> Handle:
        return self._graph._unary("-", self)

    def __pos__(self) -> Handle:
        return self._graph._unary("+", self)


def _constant(v: Any) -> bool:
    if isinstance(v, Handle):
        return v.is_constant
    if isinstance(v, (list, tuple)):
        return all(_constant(x) for x in v)
    return True


def _handles(v: Any) -> Iterator[Handle]:
    """The handles inside an argument (lists nest)."""
    if isinstance(v, Handle):
        yield v
    elif isinstance(v, (list, tuple)):
        for x in v:
            yield from _handles(x)


# --------------------------------------------------------------------------- the graph


class Graph:
    """Builds one model spec from Python calls; ``build()`` returns the Spec.

    ``params`` become top-level ``param`` constants, ``args`` the model's typed
    parameters (a literal default, or a type such as ``int`` for none).
    """

    def __init__(self, name: str, params: dict[str, Any] | None = None, args: dict[str, Any] | None = None) -> None:
        span = _caller_span()
        self._span = span
        self._name = _identifier(name, "model name", span)
        self._root = _Scope()
        self._scope = self._root
        self._count = 0
        self._params = [self._param(k, v, span) for k, v in (params or {}).items()]
        self._args = [self._arg(k, v, span) for k, v in (args or {}).items()]
        self._uses: list[Use] = []
        self._train: list[TrainEntry] = []
        self._train_span = NO_SPAN
        self._blocks: list[Graph] = []  # composite blocks defined with g.block(...)
        self._is_block = False

    # ----------------------------------------------------------------- public API

    def param(self, name: str) -> Handle:
        """A reference to a param or model argument (a constant)."""
        span = _caller_span()
        return Handle(self, self._new("const", span, const=Name(id=_identifier(name, "param name", span), span=span)))

    def dim(self, name: str) -> Handle:
        """A symbolic dim's size as a value (``T`` in ``pos[:T]``), read from the inputs at run time."""
        span = _caller_span()
        return Handle(self, self._new("const", span, const=Name(id=_identifier(name, "dim name", span), span=span)))

    def block(self, name: str, args: dict[str, Any] | None = None) -> Graph:
        """Define the composite block ``name`` (``block Name(args) { ... }``): build its body
        on the returned builder (``input``, calls, ``output``), then call ``g.Name(x, ...)``."""
        span = _caller_span()
        name = _identifier(name, "block name", span)
        if any(b._name == name for b in self._blocks) or name == self._name:
            raise _fail(f"block `{name}` is defined twice", span, "defined again", code="E0207")
        child = Graph(name, args=args)
        child._span = span
        child._is_block = True
        self._blocks.append(child)
        return child

    def input(self, name: str, shape: Sequence[Any] | None = None, dtype: str | None = None) -> Handle:
        """A tensor input. ``dtype``: float (the default when omitted), long, int or bool."""
        span = _caller_span()
        name = _identifier(name, "input name", span)
        if dtype is not None and dtype not in DTYPES:
            raise _fail(f"unknown dtype `{dtype}`", span, "unknown dtype", code="E0302",
                        help=f"use one of: {', '.join(DTYPES)}")  # fmt: skip
        node = self._new("input", span, names=[name], shape=self._shape(shape, span), dtype=dtype)
        return Handle(self, node)

    def output(self, name: str, value: Handle, shape: Sequence[Any] | None = None) -> None:
        """Mark ``value`` as the output ``name``, asserting ``shape`` when given."""
        span = _caller_span()
        name = _identifier(name, "output name", span)
        self._tensor(value, "g.output", span)
        if name not in self._user_names(value):
            if self._can_name(value, name):
                value._node.names.append(name)
            else:
                self._new("alias", span, args=(value,), names=[name])
        self._new("output", span, names=[name], shape=self._shape(shape, span))

    def let(self, names: str | Sequence[str], value: Handle) -> Any:
        """Name a value (``h = ...`` in the text language). Returns the handle;
        with several names (a block with several outputs) a tuple of handles."""
        span = _caller_span()
        many = not isinstance(names, str)
        names = [_identifier(n, "name", span) for n in ([names] if isinstance(names, str) else names)]
        if not isinstance(value, Handle):
            raise TypeError("g.let names a value made by the graph")
        if many and (value._node.kind != "call" or value._index != 0):
            raise _fail("several names need a block call with several outputs", span, "not a block call",
                        code="E0210")  # fmt: skip
        if self._can_name(value, names[0], latest=True):
            value._node.names.extend(names)
            node = value._node
        else:
            if many:
                raise _fail("name a block's outputs where it is called", span, "already computed", code="E0210",
                            help="pass the call itself: g.let(('a', 'b'), g.Block(...))")  # fmt: skip
            node = self._new("alias", span, args=(value,), names=names)
        if many:
            return tuple(Handle(self, node, i) for i in range(len(names)))
        return Handle(self, node)

    @contextmanager
    def repeat(self, count: int | Handle, var: str | None = None) -> Iterator[Handle | None]:
        """``with g.repeat(2, var="i") as i:`` — the body is unrolled ``count``
        times, each copy with its own weights; ``g.let`` names carry over."""
        span = _caller_span()
        if var is not None:
            var = _identifier(var, "loop variable", span)
        scope = _Scope(parent=self._scope)
        self._scope.items.append(_RepeatItem(self._expr(count, span, None), var, scope, span))
        self._scope = scope
        try:
            yield None if var is None else Handle(self, self._new("const", span, const=Name(id=var, span=span)))
        finally:
            self._scope = scope.parent  # type: ignore[assignment]

    def train(self, **entries: Any) -> None:
        """Train section entries: strings are text expressions, numbers literals."""
        span = _caller_span()
        self._train_span = span
        for key, value in entries.items():
            key = _identifier(key, "train key", span)
            self._train = [e for e in self._train if e.key != key]
            self._train.append(TrainEntry(key=key, key_span=span, value=self._train_value(value, span), span=span))

    def use(self, path: str) -> None:
        """Import the params and composite blocks of another spec (``use "path"``)."""
        self._uses.append(Use(path=str(path), span=_caller_span()))

    def call(self, func: str, *args: Any, **kwargs: Any) -> Handle:
        """``g.call("Linear", x, out=4)``: the same as ``g.Linear(x, out=4)``."""
        span = _caller_span()
        return self._call(_identifier(func, "block name", span), args, kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Handle:
            return self._call(name, args, kwargs)

        call.__name__ = name
        return call

    def build(self) -> Spec:
        """The Spec (format "python"); spans point at the calls that made it."""
        return _Writer(self).spec()

    # ----------------------------------------------------------------- internals

    def _new(self, kind: str, span: Span, **fields: Any) -> _Node:
        self._count += 1
        node = _Node(kind=kind, scope=self._scope, span=span, order=self._count, **fields)
        if kind != "const":
            self._scope.items.append(node)
        return node

    def _param(self, name: str, value: Any, span: Span) -> Param:
        return Param(name=_identifier(name, "param name", span), value=self._expr(value, span, None), span=span)

    def _arg(self, name: str, value: Any, span: Span) -> ParamDecl:
        name = _identifier(name, "argument name", span)
        if isinstance(value, type):
            if value not in _TYPES:
                raise _fail(f"argument `{name}` has an unsupported type", span, code="E0401",
                            help="use int, float, bool or str")  # fmt: skip
            return ParamDecl(name=name, type=_TYPES[value], span=span)
        from dsl.language.yaml_reader import infer_type

        default = self._expr(value, span, None)
        return ParamDecl(name=name, type=infer_type(default), default=default, span=span)

    def _shape(self, shape: Sequence[Any] | None, span: Span) -> ShapeSpec | None:
        if shape is None:
            return None
        if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
            raise _fail(f"a shape is a list such as ['B', 64], got {_short(shape)}", span, "not a list", code="E0305")
        return ShapeSpec(dims=tuple(self._dim(d, span) for d in shape), span=span)

    def _dim(self, d: Any, span: Span) -> DimExpr:
        from dsl.language.text import parse_dim

        if d is Ellipsis:
            return Ellipsis_(span=span)
        if d is None:
            return Wildcard(span=span)
        if isinstance(d, str):
            return _respan(_at_call(lambda: parse_dim(d, span.file, span.line, span.col), span), span)
        if isinstance(d, Handle) and d.is_constant:
            return self._expr(d, span, None)  # type: ignore[return-value]
        if isinstance(d, int) and not isinstance(d, bool):
            return self._expr(d, span, None)  # type: ignore[return-value]
        raise _fail(f"a dimension is an int, a name such as 'B', '_', '...' or a param, got {_short(d)}", span,
                    "not a dimension", code="E0305")  # fmt: skip

    def _train_value(self, value: Any, span: Span) -> Expr:
        from dsl.language.text import parse_expr

        if isinstance(value, str):
            return _respan(_at_call(lambda: parse_expr(value, span.file, span.line, span.col), span), span)
        if isinstance(value, (list, tuple)):
            return ListExpr(items=tuple(self._train_value(v, span) for v in value), span=span)
        if isinstance(value, Handle):
            raise TypeError("train entries are text expressions such as 'cross_entropy(logits, y)'")
        return self._expr(value, span, None)

    def _tensor(self, v: Any, what: str, span: Span) -> Handle:
        if not isinstance(v, Handle) or v._graph is not self:
            raise TypeError(f"{what} takes a tensor made by this graph, got {v!r}")
        if v.is_constant or v.is_block_value:
            raise _fail(f"{what} takes a tensor, not a {'constant' if v.is_constant else 'block value'}", span,
                        "not a tensor", code="E0206")  # fmt: skip
        return v

    def _call(self, func: str | None, args: Sequence[Any], kwargs: dict[str, Any], callee: Handle | None = None) -> Handle:
        span = _caller_span()
        if func is not None:
            _identifier(func, "block name", span)
        for k in kwargs:
            _identifier(k, "argument name", span)
        for h in _handles((args, list(kwargs.values()))):
            if h._graph is not self:
                raise TypeError(f"{h!r} belongs to another dsl.Graph")
        kind = "block" if not args and callee is None else "call"
        node = self._new(kind, span, func=func, callee=callee, args=tuple(args), kwargs=tuple(kwargs.items()))
        return Handle(self, node)

    def _index(self, value: Handle, key: Any) -> Handle:
        span = _caller_span()
        self._tensor(value, "indexing", span)
        items = key if isinstance(key, tuple) else (key,)
        for item in items:
            parts = (item.start, item.stop, item.step) if isinstance(item, slice) else (item,)
            for part in parts:
                if part is None or part is Ellipsis or (isinstance(part, int) and not isinstance(part, bool)):
                    continue
                if isinstance(part, Handle) and part.is_constant:
                    continue
                raise _fail(f"a subscript is an int, a slice, ... or a constant (g.dim, g.param), got {_short(part)}",
                            span, "not a subscript", code="E0206",
                            help="index by a tensor with g.index_select(x, dim, idx) or g.gather(x, dim, idx)")
        return Handle(self, self._new("index", span, args=(value,), key=items))

    def _op(self, op: str, left: Any, right: Any) -> Handle:
        span = _caller_span()
        for v in (left, right):
            if isinstance(v, Handle) and v.is_block_value:
                raise _fail("a block value has no arithmetic", span, "block value", code="E0206")
        if isinstance(left, Handle) and isinstance(right, Handle) and left._graph is not right._graph:
            raise TypeError("both values must come from the same dsl.Graph")
        node = _Node("op", self._scope, span, 0, op=op, args=(left, right))
        if not _constant(left) or not _constant(right):
            node = self._new("op", span, op=op, args=(left, right))
        return Handle(self, node)

    def _unary(self, op: str, value: Handle) -> Handle:
        span = _caller_span()
        node = _Node("unary", self._scope, span, 0, op=op, args=(value,))
        if not value.is_constant:
            node = self._new("unary", span, op=op, args=(value,))
        return Handle(self, node)

    def _expr(self, v: Any, span: Span, writer: _Writer | None) -> Expr:
        """A Python value as IR: literals, lists, and (with a writer) handles."""
        from dsl.language.yaml_reader import literal_expr

        if isinstance(v, Handle):
            if writer is None:
                if not v.is_constant:
                    raise TypeError(f"expected a constant, got {v!r}")
                return _Writer(self).ref(v, None)
            return writer.ref(v, span)
        if isinstance(v, (list, tuple)):
            return ListExpr(items=tuple(self._expr(x, span, writer) for x in v), span=span)
        if v is None or isinstance(v, (bool, int, float)):
            return literal_expr(v, span)
        if isinstance(v, str):
            return Str(value=v, span=span)
        raise _fail(f"cannot use {type(v).__name__} {_short(v)} in a spec", span, "not a spec value", code="E0401",
                    help="hyperparameters are numbers, strings, booleans, None, lists of them or g.param(...)")  # fmt: skip

    def _user_names(self, h: Handle) -> list[str]:
        return h._node.names[h._index : h._index + 1]

    def _can_name(self, h: Handle, name: str, latest: bool = False) -> bool:
        """Whether ``h``'s own statement can carry ``name`` (else an alias
        statement is written). ``latest``: only the value made last, so the name
        binds where the user wrote ``let``."""
        n = h._node
        if (n.kind not in ("call", "op", "unary", "block", "index") or h._index != 0 or n.names
                or n.scope is not self._scope):
            return False
        if latest:
            return bool(self._scope.items) and self._scope.items[-1] is n
        return True

    def _output_count(self, h: Handle) -> int:
        from dsl.language.registry import lookup

        n = h._node
        if n.kind != "call" or h._index != 0:
            raise TypeError(f"{h!r} is one value; only a block call can be unpacked")
        if len(n.names) > 1:
            return len(n.names)
        func = h._block_func()
        own = next((b for b in self._blocks if b._name == func), None)
        if own is not None:
            return sum(1 for item in own._root.items if isinstance(item, _Node) and item.kind == "output")
        decl = lookup(func or "")
        if decl is None:
            raise TypeError(
                f"cannot tell how many outputs `{func}` has; index the result (r[0], r[1]) "
                "or name them: g.let(('a', 'b'), ...)"
            )
        return len(decl.outputs)


def _respan(e: Any, span: Span) -> Any:
    """Give a parsed expression the span of the Python call: text written in a
    Python string has no position of its own in the file."""
    from pydantic import BaseModel

    if isinstance(e, BaseModel):
        updates = {k: _respan(getattr(e, k), span) for k in type(e).model_fields}
        return e.model_copy(update={k: (span if isinstance(v, Span) else v) for k, v in updates.items()})
    if isinstance(e, tuple):
        return tuple(_respan(x, span) for x in e)
    return e


# --------------------------------------------------------------------------- writing the spec


class _Stale(Exception):
    """An inlined value would read a name after it was rebound: write it as a statement."""

    def __init__(self, node: _Node) -> None:
        self.node = node


class _Writer:
    """Turns a Graph into statements: decides which values are inlined and
    which become named statements, then checks that every name read still
    means the value it stood for when it was read."""

    def __init__(self, graph: Graph) -> None:
        self.g = graph
        self.forced: set[int] = set()  # node orders that must be statements
        self.uses: dict[int, list[tuple[_Scope, int]]] = {}
        self.called: set[int] = set()
        self.auto: dict[tuple[int, int], str] = {}
        self.env: dict[str, tuple[int, int]] = {}
        self.inline_stack: list[_Node] = []
        self._count_uses(graph._root)

    # ----------------------------------------------------------------- analysis

    def _count_uses(self, scope: _Scope) -> None:
        for item in scope.items:
            if isinstance(item, _RepeatItem):
                self._count_uses(item.scope)
                continue
            if item.callee is not None:
                self.called.add(item.callee._node.order)
            for v in (item.args, [v for _, v in item.kwargs]):
                for h in _handles(v):
                    self._use(h, scope)

    def _use(self, h: Handle, scope: _Scope) -> None:
        n = h._node
        if n.kind in ("op", "unary") and n.order == 0:  # constant arithmetic: look inside
            for x in _handles(n.args):
                self._use(x, scope)
            return
        self.uses.setdefault(n.order, []).append((scope, h._index))

    def statement(self, n: _Node) -> bool:
        """Whether node ``n`` is written as its own statement."""
        if n.kind in ("input", "alias", "output"):
            return True
        if n.kind == "block":
            return n.order in self.called or bool(n.names)
        if n.kind not in ("call", "op", "unary", "index") or n.order == 0:
            return False
        uses = self.uses.get(n.order, [])
        return (
            bool(n.names)
            or n.order in self.forced
            or len(uses) != 1
            or uses[0][0] is not n.scope
            or uses[0][1] != 0
        )

    def names_of(self, n: _Node) -> list[str]:
        """The targets of a statement: user names, then automatic ones."""
        width = max([len(n.names), 1] + [i + 1 for _, i in self.uses.get(n.order, [])])
        return [n.names[i] if i < len(n.names) else self.auto[(n.order, i)] for i in range(width)]

    def _assign_auto_names(self) -> None:
        taken = {p.name for p in self.g._params} | {a.name for a in self.g._args}
        nodes = list(self._walk(self.g._root))
        for n in nodes:
            taken.update(n.names)
        for item in self._repeats(self.g._root):
            if item.var:
                taken.add(item.var)
        counters: dict[str, int] = {}
        for n in nodes:
            if not self.statement(n) or n.kind in ("input", "output", "alias"):
                continue
            base = self._base(n)
            width = max([len(n.names), 1] + [i + 1 for _, i in self.uses.get(n.order, [])])
            first = n.names[0] if n.names else None
            if first is None:
                while True:
                    counters[base] = counters.get(base, 0) + 1
                    first = f"{base}_{counters[base]}"
                    if first not in taken:
                        break
                taken.add(first)
                self.auto[(n.order, 0)] = first
            for i in range(max(len(n.names), 1), width):
                extra = f"{first}_{self._output_name(n, i)}"
                while extra in taken:
                    extra += "_"
                taken.add(extra)
                self.auto[(n.order, i)] = extra

    def _base(self, n: _Node) -> str:
        if n.kind == "index":
            return "index"
        if n.kind == "call" and n.callee is not None:
            return (n.callee._block_func() or "call").lower()
        if n.func is not None:
            return n.func.lower()
        return _OPS.get(n.op or "", "neg" if n.op == "-" else "pos")

    def _output_name(self, n: _Node, i: int) -> str:
        from dsl.language.registry import lookup

        decl = lookup(Handle(self.g, n)._block_func() or "")
        if decl is not None and i < len(decl.outputs):
            return decl.outputs[i]
        return str(i)

    def _walk(self, scope: _Scope) -> Iterator[_Node]:
        for item in scope.items:
            if isinstance(item, _RepeatItem):
                yield from self._walk(item.scope)
            else:
                yield item

    def _repeats(self, scope: _Scope) -> Iterator[_RepeatItem]:
        for item in scope.items:
            if isinstance(item, _RepeatItem):
                yield item
                yield from self._repeats(item.scope)

    # ----------------------------------------------------------------- writing

    def spec(self) -> Spec:
        for _ in range(10_000):  # each retry turns one more value into a statement
            self.auto, self.env = {}, {}
            self._assign_auto_names()
            try:
                body = self.body(self.g._root)
                break
            except _Stale as stale:
                self.forced.add(stale.node.order)
        g = self.g
        model = BlockDef(name=g._name, name_span=g._span, params=tuple(g._args), body=tuple(body),
                         is_model=not g._is_block, span=g._span)  # fmt: skip
        if g._is_block:
            return Spec(file=g._span.file, format="python", blocks=(model,), span=g._span)
        blocks = tuple(b for child in g._blocks for b in _Writer(child).spec().blocks)
        train = TrainSection(entries=tuple(g._train), span=g._train_span) if g._train else None
        return Spec(file=g._span.file, format="python", params=tuple(g._params), blocks=blocks, model=model,
                    train=train, uses=tuple(g._uses), span=g._span)  # fmt: skip

    def body(self, scope: _Scope) -> list[Stmt]:
        out: list[Stmt] = []
        # Top-level outputs move to the end (the canonical layout) unless their
        # name is rebound after them: (position, statement, what the name meant).
        outputs: list[tuple[int, Stmt, tuple[int, int] | None]] = []
        for item in scope.items:
            if isinstance(item, _RepeatItem):
                body = self.body(item.scope)
                out.append(Repeat(count=item.count, var=item.var, body=tuple(body), span=item.span))
            elif item.kind == "output" and scope.parent is None:
                outputs.append((len(out), self.stmt(item), self.env.get(item.names[0])))
            elif self.statement(item):
                out.append(self.stmt(item))
        stay = [(i, s) for i, s, meant in outputs if self.env.get(s.name) != meant]  # type: ignore[attr-defined]
        for i, s in reversed(stay):
            out.insert(i, s)
        return out + [s for _, s, meant in outputs if self.env.get(s.name) == meant]  # type: ignore[attr-defined]

    def stmt(self, n: _Node) -> Stmt:
        if n.kind == "input":
            self.bind(n.names[0], (n.order, 0))
            return Input(name=n.names[0], shape=n.shape, dtype=n.dtype, span=n.span)  # type: ignore[arg-type]
        if n.kind == "output":
            return Output(name=n.names[0], shape=n.shape, span=n.span)
        value = self.ref(n.args[0], n.span) if n.kind == "alias" else self.value(n)
        names = n.names if n.kind == "alias" else self.names_of(n)
        for i, name in enumerate(names):
            self.bind(name, (n.order, 0 if n.kind == "alias" else i))
        return Assign(targets=tuple(Target(name=t, span=n.span) for t in names), value=value, span=n.span)

    def bind(self, name: str, what: tuple[int, int]) -> None:
        self.env[name] = what

    def value(self, n: _Node) -> Expr:
        """The expression a call/op node computes."""
        span = n.span
        if n.kind == "index":
            return Index(value=self.operand(n.args[0], span), items=tuple(self.subscript(k, span) for k in n.key),
                         span=span)
        if n.kind in ("op", "unary"):
            operands = [self.operand(a, span) for a in n.args]
            if n.kind == "unary":
                return UnaryOp(op=n.op, operand=operands[0], span=span)  # type: ignore[arg-type]
            return BinOp(op=n.op, left=operands[0], right=operands[1], span=span)  # type: ignore[arg-type]
        func = n.func if n.callee is None else self.callee_name(n.callee, span)
        args = tuple(self.operand(a, span) for a in n.args)
        kwargs = tuple(Keyword(name=k, value=self.operand(v, span), span=span) for k, v in n.kwargs)
        return Call(func=func, func_span=span, args=args, kwargs=kwargs, span=span)  # type: ignore[arg-type]

    def subscript(self, item: Any, span: Span) -> Any:
        if item is Ellipsis:
            return Ellipsis_(span=span)
        if isinstance(item, slice):
            start, stop, step = (None if v is None else self.operand(v, span) for v in (item.start, item.stop, item.step))
            return Slice(start=start, stop=stop, step=step, span=span)
        return self.operand(item, span)

    def callee_name(self, callee: Handle, span: Span) -> str:
        name = self.ref(callee, span)
        assert isinstance(name, Name)
        return name.id

    def operand(self, v: Any, span: Span) -> Expr:
        return self.g._expr(v, span, self)

    def ref(self, h: Handle, span: Span | None) -> Expr:
        """How a use of ``h`` is written: its name, or its expression inline."""
        n = h._node
        span = span or n.span
        if n.kind == "const":
            return n.const  # type: ignore[return-value]
        if n.order == 0 or not self.statement(n):
            return self.inline(n)
        name = self.names_of(n)[h._index] if n.kind != "alias" else n.names[0]
        key = (n.order, 0 if n.kind == "alias" else h._index)
        if self.env.get(name) != key:
            if self.inline_stack:
                raise _Stale(self.inline_stack[-1])
            raise _fail(f"`{name}` is read after it was rebound", span, f"`{name}` no longer means this value",
                        code="E0211", help="give one of the two values another name with g.let")  # fmt: skip
        return Name(id=name, span=span)

    def inline(self, n: _Node) -> Expr:
        if n.order == 0:  # constant arithmetic
            return self.value(n)
        self.inline_stack.append(n)
        try:
            return self.value(n)
        finally:
            self.inline_stack.pop()


__all__ = ["Graph", "Handle"]
