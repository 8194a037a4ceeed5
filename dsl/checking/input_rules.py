"""What a compiled model's inputs must satisfy, derived from the checked spec. Pure Python.

One rule per model input (dtype, rank, fixed and symbolic dims) and one per index input
(a block input declared ``TensorArg(index_of=...)``: ``GAT``'s ``edge_index`` indexes the
rows of ``x``, an ``Embedding``'s ids lie below ``num``). The runtime guard
(:mod:`dsl.building.guards`) checks them on every call; the checker reads the index rules
too, against the ranges a data source declares (``chars()`` ids into ``Embedding(num=64)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from dsl.checking.program import PNode, Program, Ref
from dsl.language.shapes import Dim, Sym, TensorType


@dataclass(frozen=True)
class DimRule:
    """Axis ``axis`` (counted from the end when the input starts with ``...``) must equal ``want``."""

    axis: int
    want: Dim | None  # int, a Sym over other inputs' symbols, or None for `_`
    label: str  # the dim as the spec writes it, e.g. "F" or "hidden*heads"


@dataclass(frozen=True)
class InputRule:
    name: str
    dtype: str
    rank: int
    variadic: bool
    dims: tuple[DimRule, ...]
    declared: str  # "[B, 64]", for messages


@dataclass(frozen=True)
class IndexRule:
    """Model input ``input`` holds indices in ``[0, bound)`` for block ``block``."""

    input: str
    block: str
    rows_of: str | None = None  # the bound is dim 0 of this model input
    bound: Dim | None = None  # otherwise this dim (an int, or a Sym over input symbols), or no upper bound
    what: str = ""  # how the bound is described: "rows of `x`", "graphs"
    span: Any = field(default=None, compare=False)  # the block's call, for the checker's messages


# --------------------------------------------------------------------------- rules from the spec


def input_rules(prog: Program) -> tuple[InputRule, ...]:
    """One rule per model input, in ``forward``'s argument order."""
    rules = []
    for name, ref in prog.inputs.items():
        written: TensorType = prog.node(ref.node).types[ref.index]
        t = prog.type_of(ref)
        n = len(t.shape)
        dims = []
        for i, (want, raw) in enumerate(zip(t.shape, written.shape, strict=True)):
            feature_axis = t.dtype == "float" and i == n - 1  # the weights are sized by it: always fixed
            if isinstance(raw, Sym) and raw.name is not None and not feature_axis and _data_bound(prog, raw.name):
                want = Sym(prog.env.find(raw.name))
            label = str(raw) if isinstance(raw, Sym) else str(want)
            dims.append(DimRule(i - n if t.variadic else i, want, label))
        rules.append(InputRule(name, t.dtype, n, t.variadic, tuple(dims), str(written)))
    return tuple(rules)


def _data_bound(prog: Program, symbol: str) -> bool:
    """Whether only the train section's data gave ``symbol`` its size (then the guard leaves it free)."""
    return "data" in (prog.env.origin.get(symbol), prog.env.origin.get(prog.env.find(symbol)))


def index_rules(prog: Program) -> tuple[IndexRule, ...]:
    """Index constraints of the blocks (user blocks included) that model inputs feed directly."""
    rules = _index_rules(prog, {r.node: name for name, r in prog.inputs.items() if r.index == 0})
    unique: dict[tuple[Any, ...], IndexRule] = {}
    for r in rules:  # two GAT layers on one edge list check it once
        unique.setdefault((r.input, r.rows_of, r.bound), r)
    return tuple(unique.values())


def _index_rules(prog: Program, input_of: dict[str, str]) -> list[IndexRule]:
    out: list[IndexRule] = []
    for node in prog.nodes:
        if node.kind == "user":
            out.extend(_user_rules(prog, node, input_of))
            continue
        decl, params = _decl_of(prog, node)
        if decl is None or (decl.inputs and decl.inputs[0].variadic):
            continue
        refs = _arg_refs(decl, node)
        for arg in decl.inputs:
            ref = refs.get(arg.name)
            if not arg.index_of or ref is None or ref.index != 0 or ref.node not in input_of:
                continue
            rule = _rule(prog, input_of[ref.node], decl.name, arg.index_of, refs, params, input_of)
            out.append(replace(rule, span=node.span))
    return out


def _decl_of(prog: Program, node: PNode) -> tuple[Any, Any]:
    if node.decl is not None:
        return node.decl, node.params
    spec = prog.modules.get(node.module) if node.module else None
    value = getattr(spec, "value", None)
    return getattr(value, "decl", None), getattr(value, "params", None)  # a registered block used as a value


def _arg_refs(decl: Any, node: PNode) -> dict[str, Any]:
    if node.decl is None:  # block value: every input positional, in declaration order
        return dict(zip([a.name for a in decl.inputs], node.args, strict=False))
    refs = dict(zip([a.name for a in decl.inputs if not a.optional], node.args, strict=False))
    refs.update(node.kwargs)
    return refs


def _rule(prog: Program, input: str, block: str, index_of: str, refs: dict[str, Any], params: Any,
          input_of: dict[str, str]) -> IndexRule:
    bound_ref = refs.get(index_of)
    if bound_ref is not None:
        if bound_ref.index == 0 and bound_ref.node in input_of:
            return IndexRule(input, block, rows_of=input_of[bound_ref.node], what=f"rows of `{input_of[bound_ref.node]}`")
        return IndexRule(input, block, bound=_rows(prog, bound_ref), what=f"rows of `{index_of}`")
    value = getattr(params, index_of, None)
    return IndexRule(input, block, bound=value if isinstance(value, int) else None, what=f"{index_of}={value}")


def _rows(prog: Program, ref: Ref) -> Dim | None:
    """The first dim of a value, left symbolic when only the data gave it its size."""
    t = prog.node(ref.node).types[ref.index]
    if not t.shape or t.variadic:
        return None
    first = t.shape[0]
    if isinstance(first, Sym) and first.name is not None and _data_bound(prog, first.name):
        return Sym(prog.env.find(first.name))
    return prog.env.resolve(first)


def _user_rules(prog: Program, node: PNode, input_of: dict[str, str]) -> list[IndexRule]:
    """Rules inside a user block whose index input is fed by one of our model inputs."""
    sub = prog.modules[node.module].program if node.module else None
    if sub is None:
        return []
    outer: dict[str, Ref] = dict(zip(sub.inputs, node.args, strict=False))  # inner input -> outer ref
    inner_input_of = {r.node: name for name, r in sub.inputs.items() if r.index == 0}
    out = []
    for rule in _index_rules(sub, inner_input_of):
        ref = outer.get(rule.input)
        if ref is None or ref.index != 0 or ref.node not in input_of:
            continue
        rows_of, bound = None, rule.bound
        if rule.rows_of is not None:
            bref = outer.get(rule.rows_of)
            if bref is not None and bref.index == 0 and bref.node in input_of:
                rows_of = input_of[bref.node]
            elif bref is not None:
                bound = _rows(prog, bref)
        what = f"rows of `{rows_of}`" if rows_of else rule.what
        out.append(IndexRule(input_of[ref.node], rule.block, rows_of=rows_of, bound=bound, what=what))
    return out
