"""What each name of a checked spec means, by position: the index behind hover,
definition and the names that completion offers.

Built from one :class:`~dsl.checking.analysis.Analysis` without touching the
checker: the checked program's nodes keep the span of the expression they
compute and the name they are bound to (``PNode.var``), so the value of an
assignment is the node at its right-hand side's span, and a use of a name is
resolved as the checker resolves it, to the latest binding before it in the
same body.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from dsl.checking.analysis import Analysis
from dsl.checking.program import PNode, Program
from dsl.language import ir
from dsl.language.diagnostics import Span
from dsl.language.printer import expr_to_text, shape_to_text
from dsl.language.shapes import DimEnv, Sym, TensorType
from dsl.tools.catalogue import spell
from dsl.tools.lsp.callees import use_target
from dsl.tools.lsp.positions import Point, contains, name_span, size

SpanKey = tuple[str, int, int, int, int]
START: Point = (0, 0)
END: Point = (10**9, 0)


@dataclass(frozen=True)
class Shape:
    """One type a name takes (a name in a block body takes one per call of the block)."""

    text: str  # symbolic, as the user writes shapes: [N, 64]
    sizes: str = ""  # the sizes its dims are known to have: N = 34 (from the data)
    why: str | None = None  # where the shape came from (a block's shape rule)
    call: Span | None = None  # the call of the enclosing block this type is for


Typed = list[tuple[TensorType, "Span | None"]]  # the types something takes, with the block call each is for


@dataclass
class Binding:
    """A name a spec defines: a tensor, an input, a param, a loop variable, a block instance."""

    name: str
    kind: str
    span: Span  # the name where it is defined
    visible: Point = START  # uses from here on see it
    until: Point = END  # and up to here (a loop variable's body)
    detail: str = ""  # e.g. "param hidden = 16"
    types: Typed = field(default_factory=list)
    env: DimEnv | None = None
    given: list[Shape] | None = None  # shapes known only as text (a declared input, a data field)

    @functools.cached_property
    def shapes(self) -> list[Shape]:
        """Its types as shown (computed when first shown: most names are never hovered)."""
        if self.given is not None:
            return self.given
        return _unique([shape_of(t, self.env or DimEnv(), call) for t, call in self.types])


@dataclass
class Hit:
    """What is at a position: a name, a call, a keyword, a `use`, a train key or a dim."""

    span: Span
    binding: Binding | None = None
    func: str | None = None  # the block or function called (or whose keyword this is)
    keyword: str | None = None
    path: str | None = None  # a `use`d file, resolved
    train_key: str | None = None
    dim: str | None = None
    types: Typed = field(default_factory=list)  # a call's outputs here, a dim's type
    env: DimEnv | None = None

    @functools.cached_property
    def shapes(self) -> list[Shape]:
        return _unique([shape_of(t, self.env or DimEnv(), call) for t, call in self.types])


Resolver = Callable[[str, Point], "Binding | None"]


class Index:
    """Hits by position, and the names each body binds (for completion)."""

    def __init__(self, file: str, hits: list[Hit], scopes: dict[str, list[Binding]], top: list[Binding],
                 blocks: dict[str, ir.BlockDef], model: ir.BlockDef | None):
        self.file = file
        self.hits = hits
        self.scopes = scopes  # bindings by block or model name, in source order
        self.top = top  # params, the spec's own and imported ones
        self.blocks = blocks  # user blocks by name, imported ones included
        self.model = model

    def at(self, point: Point) -> Hit | None:
        """The innermost hit whose span holds ``point``."""
        found = [h for h in self.hits if contains(h.span, point, self.file)]
        return min(found, key=lambda h: size(h.span)) if found else None

    def names_in(self, owner: str | None) -> list[Binding]:
        """The names a body sees (its own bindings last, so that they win), params first. The
        train section sees the model's names, even before an analysis with a train section."""
        if owner == "train" and owner not in self.scopes and self.model is not None:
            owner = self.model.name
        return [*self.top, *(self.scopes.get(owner, []) if owner else [])]


def build_index(analysis: Analysis, lines: Sequence[str]) -> Index:
    return _Builder(analysis, lines).build()


# --------------------------------------------------------------------------- types


def _key(span: Span) -> SpanKey:
    return (span.file, span.line, span.col, span.end_line, span.end_col)


def _programs(prog: Program, call: Span | None = None) -> Iterator[tuple[Program, Span | None]]:
    """The model's program and every user block's program inside it, with the call it is for."""
    yield prog, call
    for module in prog.modules.values():
        if module.kind == "user" and module.program is not None:
            yield from _programs(module.program, module.span)


def _nodes_by_span(prog: Program | None) -> dict[SpanKey, list[tuple[PNode, Span | None]]]:
    out: dict[SpanKey, list[tuple[PNode, Span | None]]] = {}
    if prog is None:
        return out
    for sub, call in _programs(prog):
        for node in sub.nodes:
            out.setdefault(_key(node.span), []).append((node, call))
    return out


def shape_of(t: TensorType, env: DimEnv, call: Span | None = None) -> Shape:
    """``t`` with each symbol replaced by its representative (the name the user wrote),
    and the sizes those symbols are bound to."""
    dims: list[object] = []
    sizes: dict[str, str] = {}
    for d in t.shape:
        if isinstance(d, Sym):
            renamed = {s: Sym(env.find(s)) for s in d.symbols if env.find(s) != s}
            d = d.substitute(renamed) if renamed else d
            for s in d.symbols if isinstance(d, Sym) else ():
                value = env.resolve(Sym(s))
                if isinstance(value, int):
                    origin = env.origin.get(s)
                    sizes[s] = f"{s} = {value}" + (f" ({'from the data' if origin == 'data' else origin})"
                                                   if origin in ("data", "given") else "")
        dims.append(d)
    text = str(TensorType(tuple(dims), t.dtype, t.variadic))  # type: ignore[arg-type]
    return Shape(text, ", ".join(sizes.values()), t.why, call)


def _unique(shapes: list[Shape]) -> list[Shape]:
    seen: set[str] = set()
    out = []
    for s in shapes:
        if s.text not in seen:
            seen.add(s.text)
            out.append(s)
    return out


# --------------------------------------------------------------------------- the walk


def _end(span: Span) -> Point:
    return (span.end_line, span.end_col) if span.end_line else (span.line, span.col)


def _start(span: Span) -> Point:
    return (span.line, span.col)


def _head(span: Span, word: str) -> Span:
    """A span of ``word``'s length at the start of ``span`` (a keyword argument's name)."""
    return Span(file=span.file, line=span.line, col=span.col, end_line=span.line, end_col=span.col + len(word))


class _Builder:
    def __init__(self, analysis: Analysis, lines: Sequence[str]):
        self.analysis = analysis
        self.lines = lines
        self.file = analysis.spec.file
        self.nodes = _nodes_by_span(analysis.program)
        self.env = analysis.program.env if analysis.program is not None else DimEnv()
        self.hits: list[Hit] = []
        self.scopes: dict[str, list[Binding]] = {}
        self.top: list[Binding] = []
        self.in_model = False

    def build(self) -> Index:
        spec, res = self.analysis.spec, self.analysis.resolved
        for p in spec.params:
            self.top.append(self._param(p))
        for name, value in res.params.items():  # imported params: definition jumps to their file
            if value.span.file != self.file and value.span.known:
                self.top.append(Binding(name, "param", value.span, detail=f"param {name} = {spell(value.value)}"))
        for use in spec.uses:
            self.hits.append(Hit(use.span, path=use_target(spec.file, use.path)))
        for b in spec.blocks:
            self._body_of(b)
        if spec.model is not None:
            self._body_of(spec.model)
        if spec.train is not None:
            self._train(spec.train)
        return Index(self.file, self.hits, self.scopes, self.top, dict(res.blocks), spec.model)

    # ---------------------------------------------------------------- definitions

    def _param(self, p: ir.Param) -> Binding:
        value = self.analysis.resolved.params.get(p.name)
        detail = f"param {p.name} = " + (spell(value.value) if value is not None else expr_to_text(p.value))
        b = Binding(p.name, "param", self._name_span(p.span, p.name, "param"), detail=detail)
        self.hits.append(Hit(b.span, binding=b))
        self._expr(p.value, self._in([]))
        return b

    def _name_span(self, span: Span, name: str, keyword: str = "") -> Span:
        return name_span(self.lines, span, name, keyword)

    def _body_of(self, bdef: ir.BlockDef) -> None:
        scope: list[Binding] = []
        self.scopes[bdef.name] = scope
        self.in_model = bdef.is_model
        self.hits.append(Hit(bdef.name_span or bdef.span, func=bdef.name))
        model_args = self.analysis.resolved.model_args if bdef.is_model else {}
        for p in bdef.params:
            kind = "model param" if bdef.is_model else "block param"
            detail = f"{p.name}: {p.type or 'any'}" + (f" = {expr_to_text(p.default)}" if p.default else "")
            if p.name in model_args:
                detail += f"  (value {spell(model_args[p.name].value)})"
            b = Binding(p.name, kind, self._name_span(p.span, p.name), detail=f"{detail}, a param of `{bdef.name}`")
            scope.append(b)
            self.hits.append(Hit(b.span, binding=b))
            if p.default is not None:
                self._expr(p.default, self._in(scope))
        self._statements(bdef.body, scope)

    def _statements(self, body: Sequence[object], scope: list[Binding]) -> None:
        for stmt in body:
            if isinstance(stmt, ir.Input):
                self._input(stmt, scope)
            elif isinstance(stmt, ir.Assign):
                self._assign(stmt, scope)
            elif isinstance(stmt, ir.Output):
                self._output(stmt, scope)
            elif isinstance(stmt, ir.Repeat):
                self._repeat(stmt, scope)

    def _input(self, stmt: ir.Input, scope: list[Binding]) -> None:
        if stmt.shape is not None:
            self._shape(stmt.shape, scope)
        nodes = [(n.types[0], call) for n, call in self.nodes.get(_key(stmt.span), []) if n.kind == "input" and n.types]
        # a block's input is what its call passes, and has that value's reason
        types = [(t if self.in_model else t.with_shape(t.shape, t.why or "the call passes it"), call) for t, call in nodes]
        given = None
        if not types and stmt.shape is not None:  # a block not called with tensors (an MoE expert)
            given = [Shape(f"{shape_to_text(stmt.shape)} {stmt.dtype or ''}".strip())]
        b = Binding(stmt.name, "input", self._name_span(stmt.span, stmt.name, "input"),
                    visible=_end(stmt.span), types=types, env=self.env, given=given)
        scope.append(b)
        self.hits.append(Hit(b.span, binding=b))

    def _output(self, stmt: ir.Output, scope: list[Binding]) -> None:
        if stmt.shape is not None:
            self._shape(stmt.shape, scope)
        span = self._name_span(stmt.span, stmt.name, "output")
        self.hits.append(Hit(span, binding=self._resolve(stmt.name, _start(stmt.span), scope)))

    def _assign(self, stmt: ir.Assign, scope: list[Binding]) -> None:
        self._expr(stmt.value, self._in(scope))
        value = stmt.value
        nodes = [(n, call) for n, call in self.nodes.get(_key(value.span), []) if n.var == stmt.targets[0].name]
        alias = self._resolve(value.id, _start(stmt.span), scope) if isinstance(value, ir.Name) else None
        for i, target in enumerate(stmt.targets):
            b = Binding(target.name, "tensor", target.span, visible=_end(stmt.span), env=self.env)
            if alias is not None:
                b.kind, b.detail, b.types, b.given = alias.kind, alias.detail, alias.types, alias.given
            elif isinstance(value, ir.Call) and not nodes and self._is_block_value(value):
                b.kind = "instance"
                b.detail = f"{target.name} = {expr_to_text(value)}  # one block: every call shares its weights"
            else:
                b.types = [(n.types[i], call) for n, call in nodes if i < len(n.types)]
            scope.append(b)
            self.hits.append(Hit(b.span, binding=b))

    def _is_block_value(self, call: ir.Call) -> bool:
        return not call.args and (call.func[:1].isupper() or call.func in self.analysis.resolved.blocks)

    def _repeat(self, stmt: ir.Repeat, scope: list[Binding]) -> None:
        self._expr(stmt.count, self._in(scope))
        if stmt.var:
            header = Span(file=stmt.span.file, line=stmt.count.span.end_line or stmt.span.line,
                          col=stmt.count.span.end_col or stmt.span.col, end_line=stmt.span.end_line,
                          end_col=stmt.span.end_col)
            b = Binding(stmt.var, "loop variable", self._name_span(header, stmt.var), visible=_start(stmt.span),
                        until=_end(stmt.span), detail=f"{stmt.var}: the copy's number, from 0, in `repeat`")
            scope.append(b)
            self.hits.append(Hit(b.span, binding=b))
        self._statements(stmt.body, scope)

    # ---------------------------------------------------------------- uses

    def _resolve(self, name: str, point: Point, scope: list[Binding]) -> Binding | None:
        for b in reversed(scope):
            if b.name == name and b.visible <= point <= b.until:
                return b
        return next((b for b in reversed(self.top) if b.name == name), None)

    def _shape(self, shape: ir.ShapeSpec, scope: list[Binding]) -> None:
        for d in shape.dims:
            for node in d.walk():
                if not isinstance(node, ir.Name):
                    continue
                b = self._resolve(node.id, _start(node.span), scope)
                if b is not None:
                    self.hits.append(Hit(node.span, binding=b))
                elif node.id[:1].isupper():  # a symbolic dim: the model's sizes; a block's are its own per call
                    types: Typed = [(TensorType((Sym(node.id),)), None)] if self.in_model else []
                    self.hits.append(Hit(node.span, dim=node.id, types=types, env=self.env))

    def _in(self, scope: list[Binding]) -> Resolver:
        return lambda name, point: self._resolve(name, point, scope)

    def _expr(self, expr: object, resolve: Resolver) -> None:
        if not isinstance(expr, ir.Node):
            return
        for node in expr.walk():
            if isinstance(node, ir.Name):
                b = resolve(node.id, _start(node.span))
                if b is not None:
                    self.hits.append(Hit(node.span, binding=b))
            elif isinstance(node, ir.Call):
                self._call(node, resolve)

    def _call(self, call: ir.Call, resolve: Resolver) -> None:
        fspan = call.func_span if call.func_span.known else call.span
        local = resolve(call.func, _start(call.span))
        if local is not None and local.kind == "instance":
            self.hits.append(Hit(fspan, binding=local))
        else:
            outs = [(t, c) for n, c in self.nodes.get(_key(call.span), []) for t in n.types]
            self.hits.append(Hit(fspan, func=call.func, types=outs, env=self.env))
        for kw in call.kwargs:
            self.hits.append(Hit(_head(kw.span, kw.name), func=call.func, keyword=kw.name))

    # ---------------------------------------------------------------- the train section

    def _train(self, section: ir.TrainSection) -> None:
        """Names in the train section are the model's final values, the data's fields and params."""
        model = self.analysis.spec.model
        final: dict[str, Binding] = {}
        for b in self.scopes.get(model.name, []) if model is not None else []:
            if b.kind != "loop variable":
                final[b.name] = b
        data = section.get("data")
        fields: dict[str, Binding] = {}
        for name, t in (self.analysis.fields or {}).items():
            source = expr_to_text(data.value) if data is not None else "the data"
            shape = shape_of(t, self.env)
            fields[name] = Binding(name, "data field", data.value.span if data is not None else section.span,
                                   given=[Shape(shape.text, shape.sizes, f"it is a field of {source}")])
        self.scopes["train"] = [*fields.values(), *final.values()]

        def resolve(name: str, point: Point) -> Binding | None:
            return final.get(name) or fields.get(name) or self._resolve(name, point, [])

        for entry in section.entries:
            self.hits.append(Hit(entry.key_span if entry.key_span.known else entry.span, train_key=entry.key))
            self._expr(entry.value, resolve)
