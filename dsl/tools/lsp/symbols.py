"""Document symbols: params, `use`s, blocks and the model (with their inputs, names
and outputs), the train section (with its keys)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lsprotocol import types

from dsl.language import ir
from dsl.language.diagnostics import Span
from dsl.language.printer import expr_to_text, shape_to_text

Kind = types.SymbolKind
ToRange = Callable[[Span], types.Range]


def document_symbols(spec: ir.Spec, to_range: ToRange) -> list[types.DocumentSymbol]:
    out = [_symbol(p.name, Kind.Constant, p.span, to_range, expr_to_text(p.value)) for p in spec.params]
    out += [_symbol(u.path, Kind.File, u.span, to_range, "use") for u in spec.uses]
    out += [_block(b, to_range) for b in spec.blocks]
    if spec.model is not None:
        out.append(_block(spec.model, to_range))
    if spec.train is not None:
        keys = [_symbol(e.key, Kind.Property, e.span, to_range, expr_to_text(e.value)) for e in spec.train.entries]
        out.append(_symbol("train", Kind.Namespace, spec.train.span, to_range, children=keys))
    return out


def _block(b: ir.BlockDef, to_range: ToRange) -> types.DocumentSymbol:
    children = _statements(b.body, to_range)
    kind = "model" if b.is_model else "block"
    return _symbol(b.name, Kind.Class, b.span, to_range, kind, children, b.name_span)


def _statements(body: Sequence[object], to_range: ToRange) -> list[types.DocumentSymbol]:
    out = []
    for s in body:
        if isinstance(s, ir.Input | ir.Output):
            shape = shape_to_text(s.shape) if s.shape is not None else ""
            kind = "input" if isinstance(s, ir.Input) else "output"
            out.append(_symbol(s.name, Kind.Field, s.span, to_range, f"{kind} {shape}".strip()))
        elif isinstance(s, ir.Assign):
            detail = expr_to_text(s.value)
            out += [_symbol(t.name, Kind.Variable, s.span, to_range, detail, selection=t.span) for t in s.targets]
        elif isinstance(s, ir.Repeat):
            out.append(_symbol(f"repeat {expr_to_text(s.count)}", Kind.Namespace, s.span, to_range,
                               children=_statements(s.body, to_range)))
    return out


def _symbol(name: str, kind: types.SymbolKind, span: Span, to_range: ToRange, detail: str = "",
            children: list[types.DocumentSymbol] | None = None, selection: Span | None = None) -> types.DocumentSymbol:
    whole = to_range(span)
    chosen = to_range(selection) if selection is not None and selection.known else whole
    if not _inside(chosen, whole):  # the protocol wants the selection inside the range
        chosen = whole
    return types.DocumentSymbol(name=name, kind=kind, range=whole, selection_range=chosen, detail=detail or None,
                                children=children or None)


def _inside(inner: types.Range, outer: types.Range) -> bool:
    def key(p: types.Position) -> tuple[int, int]:
        return (p.line, p.character)

    return key(outer.start) <= key(inner.start) and key(inner.end) <= key(outer.end)
