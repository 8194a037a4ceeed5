"""Resource guards: estimate a checked model's size before anything is allocated.

Pure Python. From the checked :class:`~dsl.checking.program.Program` alone (symbolic
shapes resolved as far as they are known) this module computes

* the number of parameters, module by module, with each block's
  ``count_params`` hook (``Decl.count_params``; block values and user blocks
  recurse), and
* the memory of the activations of one forward pass: every value the graph
  computes, elements times dtype width, with unknown sizes counted as 1 (a lower
  bound).

:func:`check_budget` turns an estimate over the limits into diagnostics that
show the estimate and point at the node responsible (the biggest contributor).
``dsl.api.analyse`` runs it after a clean check, so ``dsl check``,
``dsl compile``, ``dsl train``, ``dsl.check`` and ``dsl.compile`` all refuse a
model that is too large before torch builds a single tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dsl.checking.program import ModuleSpec, PNode, Program, describe_params
from dsl.language.diagnostics import Diagnostic, Note, Span
from dsl.language.registry import BuildCall, BuildError
from dsl.language.shapes import TensorType

DEFAULT_MAX_PARAMS = 1_000_000_000  # --max-params / max_params=
MAX_ACTIVATION_BYTES = 256 * 2**30  # one forward pass, known sizes only
MAX_DIM = 2**31 - 1  # one dimension of one tensor

_DTYPE_BYTES = {"float": 4, "long": 8, "int": 4, "bool": 1}


@dataclass
class Contribution:
    """What one module (or one node's outputs) adds to the estimate."""

    what: str  # `Linear(out=64)` at ...
    span: Span
    amount: int


@dataclass
class Estimate:
    """Parameters and activation bytes; ``unknown`` lists modules whose parameter
    count could not be computed (a size unknown before the data binds it, or a
    plugin block without ``count_params``), so ``params`` is then a lower bound."""

    params: int = 0
    activation_bytes: int = 0
    modules: list[Contribution] = field(default_factory=list)
    activations: list[Contribution] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    too_large_dims: list[tuple[PNode, int]] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not self.unknown


def human(n: int | float) -> str:
    """``1234567`` -> ``1.23 M``; small numbers as they are."""
    for size, unit in ((10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "k")):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return str(int(n))


def human_bytes(n: int) -> str:
    for size, unit in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


# --------------------------------------------------------------------------- estimating


def _module_label(spec: ModuleSpec, key: str) -> str:
    if spec.kind == "decl" and spec.decl is not None:
        args = describe_params(spec.params)
        return f"{spec.decl.name}({args})"
    if spec.kind == "value" and spec.value is not None:
        return spec.value.describe()
    if spec.program is not None:
        return f"block {spec.program.name}"
    return key


class _Types:
    """``env.resolve_type`` with resolved dims cached: a model unrolled from a
    ``repeat`` has thousands of types over the same few symbols."""

    def __init__(self, prog: Program) -> None:
        self.env = prog.env
        self.dims: dict[object, object] = {}

    def __call__(self, t: TensorType) -> TensorType:
        out = []
        for d in t.shape:
            if d is None or isinstance(d, int):
                out.append(d)
                continue
            if d not in self.dims:
                self.dims[d] = self.env.resolve(d)
            out.append(self.dims[d])
        return TensorType(tuple(out), t.dtype, t.variadic, t.why)


def module_params(prog: Program, spec: ModuleSpec, resolve: _Types | None = None) -> int | None:
    """Parameters of one module of ``prog``; None when they cannot be known yet."""
    resolve = resolve or _Types(prog)
    try:
        if spec.kind == "decl":
            if spec.decl is None or spec.decl.count_params is None:
                return None
            ins = {k: resolve(t) for k, t in spec.in_types.items()}
            outs = [resolve(t) for t in spec.out_types]
            return int(spec.decl.count_params(BuildCall(spec.decl.name, ins, outs), spec.params))
        if spec.kind == "value":
            if spec.value is None:
                return None
            count = spec.value.count_params([resolve(t) for t in spec.in_types.values()])
            return None if count is None else int(count)
        if spec.program is not None:
            sub = estimate(spec.program)
            return sub.params if sub.exact else None
    except (BuildError, ValueError, KeyError, IndexError, TypeError, ArithmeticError):
        return None  # a size the checker left symbolic: not known before the data binds it
    return None


def _elements(t: TensorType) -> int:
    n = 1
    for d in t.shape:
        if isinstance(d, int):
            n *= max(d, 0)
    return n


def estimate(prog: Program) -> Estimate:
    """The parameter and activation estimate of a checked program (recursing into user blocks)."""
    est = Estimate()
    resolve = _Types(prog)
    for key, spec in prog.modules.items():
        count = module_params(prog, spec, resolve)
        label = _module_label(spec, key)
        if count is None:
            est.unknown.append(label)
            if spec.program is not None:  # a user block: its known part still counts
                sub = estimate(spec.program)
                est.params += sub.params
            continue
        est.params += count
        est.modules.append(Contribution(label, spec.span, count))
    for node in prog.nodes:
        size = 0
        for t in node.types:
            rt = resolve(t)
            for d in rt.shape:
                if isinstance(d, int) and d > MAX_DIM:
                    est.too_large_dims.append((node, d))
                    break
            size += _elements(rt) * _DTYPE_BYTES.get(rt.dtype, 4)
        if node.kind == "user" and node.module in prog.modules:
            sub_prog = prog.modules[node.module].program
            if sub_prog is not None:
                sub = estimate(sub_prog)
                size += sub.activation_bytes
                est.too_large_dims.extend(sub.too_large_dims)
        est.activation_bytes += size
        est.activations.append(Contribution(f"`{node.var or node.name}` ({node.op})", node.span, size))
    return est


# --------------------------------------------------------------------------- limits


def _grouped(contribs: list[Contribution]) -> list[Contribution]:
    """One entry per place in the source: the copies a ``repeat`` unrolls add up."""
    groups: dict[tuple[str, Span], list[Contribution]] = {}
    for c in contribs:
        groups.setdefault((c.what, c.span), []).append(c)
    out = []
    for (what, span), cs in groups.items():
        label = what if len(cs) == 1 else f"{what} ({len(cs):,} copies)"
        out.append(Contribution(label, span, sum(c.amount for c in cs)))
    return sorted(out, key=lambda c: -c.amount)


def _top(ranked: list[Contribution], total: int, human_fn, n: int = 3) -> list[Note]:
    return [
        Note(f"{c.what}: {human_fn(c.amount)} ({100 * c.amount / max(total, 1):.0f}%)", c.span)
        for c in ranked[:n]
        if c.amount
    ]


def check_budget(
    prog: Program,
    max_params: int | None = DEFAULT_MAX_PARAMS,
    max_activation_bytes: int | None = MAX_ACTIVATION_BYTES,
) -> list[Diagnostic]:
    """E0802 when the model is over a limit, E0801 for a dimension over MAX_DIM."""
    est = estimate(prog)
    diags: list[Diagnostic] = []
    seen: set[int] = set()
    for node, d in est.too_large_dims:
        if d in seen:  # reported where it first appears, not at every value it flows into
            continue
        seen.add(d)
        diags.append(
            Diagnostic(
                "E0801",
                f"dimension of {d:,} in `{node.var or node.name}` exceeds the limit of {MAX_DIM:,}",
                node.span,
                label=f"a dimension of {human(d)}",
                help="no tensor can have a dimension this large; check the sizes and params",
            )
        )
    if max_params is not None and est.params > max_params:
        ranked = _grouped(est.modules)
        biggest = ranked[0] if ranked else None
        bound = "" if est.exact else "at least "
        d = Diagnostic(
            "E0802",
            f"model too large: {bound}{est.params:,} parameters ({human(est.params)}), "
            f"the limit is {max_params:,} ({human(max_params)})",
            biggest.span if biggest else prog.span,
            label=f"{biggest.what} holds {biggest.amount:,} parameters" if biggest else "",
            notes=_top(ranked, est.params, human),
            help="make the sizes smaller, or raise the limit: --max-params N on the command line, "
            "max_params=N in Python",
        )
        diags.append(d)
    if max_activation_bytes is not None and est.activation_bytes > max_activation_bytes and not seen:
        ranked = _grouped(est.activations)
        biggest = ranked[0]
        diags.append(
            Diagnostic(
                "E0802",
                f"activations too large: one forward pass needs at least {human_bytes(est.activation_bytes)}, "
                f"the limit is {human_bytes(max_activation_bytes)}",
                biggest.span,
                label=f"{biggest.what} alone is {human_bytes(biggest.amount)}",
                notes=_top(ranked, est.activation_bytes, human_bytes),
                help="use smaller sizes (a smaller batch, fewer nodes, narrower layers)",
            )
        )
    return diags


__all__ = [
    "DEFAULT_MAX_PARAMS",
    "MAX_ACTIVATION_BYTES",
    "MAX_DIM",
    "Estimate",
    "check_budget",
    "estimate",
    "human",
    "module_params",
]
