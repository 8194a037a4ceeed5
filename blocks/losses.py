"""Loss functions (no weights): scalars to minimise, written in the train section's ``loss``.

    cross_entropy(logits, y)  = mean_r −log softmax(logits_r)[y_r]     torch.nn.functional.cross_entropy
    nll(log_probs, y)         = mean_r −log_probs_r[y_r]               torch.nn.functional.nll_loss
    mse(a, b)                 = mean (a − b)²                           torch.nn.functional.mse_loss
    l1(a, b)                  = mean |a − b|                            torch.nn.functional.l1_loss
    bce_with_logits(z, t)     = mean −[t log σ(z) + (1 − t) log(1 − σ(z))]
    smooth_l1(a, b)           = mean of ½(a − b)²/β where |a − b| < β, else |a − b| − ½β
    kl_div(log_q, p)          = Σ p (log p − log_q) / rows             torch's kl_div, reduction="batchmean"
    triplet_margin(a, p, n)   = mean_r max(‖a_r − p_r‖ − ‖a_r − n_r‖ + margin, 0)   (Schroff et al. 2015)
    cosine_embedding(a, b, y) = mean_r (1 − cos(a_r, b_r) if y_r = 1 else max(0, cos(a_r, b_r) − margin))
    cluster_cost(d, y)        = mean_b min_{j: class(j) = y_b} d_bj    ProtoPNet's Clst (Chen et al. 2019)
    separation_cost(d, y)     = mean_b min_{j: class(j) ≠ y_b} d_bj    ProtoPNet's Sep (subtract it)
    l1_last_layer()           = Σ |w_cj| over the prototype heads' last layers at wrong-class positions

The class dim is last: logits [..., C] go with targets [...] (a language model's
[B, T, V] with [B, T]). ``mask=`` (bool) selects the rows that count: the
target's shape, or a leading part of it (``mask=train_mask`` on a graph's
nodes). A loss is a scalar; combine terms with ``+ - *`` and constants.

Shapes:
    cross_entropy, nll: logits [..., C], target [...] long, mask [...] bool -> []
    mse, l1, bce_with_logits: a [...], b [...] (same shape) -> []
    smooth_l1: a [...], b [...] -> [];  kl_div: log_q [..., C], p [..., C] -> []
    triplet_margin: anchor [B, D], positive [B, D], negative [B, D] -> []
    cosine_embedding: a [B, D], b [B, D], target [B] (1 or -1) -> []
    cluster_cost, separation_cost: distances [B, P], target [B] long -> []
    l1_last_layer: () -> []
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field

from dsl.language.registry import BuildCall, Decl, Lowered, NoParams, Params, TensorArg, register
from dsl.language.shapes import DimConflict, ShapeCall, ShapeError, TensorType, scalar


class CrossEntropyParams(Params):
    label_smoothing: float = Field(0.0, ge=0.0, le=1.0, description="mix ε of the uniform distribution into the target")
    ignore_index: int = Field(-100, description="targets with this value do not count")


class NllParams(Params):
    ignore_index: int = Field(-100, description="targets with this value do not count")


class BceParams(Params):
    pos_weight: float | None = Field(None, gt=0, description="weight of the positive examples")


class SmoothL1Params(Params):
    beta: float = Field(1.0, gt=0, description="where the quadratic part turns linear")


class KlDivParams(Params):
    log_target: bool = Field(False, description="the target is given as log-probabilities too")


class TripletParams(Params):
    margin: float = Field(1.0, ge=0, description="how much closer the positive must be than the negative")
    p: float = Field(2.0, gt=0, description="the norm of the distances")


class CosineEmbeddingParams(Params):
    margin: float = Field(0.0, ge=-1, le=1, description="dissimilar pairs count above this cosine")


class PrototypeCostParams(Params):
    per_class: int | None = Field(
        None, gt=0,
        description="prototypes per class; taken from the PrototypeHead that produced the distances "
                    "(give it only for distances computed otherwise)",
    )


def _same_dims(call: ShapeCall, name: str, want: TensorType, label: str) -> None:
    """Input ``name`` has exactly the dims of ``want`` (as far as known)."""
    got = call.type(name)
    if not got.variadic and not want.variadic and len(got.shape) != len(want.shape):
        raise ShapeError(f"shape mismatch in argument `{name}` of `{call.block}`", arg=name,
                         label=f"expected {want.with_dtype(got.dtype)} ({label}), found {got}", code="E0303")
    for a, b in zip(reversed(got.shape), reversed(want.shape), strict=False):
        try:
            call.env.unify(a, b)
        except DimConflict:
            raise ShapeError(f"shape mismatch in argument `{name}` of `{call.block}`", arg=name,
                             label=f"expected {want.with_dtype(got.dtype)} ({label}), found {got}") from None


def _mask(call: ShapeCall, like: TensorType) -> None:
    """``mask`` (when given) is bool with the leading dims of ``like``."""
    if not call.has("mask"):
        return
    m = call.type("mask")
    if m.dtype != "bool":
        raise ShapeError(f"dtype mismatch in argument `mask` of `{call.block}`", arg="mask",
                         label=f"expected bool, found {m.dtype}", code="E0302")
    if like.variadic or m.variadic:
        return
    if len(m.shape) > len(like.shape):
        raise ShapeError(f"`mask` of `{call.block}` has more dims than what it selects", arg="mask",
                         label=f"expected the leading dims of {like}, found {m}", code="E0303")
    lead = TensorType(like.shape[: len(m.shape)], "bool")
    _same_dims(call, "mask", lead, "it selects rows")


def infer_classes(call: ShapeCall, p: Any) -> list[TensorType]:
    """``logits [..., C]`` with ``target [...]`` (class dim last)."""
    call.match("logits", "... C", dtype="float")
    call.match("target", "...", dtype=("long", "int"))
    logits = call.type("logits")
    _same_dims(call, "target", TensorType(logits.shape[:-1], "long", logits.variadic), "the logits without the class dim")
    _mask(call, call.type("target"))
    return [scalar(why=f"{call.block} is a mean")]


def infer_pairwise(call: ShapeCall, p: Any) -> list[TensorType]:
    """``input`` and ``target`` of the same shape."""
    call.match("input", "...", dtype="float")
    first = call.type("input")
    target = call.type("target")
    if call.block != "bce_with_logits" and target.dtype != "float":
        raise ShapeError(f"dtype mismatch in argument `target` of `{call.block}`", arg="target",
                         label=f"expected float, found {target.dtype}", code="E0302")
    _same_dims(call, "target", first, "the same shape as the input")
    _mask(call, first)
    return [scalar(why=f"{call.block} is a mean")]


def infer_nll(call: ShapeCall, p: Any) -> list[TensorType]:
    renamed = ShapeCall(call.block, {("logits" if k == "log_probs" else k): v for k, v in call.inputs.items()},
                        call.env)
    try:
        return infer_classes(renamed, p)
    except ShapeError as e:
        e.arg = "log_probs" if e.arg == "logits" else e.arg
        raise


def infer_kl_div(call: ShapeCall, p: Any) -> list[TensorType]:
    call.match("input", "... C", dtype="float")
    target = call.type("target")
    if target.dtype != "float":
        raise ShapeError("dtype mismatch in argument `target` of `kl_div`", arg="target",
                         label=f"expected float probabilities, found {target.dtype}", code="E0302")
    _same_dims(call, "target", call.type("input"), "a distribution over the same classes")
    return [scalar(why="kl_div is a sum over the classes, averaged over the rows")]


def infer_triplet(call: ShapeCall, p: Any) -> list[TensorType]:
    a = call.match("anchor", "B D", dtype="float")
    call.match("positive", "B D", dtype="float", B=a.B, D=a.D)
    call.match("negative", "B D", dtype="float", B=a.B, D=a.D)
    _mask(call, call.type("anchor").with_shape([a.B]))
    return [scalar(why="triplet_margin is a mean over the triplets")]


def infer_cosine_embedding(call: ShapeCall, p: Any) -> list[TensorType]:
    a = call.match("input1", "B D", dtype="float")
    call.match("input2", "B D", dtype="float", B=a.B, D=a.D)
    call.match("target", "B", dtype=("float", "long", "int"), B=a.B)
    _mask(call, call.type("target"))
    return [scalar(why="cosine_embedding is a mean over the pairs")]


def infer_prototype_cost(call: ShapeCall, p: PrototypeCostParams) -> list[TensorType]:
    d = call.match("distances", "B P", dtype="float")
    call.match("target", "B", dtype=("long", "int"), B=d.B)
    if p.per_class is None:
        raise ShapeError(
            f"`{call.block}` cannot tell which prototype belongs to which class", arg="distances",
            label="these distances do not come straight from a PrototypeHead", code="E0501",
            help="pass the head's output itself (`logits, dist = PrototypeHead(...)`), or say `per_class=`",
        )
    if isinstance(d.P, int) and d.P % p.per_class:
        raise ShapeError(f"`{call.block}`: {d.P} prototypes do not split into classes of per_class={p.per_class}",
                         arg="distances", label=f"found {call.type('distances')}", code="E0305")
    _mask(call, call.type("target"))
    return [scalar(why=f"{call.block} is a mean over the rows")]


def infer_l1_last_layer(call: ShapeCall, p: Any) -> list[TensorType]:
    return [scalar(why="an L1 norm")]


def _lower(fn: str, **defaults: Any) -> Callable[[BuildCall, Any], Lowered]:
    """A lowering to ``dsl.blocks.nn.losses.<fn>`` passing the hyperparameters that differ from ``defaults``."""

    def lower(call: BuildCall, p: Any) -> Lowered:
        from dsl.blocks.nn import losses

        kw = {k: v for k, v in p.model_dump().items() if k not in defaults or defaults[k] != v}
        return Lowered(getattr(losses, fn), kwargs=kw)

    return lower


_MASK = TensorArg("mask", optional=True, doc="bool: the rows that count")
_DECLS = (
    ("cross_entropy", CrossEntropyParams, (TensorArg("logits"), TensorArg("target")), infer_classes,
     {"label_smoothing": 0.0, "ignore_index": -100}, "[..., C], [...] long -> []"),
    ("nll", NllParams, (TensorArg("log_probs"), TensorArg("target")), infer_nll, {"ignore_index": -100},
     "[..., C], [...] long -> []"),
    ("mse", NoParams, (TensorArg("input"), TensorArg("target")), infer_pairwise, {}, "[...], [...] -> []"),
    ("l1", NoParams, (TensorArg("input"), TensorArg("target")), infer_pairwise, {}, "[...], [...] -> []"),
    ("bce_with_logits", BceParams, (TensorArg("input"), TensorArg("target")), infer_pairwise, {"pos_weight": None},
     "[...], [...] -> []"),
    ("smooth_l1", SmoothL1Params, (TensorArg("input"), TensorArg("target")), infer_pairwise, {"beta": 1.0},
     "[...], [...] -> []"),
    ("kl_div", KlDivParams, (TensorArg("input", doc="log-probabilities"), TensorArg("target", doc="probabilities")),
     infer_kl_div, {"log_target": False}, "[..., C], [..., C] -> []"),
    ("triplet_margin", TripletParams, (TensorArg("anchor"), TensorArg("positive"), TensorArg("negative")),
     infer_triplet, {"margin": 1.0, "p": 2.0}, "[B, D], [B, D], [B, D] -> []"),
    ("cosine_embedding", CosineEmbeddingParams, (TensorArg("input1"), TensorArg("input2"), TensorArg("target")),
     infer_cosine_embedding, {"margin": 0.0}, "[B, D], [B, D], [B] -> []"),
    ("cluster_cost", PrototypeCostParams, (TensorArg("distances"), TensorArg("target")), infer_prototype_cost, {},
     "[B, P], [B] long -> []"),
    ("separation_cost", PrototypeCostParams, (TensorArg("distances"), TensorArg("target")), infer_prototype_cost,
     {}, "[B, P], [B] long -> []"),
)


for _name, _params, _inputs, _infer, _defaults, _signature in _DECLS:
    register(
        Decl(
            name=_name,
            kind="function",
            params=_params,
            inputs=(*_inputs, _MASK),
            outputs=("loss",),
            infer=_infer,
            lower=_lower(_name, **_defaults),
            doc=__doc__ or "",
            signature=_signature,
        )
    )

register(
    Decl(
        name="l1_last_layer",
        kind="function",
        params=NoParams,
        inputs=(),
        outputs=("loss",),
        infer=infer_l1_last_layer,
        lower=_lower("l1_last_layer"),
        reads_model=True,
        doc=__doc__ or "",
        signature="() -> []",
    )
)
