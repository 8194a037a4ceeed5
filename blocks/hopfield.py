"""Modern Hopfield layers: Hopfield, HopfieldPooling, HopfieldLayer.

Paper: H. Ramsauer et al., "Hopfield Networks is All You Need", ICLR 2021.
Reference code: ml-jku/hopfield-layers (``hflayers``); behaviour matched, code our own.

A continuous modern Hopfield network stores patterns K = (k₁ … k_S) and has the energy

    E(ξ) = −lse(β, Kξ) + ½ ξᵀξ + β⁻¹ log S + ½ M²,   lse(β, z) = β⁻¹ log Σᵢ exp(β zᵢ)

(M the largest pattern norm). Its update rule, which never increases E and retrieves a
stored pattern in one step when patterns are well separated, is

    ξ_new = Kᵀ softmax(β K ξ)

Applied to all state patterns at once (rows of Q) this is attention: softmax(β Q Kᵀ) V.
The layer follows the reference:

1. LayerNorm on the stored patterns, the state patterns and the values ("pattern
   projection"), each on by default (``normalize_stored``/``normalize_state``/
   ``normalize_values``, learnable affine with ``normalize_affine``);
2. projections Q = ξ W_Q, K = Y W_K to ``heads*head_dim`` and V = Y W_V to
   ``heads*value_dim`` (``head_dim`` defaults to D/heads, ``value_dim`` to ``head_dim``);
   weights start N(0, 0.02²), biases 0, as in the reference;
3. ``steps`` update iterations per head, Q ← softmax(β Q Kᵀ) K, each head stopping once no
   sample's association matrix changes by more than ``eps`` (its L2 norm over queries and
   stored patterns, the largest over the batch: the reference's rule; HopfieldLayer's
   samples are the rows of dim 0 of x);
   ``steps=0`` (the default) is one retrieval step and runs through
   ``torch.nn.functional.scaled_dot_product_attention(scale=β)``;
4. retrieval Z = dropout(softmax(β Q Kᵀ + M)) V with padded stored patterns masked out
   (``stored_mask``, True = padding, like ``key_padding_mask``), heads concatenated; the
   association mask M (``attn_mask`` [L, S]: bool, true = masked, or float, added; and
   ``causal=true``, masking stored patterns after each state pattern) applies at every step;
5. an output projection to ``out`` (default: the state width D).

β defaults to 1/√head_dim, or 1 with ``project=false``, which removes all four projections
for pure retrieval in the input space (one head, stored width = state width, output = the
values' width). Differences from the reference: one scalar β for all heads; no
``normalize_hopfield_space``, bias/zero patterns or association activation. A fully padded
bag yields NaN, as in the reference.

Inspection (built modules, eager): ``module.associations(...)`` returns the association
matrix [B, heads, L, S] for given inputs; ``module.last_steps`` is the number of update
iterations the last call ran (0 … steps).

Compilation: ``torch.compile(fullgraph=True)`` and ``torch.export`` work; inside a traced
graph all ``steps`` iterations are unrolled and converged heads are frozen with
``torch.where`` instead of breaking out of the loop (same result), and ``last_steps`` is not
updated.

Shapes:
    Hopfield:        state [B, L, D], stored [B, S, E] = state, values [B, S, V] = stored,
                     stored_mask [B, S] bool, attn_mask [L, S]  -> [B, L, out]   (out = D, or V if project=false)
    HopfieldPooling: x [B, S, D], mask [B, S] bool -> [B, queries*out]          (out = D)
    HopfieldLayer:   x [..., D] -> [..., out]     (memory: `patterns` learned [D] patterns)
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from dsl.blocks.attention import check_masks
from dsl.language.registry import (
    PROTOTYPES,
    WEIGHTS,
    BuildCall,
    BuildError,
    Decl,
    Params,
    TensorArg,
    register,
)
from dsl.language.shapes import Dim, ShapeCall, ShapeError, TensorType

PAPER = "Ramsauer et al. 2021, Hopfield Networks is All You Need (ml-jku/hopfield-layers)"


class HopfieldOptions(Params):
    """Hyperparameters shared by the three Hopfield blocks."""

    heads: int = Field(1, gt=0, description="parallel association heads")
    out: int | None = Field(None, gt=0, description="output width (default: the state width)")
    head_dim: int | None = Field(
        None, gt=0, description="per-head width of the association space (default: D / heads)"
    )
    value_dim: int | None = Field(None, gt=0, description="per-head width of retrieved values (default: head_dim)")
    beta: float | None = Field(
        None, gt=0, description="inverse temperature β (default: 1/sqrt(head_dim); 1 when project=false)"
    )
    steps: int = Field(0, ge=0, le=1000, description="update iterations before the final retrieval (0 = attention)")
    eps: float = Field(1e-4, gt=0, description="stop iterating a head once its associations change by at most eps")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the association matrix")
    normalize_state: bool = Field(True, description="LayerNorm the state (query) patterns")
    normalize_stored: bool = Field(True, description="LayerNorm the stored (key) patterns")
    normalize_values: bool = Field(True, description="LayerNorm the values (pattern projection)")
    normalize_affine: bool = Field(True, description="learnable scale and shift in those LayerNorms")
    project: bool = Field(True, description="learn query/key/value/output projections; false = pure retrieval")
    bias: bool = Field(True, description="biases in the projections")


class HopfieldParams(HopfieldOptions):
    causal: bool = Field(False, description="state pattern i associates only with stored patterns j <= i (L = S)")


class HopfieldPoolingParams(HopfieldOptions):
    queries: int = Field(1, gt=0, description="learned state patterns (pooled outputs per set)")
    trainable: bool = Field(True, description="learn the query patterns")


class HopfieldLayerParams(HopfieldOptions):
    patterns: int = Field(gt=0, description="entries of the learned memory (stored patterns)")
    separate_values: bool = Field(False, description="retrieve a second learned table instead of the memory")
    trainable: bool = Field(True, description="learn the memory")


# --------------------------------------------------------------------------- shape rules


def _check_options(call: ShapeCall, p: HopfieldOptions, width: Dim, stored: Dim, values: Dim) -> Dim:
    """Check the hyperparameters against the widths; return the output width."""
    if not p.project:
        if p.heads != 1:
            raise ShapeError(
                f"`{call.block}` with project=false has one head, got heads={p.heads}",
                arg="heads",
                code="E0401",
                help="drop heads, or keep the projections (project=true)",
            )
        call.unify(stored, width, arg="stored", what="with project=false the stored patterns need the state's width")
        if p.out is not None:
            call.unify(values, p.out, arg="out", what="with project=false the output is the retrieved values' width")
        return values
    if p.head_dim is None and isinstance(width, int) and width % p.heads:
        raise ShapeError(
            f"`{call.block}` splits the width {width} into heads={p.heads} heads, which does not divide it",
            arg="heads",
            code="E0401",
            help=f"choose heads dividing {width}, or set head_dim",
        )
    return width if p.out is None else p.out


def _why(block: str, p: HopfieldOptions, out: Dim) -> str:
    return f"{block}(heads={p.heads}) projects the retrieved patterns to out={out}"


def infer_hopfield(call: ShapeCall, p: HopfieldParams) -> list[TensorType]:
    s = call.match("state", "B L D", dtype="float")
    stored: Dim = s.D
    count: Dim = s.L
    if call.has("stored"):
        k = call.match("stored", "B S E", dtype="float", B=s.B)
        stored, count = k.E, k.S
    values = stored
    if call.has("values"):
        values = call.match("values", "B S V", dtype="float", B=s.B, S=count).V
    check_masks(call, s.B, s.L, count, p.causal, padding="stored_mask")
    out = _check_options(call, p, s.D, stored, values)
    return [call.tensor([s.B, s.L, out], why=_why("Hopfield", p, out))]


def infer_pooling(call: ShapeCall, p: HopfieldPoolingParams) -> list[TensorType]:
    x = call.match("x", "B S D", dtype="float")
    if call.has("mask"):
        call.match("mask", "B S", dtype="bool", B=x.B, S=x.S)
    out = _check_options(call, p, x.D, x.D, x.D)
    why = f"HopfieldPooling(queries={p.queries}) concatenates {p.queries} pooled patterns of width {out}"
    return [call.tensor([x.B, p.queries * out], why=why)]


def infer_layer(call: ShapeCall, p: HopfieldLayerParams) -> list[TensorType]:
    x = call.match("x", "... D", dtype="float")
    out = _check_options(call, p, x.D, x.D, x.D)
    return [call.keep("x", [out], why=_why("HopfieldLayer", p, out))]


# --------------------------------------------------------------------------- builders


def _options(p: HopfieldOptions) -> dict[str, Any]:
    return p.model_dump(include=set(HopfieldOptions.model_fields))


def _guard(make: Any, block: str) -> Any:
    """Turn the module's own consistency errors into build diagnostics."""
    try:
        return make()
    except ValueError as exc:
        raise BuildError(f"`{block}`: {exc}", code="E0602") from None


def build_hopfield(call: BuildCall, p: HopfieldParams) -> Any:
    from dsl.blocks.nn.hopfield import Hopfield

    width = call.size("state", -1)
    stored = call.size("stored", -1) if call.has("stored") else width
    values = call.size("values", -1) if call.has("values") else stored
    return _guard(lambda: Hopfield(width, stored, values, causal=p.causal, **_options(p)), "Hopfield")


def build_pooling(call: BuildCall, p: HopfieldPoolingParams) -> Any:
    from dsl.blocks.nn.hopfield import HopfieldPooling

    width = call.size("x", -1)
    return _guard(lambda: HopfieldPooling(width, p.queries, p.trainable, **_options(p)), "HopfieldPooling")


def build_layer(call: BuildCall, p: HopfieldLayerParams) -> Any:
    from dsl.blocks.nn.hopfield import HopfieldLayer

    width = call.size("x", -1)
    return _guard(
        lambda: HopfieldLayer(width, p.patterns, p.separate_values, p.trainable, **_options(p)), "HopfieldLayer"
    )


def _count(state: int, stored: int, values: int, p: HopfieldOptions) -> int:
    """LayerNorms (γ, β each) and the four projections of dsl.blocks.nn.hopfield.Hopfield."""
    n = 0
    for on, dim in ((p.normalize_state, state), (p.normalize_stored, stored), (p.normalize_values, values)):
        n += 2 * dim if on and p.normalize_affine else 0
    if p.project:
        head = p.head_dim if p.head_dim is not None else state // p.heads
        value = p.value_dim if p.value_dim is not None else head
        out = p.out if p.out is not None else state
        qk, v = p.heads * head, p.heads * value
        n += state * qk + stored * qk + values * v + v * out
        n += (2 * qk + v + out) if p.bias else 0
    return n


def _projections(p: HopfieldOptions) -> frozenset[str]:
    """What pruning may mask: the four projections (none with project=false; LayerNorms stay dense)."""
    return frozenset({WEIGHTS}) if p.project else frozenset()


def _projections_and_patterns(p: HopfieldOptions) -> frozenset[str]:
    """The projections, and the learned memory (HopfieldLayer) or queries (HopfieldPooling) as prototypes."""
    return _projections(p) | {PROTOTYPES}


def count_hopfield(call: BuildCall, p: HopfieldParams) -> int:
    width = call.size("state", -1)
    stored = call.size("stored", -1) if call.has("stored") else width
    values = call.size("values", -1) if call.has("values") else stored
    return _count(width, stored, values, p)


def count_pooling(call: BuildCall, p: HopfieldPoolingParams) -> int:
    width = call.size("x", -1)
    return _count(width, width, width, p) + p.queries * width


def count_layer(call: BuildCall, p: HopfieldLayerParams) -> int:
    width = call.size("x", -1)
    return _count(width, width, width, p) + p.patterns * width * (2 if p.separate_values else 1)


register(
    Decl(
        name="Hopfield",
        kind="block",
        params=HopfieldParams,
        inputs=(
            TensorArg("state", doc="state (query) patterns [B, L, D]"),
            TensorArg("stored", optional=True, default="state", doc="stored (key) patterns [B, S, E]"),
            TensorArg("values", optional=True, doc="patterns to retrieve [B, S, V]; default: stored"),
            TensorArg("stored_mask", optional=True, doc="[B, S] bool, True marks padding stored patterns"),
            TensorArg("attn_mask", optional=True, doc="[L, S] bool (true = masked) or float (added to the scores)"),
        ),
        outputs=("y",),
        infer=infer_hopfield,
        build=build_hopfield,
        count_params=count_hopfield,
        prunable=_projections,
        doc=__doc__ or "",
        paper=PAPER,
        signature="[B, L, D], [B, S, E] -> [B, L, out]",
    )
)

register(
    Decl(
        name="HopfieldPooling",
        kind="block",
        params=HopfieldPoolingParams,
        inputs=(
            TensorArg("x", doc="a set (bag) of instances [B, S, D]"),
            TensorArg("mask", optional=True, doc="[B, S] bool, True marks padding instances"),
        ),
        outputs=("y",),
        infer=infer_pooling,
        build=build_pooling,
        count_params=count_pooling,
        prunable=_projections_and_patterns,
        doc=__doc__ or "",
        paper=PAPER,
        signature="[B, S, D] -> [B, queries*out]",
    )
)

register(
    Decl(
        name="HopfieldLayer",
        kind="block",
        params=HopfieldLayerParams,
        inputs=(TensorArg("x", doc="state (query) patterns [..., D]"),),
        outputs=("y",),
        infer=infer_layer,
        build=build_layer,
        count_params=count_layer,
        prunable=_projections_and_patterns,
        doc=__doc__ or "",
        paper=PAPER,
        signature="[..., D] -> [..., out]",
    )
)
