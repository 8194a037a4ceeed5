"""The static side of ``prune = magnitude(...)``: its arguments, the layers it names and what they hold. Pure Python.

The schedule and what it does are described with the hook that applies it
(:mod:`dsl.training.hooks.pruning`, Zhu & Gupta 2017). Here: the constant
arguments (:class:`MagnitudeArgs`), the names of ``layers=[h, logits(sparsity=0.5)]``
against what the model assigns (:func:`resolve_prune`), and, once the model is
checked, whether each named layer holds a weight that pruning masks
(:func:`check_prune`, from the blocks' declared ``prunable`` kinds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dsl.checking.program import ModuleSpec, Program
from dsl.checking.values import DeclValue
from dsl.language.diagnostics import Diagnostic, Span, did_you_mean
from dsl.language.ir import Assign, BlockDef, Call, Input, ListExpr, Name, Str, TrainEntry
from dsl.language.registry import EMBEDDINGS, PROTOTYPES, WEIGHTS

if TYPE_CHECKING:
    from dsl.checking.train.config import Constants, TrainConfig

METHODS = ("magnitude",)


class MagnitudeArgs(BaseModel):
    """The constant arguments of ``magnitude(...)``."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    sparsity: float = Field(ge=0, lt=1, description="final sparsity s_f of each pruned layer")
    initial: float = Field(0.0, ge=0, lt=1, description="sparsity s_i of the first pruning step")
    start: int = Field(0, ge=0, description="epochs finished before the first pruning step (t0)")
    end: int = Field(gt=0, description="epochs finished at the last pruning step (t0 + n Δt)")
    every: int = Field(1, gt=0, description="epochs between pruning steps (Δt)")
    scope: Literal["layer", "global"] = Field("layer", description="rank weights per layer or over all of them")
    embeddings: bool = Field(False, description="also prune Embedding tables")
    prototypes: bool = Field(False, description="also prune learned prototypes: PrototypeHead's prototypes, "
                                                "HopfieldLayer's memory, HopfieldPooling's queries")


class LayerArgs(BaseModel):
    """The arguments of one entry of ``layers``: ``logits(sparsity=0.5)``."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    sparsity: float = Field(ge=0, lt=1, description="final sparsity of this layer's weights")


@dataclass(frozen=True)
class Layer:
    """One entry of ``layers``: a name the model assigns, optionally with its own final sparsity."""

    name: str
    span: Span  # the entry in `layers=[...]`
    statements: tuple[Span, ...]  # the statements that assign the name
    sparsity: float | None = None  # `h(sparsity=0.5)`; None: magnitude's `sparsity`


@dataclass
class Prune:
    """A resolved ``prune = magnitude(...)``; ``layers`` empty means every weight of the model."""

    args: MagnitudeArgs
    layers: tuple[Layer, ...] = ()
    arg_spans: dict[str, Span] = field(default_factory=dict)  # each keyword argument's value
    modules: dict[str, tuple[str, ...]] = field(default_factory=dict)  # the model's modules per layer (check_prune)

    @property
    def kinds(self) -> frozenset[str]:
        """The kinds of weights this config masks (``dsl.language.registry``'s WEIGHTS, ...)."""
        a = self.args
        return frozenset({WEIGHTS} | ({EMBEDDINGS} if a.embeddings else set()) | ({PROTOTYPES} if a.prototypes else set()))

    @property
    def active(self) -> bool:
        """Whether any layer is ever pruned (``--set sparsity=0`` trains the dense model)."""
        return any(s > 0 for s in (self.args.initial, self.args.sparsity, *(x.sparsity or 0 for x in self.layers)))

    def final(self, layer: Layer | None) -> float:
        """The final sparsity s_f of ``layer``'s weights (None: weights chosen by default)."""
        return self.args.sparsity if layer is None or layer.sparsity is None else layer.sparsity

    def at(self, t: int, final: float | None = None) -> float:
        """The cubic schedule s_t for a pruning step at t (start <= t <= end), towards ``final``."""
        a = self.args
        s_f = a.sparsity if final is None else final
        frac = (t - a.start) / (a.end - a.start)
        return s_f + (a.initial - s_f) * (1.0 - frac) ** 3

    def scheduled(self, t: int, final: float | None = None) -> float:
        """The sparsity in effect once t epochs are finished (that of the last step <= t)."""
        a = self.args
        if t < a.start:
            return 0.0
        if t >= a.end:
            return a.sparsity if final is None else final
        return self.at(a.start + (t - a.start) // a.every * a.every, final)

    def steps(self) -> list[int]:
        """The epochs t at which pruning steps run."""
        a = self.args
        return sorted(set(range(a.start, a.end, a.every)) | {a.end})


def _inside(span: Any, outer: Span) -> bool:
    """Whether ``span`` starts inside ``outer`` (same file): a node of the statement ``outer``."""
    if not isinstance(span, Span) or not span.known or span.file != outer.file:
        return False
    if outer.end_line == 0:  # an end-less span: its line
        return span.line == outer.line
    return (outer.line, outer.col) <= (span.line, span.col) < (outer.end_line, outer.end_col)


# --------------------------------------------------------------------------- the train key


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
    layers = _layers(ctx, layer_expr) if layer_expr is not None else ()
    if not ok or layers is None:
        return None
    args = ctx.validate(MagnitudeArgs, consts, value, "magnitude")
    if args is None:
        return None
    spans = {k.name: k.value.span for k in value.kwargs}
    if args.end <= args.start:
        ctx.err("E0401", "invalid `end` for `magnitude`: pruning must end after it starts", spans.get("end", value.span),
                label=f"end={args.end}, start={args.start}", help="give end > start (both count finished epochs)")
        return None
    if args.initial > args.sparsity:
        ctx.err("E0401", "invalid `initial` for `magnitude`: the initial sparsity exceeds the final one",
                spans.get("initial", value.span), label=f"initial={args.initial}, sparsity={args.sparsity}")
        return None
    own = [x for x in layers if x.sparsity is not None]
    for x in layers:
        if x.sparsity is not None and args.initial > x.sparsity:
            ctx.err("E0401", f"invalid `sparsity` for layer `{x.name}`: below the initial sparsity", x.span,
                    label=f"sparsity={x.sparsity}, initial={args.initial}",
                    help="every layer starts at `initial` and ends at its own sparsity")
            return None
    if own and args.scope == "global":
        ctx.err("E0401", "a sparsity per layer needs `scope=\"layer\"`", own[0].span,
                label="scope=\"global\" ranks all the layers' weights together, to one total",
                help="drop scope=\"global\", or give every layer magnitude's `sparsity`")
        return None
    return Prune(args, layers, spans)


def _layers(ctx: Constants, expr: Any) -> tuple[Layer, ...] | None:
    """The entries of ``layers=[h, logits(sparsity=0.5)]``, each name checked against what the model assigns."""
    items = expr.items if isinstance(expr, ListExpr) else (expr,)
    model = ctx.spec.model
    assigned: dict[str, list[Span]] = {}
    inputs: set[str] = set()
    if model is not None:
        _assigned(model, assigned, inputs)
    layers: dict[str, Layer] = {}
    ok = True
    for item in items:
        own: float | None = None
        if isinstance(item, (Name, Str)):
            name, span = (item.id if isinstance(item, Name) else item.value), item.span
        elif isinstance(item, Call) and not item.args:
            name, span = item.func, (item.func_span if item.func_span.known else item.span)
            consts = {k.name: ctx.const(k.value, f"`{k.name}` of layer `{name}`") for k in item.kwargs}
            checked = ctx.validate(LayerArgs, consts, item, name) if None not in consts.values() else None
            if checked is None:
                ok = False
                continue
            own = checked.sparsity
        else:
            ctx.err("E0501", "each of `layers` must name a layer of the model, e.g. layers=[h, logits(sparsity=0.5)]",
                    item.span)
            ok = False
            continue
        if model is None:
            layers[name] = Layer(name, span, (), own)
        elif name in inputs:
            ctx.err("E0501", f"`{name}` is a model input: it has no weights to prune", span,
                    help="name a layer the model assigns, e.g. `h` in `h = Linear(x, out=64)`")
            ok = False
        elif name not in assigned:
            ctx.err("E0503", f"unknown layer `{name}` in `prune`", span, label="the model assigns no such name",
                    help=did_you_mean(name, assigned) or f"layers: {', '.join(assigned)}")
            ok = False
        elif name in layers:
            ctx.err("E0501", f"layer `{name}` is named twice in `prune`", span, label="named again here")
            ok = False
        else:
            layers[name] = Layer(name, span, tuple(assigned[name]), own)
    return tuple(layers.values()) if ok else None


# --------------------------------------------------------------------------- against the checked model


def _tied(prog: Program) -> set[str]:
    """The modules whose weight another module shares (``Linear(h, tie=emb)``): pruning leaves it dense."""
    return {spec.tie for spec in prog.modules.values() if spec.tie is not None}


def _module_kinds(prog: Program, module: str, tied: set[str]) -> frozenset[str] | None:
    """What pruning may mask in ``module`` of ``prog``; None when a block does not declare it."""
    spec: ModuleSpec = prog.modules[module]
    if spec.kind == "user" and spec.program is not None:
        return _program_kinds(spec.program)
    if spec.kind == "decl" and spec.decl is not None:
        kinds = spec.decl.prunable_kinds(spec.params)
    elif isinstance(spec.value, DeclValue):
        kinds = spec.value.decl.prunable_kinds(spec.value.params)
    else:  # a user block or a plugin's value: not looked into
        return None
    if kinds is not None and module in tied:
        return kinds - {WEIGHTS, EMBEDDINGS}
    return kinds


def _program_kinds(prog: Program) -> frozenset[str] | None:
    found: set[str] = set()
    tied = _tied(prog)
    for module in prog.modules:
        kinds = _module_kinds(prog, module, tied)
        if kinds is None:
            return None
        found |= kinds
    return frozenset(found)


def check_prune(cfg: TrainConfig, prog: Program) -> list[Diagnostic]:
    """Find the modules each named layer selects (``cfg.prune.modules``, what the hook prunes); a layer
    with no weight that pruning masks is an error, and so are pruned prototypes that are pushed."""
    p = cfg.prune
    if p is None:
        return []
    out: list[Diagnostic] = []
    tied = _tied(prog)
    for layer in p.layers:
        # The blocks its statements call, and the named instances they define (`emb = Embedding(...)`).
        called = {n.module for n in prog.nodes if n.module and any(_inside(n.span, s) for s in layer.statements)}
        chosen: list[str] = []
        found: set[str] = set()
        unknown = False
        for module, spec in prog.modules.items():
            if module not in called and not any(_inside(spec.span, s) for s in layer.statements):
                continue
            kinds = _module_kinds(prog, module, tied)
            unknown = unknown or kinds is None
            found |= kinds or set()
            if kinds is None or kinds & p.kinds:
                chosen.append(module)
        p.modules[layer.name] = tuple(chosen)
        if chosen or unknown:
            continue
        option = next((k for k in (EMBEDDINGS, PROTOTYPES) if k in found), None)
        out.append(Diagnostic(
            "E0501", f"layer `{layer.name}` has no weights that `prune` masks", layer.span,
            label=f"it holds {option} only" if option else "the statements assigning it call no block with weights",
            help=f"add {option}=true to prune {option} too" if option else
            "name a layer that calls a block with weight matrices (Linear, Conv2d, LSTM, MultiheadAttention, GAT, "
            "...); biases, norms, routers and shared (tied) weights stay dense",
        ))
    if p.args.prototypes and (cfg.push_every is not None or cfg.push_epochs() is not None):
        # A pruned parameter is recomputed as orig * mask before each forward: a push written
        # into it would be lost without a word.
        out.append(Diagnostic(
            "E0501", "the push moves the prototypes onto training embeddings, so they cannot also be pruned",
            p.arg_spans["prototypes"], label="prototypes=true masks them",
            help="drop prototypes=true (the prototypes stay dense), or the push (`push_every`, `stages`)",
        ))
    return out
