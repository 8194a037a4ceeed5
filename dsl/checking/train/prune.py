"""The static side of ``prune = magnitude(...)``: its arguments and the layers it names. Pure Python.

The schedule and what it does are described with the hook that applies it
(:mod:`dsl.training.hooks.pruning`, Zhu & Gupta 2017).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dsl.language.diagnostics import Span, did_you_mean
from dsl.language.ir import Assign, BlockDef, Call, Input, ListExpr, Name, Str, TrainEntry

if TYPE_CHECKING:
    from dsl.checking.train.config import Constants

METHODS = ("magnitude",)


class MagnitudeArgs(BaseModel):
    """The constant arguments of ``magnitude(...)``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sparsity: float = Field(ge=0, lt=1, description="final sparsity s_f of each pruned layer")
    initial: float = Field(0.0, ge=0, lt=1, description="sparsity s_i of the first pruning step")
    start: int = Field(0, ge=0, description="epochs finished before the first pruning step (t0)")
    end: int = Field(gt=0, description="epochs finished at the last pruning step (t0 + n Δt)")
    every: int = Field(1, gt=0, description="epochs between pruning steps (Δt)")
    scope: Literal["layer", "global"] = Field("layer", description="rank weights per layer or over all of them")


@dataclass
class Prune:
    """A resolved ``prune = magnitude(...)``; ``layers`` empty means every Linear."""

    args: MagnitudeArgs
    layers: tuple[str, ...] = ()
    spans: dict[str, tuple[Span, ...]] = field(default_factory=dict)  # statements assigning each layer

    def at(self, t: int) -> float:
        """The cubic schedule s_t for a pruning step at t (start <= t <= end)."""
        a = self.args
        frac = (t - a.start) / (a.end - a.start)
        return a.sparsity + (a.initial - a.sparsity) * (1.0 - frac) ** 3

    def scheduled(self, t: int) -> float:
        """The sparsity in effect once t epochs are finished (that of the last step <= t)."""
        a = self.args
        if t < a.start:
            return 0.0
        if t >= a.end:
            return a.sparsity
        return self.at(a.start + (t - a.start) // a.every * a.every)

    def steps(self) -> list[int]:
        """The epochs t at which pruning steps run."""
        a = self.args
        return sorted(set(range(a.start, a.end, a.every)) | {a.end})


# --------------------------------------------------------------------------- spec side (pure)


def _assigned(model: BlockDef, names: dict[str, list[Span]], inputs: set[str]) -> None:
    """Every name the model's body assigns (with the statements' spans), and its inputs."""
    for node in model.walk():
        if isinstance(node, Assign):
            for target in node.targets:
                names.setdefault(target.name, []).append(node.span)
        elif isinstance(node, Input):
            inputs.add(node.name)


def resolve_prune(ctx: Constants, e: TrainEntry) -> Prune | None:
    """Check ``prune = magnitude(...)``; every problem becomes a diagnostic on ``ctx``."""
    value = e.value
    if not isinstance(value, Call) or value.args:
        ctx.err("E0501", "`prune` must be magnitude(sparsity=..., end=...) with keyword arguments", value.span,
                help="e.g. prune = magnitude(sparsity=0.9, start=0, end=30, every=1)")
        return None
    if value.func not in METHODS:
        span = value.func_span if value.func_span.known else value.span
        ctx.err("E0501", f"unknown pruning method `{value.func}`", span,
                help=did_you_mean(value.func, METHODS) or f"methods: {', '.join(METHODS)}")
        return None
    consts: dict[str, Any] = {}
    layer_expr = None
    ok = True
    for k in value.kwargs:
        if k.name == "layers":
            layer_expr = k.value
            continue
        v = ctx.const(k.value, f"`{k.name}` of `magnitude`")
        ok = ok and v is not None
        consts[k.name] = v
    layers = _layers(ctx, layer_expr) if layer_expr is not None else ((), {})
    if not ok or layers is None:
        return None
    args = ctx.validate(MagnitudeArgs, consts, value, "magnitude")
    if args is None:
        return None
    if args.end <= args.start:
        span = next((k.value.span for k in value.kwargs if k.name == "end"), value.span)
        ctx.err("E0401", "invalid `end` for `magnitude`: pruning must end after it starts", span,
                label=f"end={args.end}, start={args.start}", help="give end > start (both count finished epochs)")
        return None
    if args.initial > args.sparsity:
        span = next((k.value.span for k in value.kwargs if k.name == "initial"), value.span)
        ctx.err("E0401", "invalid `initial` for `magnitude`: the initial sparsity exceeds the final one", span,
                label=f"initial={args.initial}, sparsity={args.sparsity}")
        return None
    return Prune(args, *layers)


def _layers(ctx: Constants, expr: Any) -> tuple[tuple[str, ...], dict[str, tuple[Span, ...]]] | None:
    """The layer names of ``layers=[...]``, each checked against what the model assigns."""
    items = expr.items if isinstance(expr, ListExpr) else (expr,)
    model = ctx.spec.model
    assigned: dict[str, list[Span]] = {}
    inputs: set[str] = set()
    if model is not None:
        _assigned(model, assigned, inputs)
    names: list[str] = []
    ok = True
    for item in items:
        if not isinstance(item, (Name, Str)):
            ctx.err("E0501", "each of `layers` must name a layer of the model, e.g. layers=[h, logits]", item.span)
            ok = False
            continue
        name = item.id if isinstance(item, Name) else item.value
        if model is None:
            names.append(name)
        elif name in inputs:
            ctx.err("E0501", f"`{name}` is a model input: it has no weights to prune", item.span,
                    help="name a layer the model assigns, e.g. `h` in `h = Linear(x, out=64)`")
            ok = False
        elif name not in assigned:
            ctx.err("E0503", f"unknown layer `{name}` in `prune`", item.span, label="the model assigns no such name",
                    help=did_you_mean(name, assigned) or f"layers: {', '.join(assigned)}")
            ok = False
        else:
            names.append(name)
    if not ok:
        return None
    return tuple(names), {n: tuple(assigned.get(n, ())) for n in names}
