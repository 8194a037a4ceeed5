"""Normalisation layers: LayerNorm (Ba et al., 2016) and BatchNorm (Ioffe & Szegedy, 2015).

LayerNorm normalises each vector over its last dim:

    y = (x - E[x]) / sqrt(Var[x] + eps) · γ + β        (γ, β ∈ R^F when affine)

BatchNorm normalises each feature (channel: dim 1) over the batch and length or
spatial dims, as ``torch.nn.BatchNorm1d`` (rank 2 or 3) or ``BatchNorm2d`` (rank 4,
``[B, C, H, W]``); in training it uses the batch statistics and updates
running ones with ``momentum``, in eval it uses the running ones:

    y[b, f, ...] = (x[b, f, ...] - μ_f) / sqrt(σ²_f + eps) · γ_f + β_f

Shapes:
    LayerNorm: x: [..., F] -> y: [..., F]
    BatchNorm: x: [B, F] -> y: [B, F],  x: [B, C, L] -> y: [B, C, L],  x: [B, C, H, W] -> y: [B, C, H, W]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from dsl.language.registry import BuildCall, Decl, Params, TensorArg, register
from dsl.language.shapes import ShapeCall, ShapeError, TensorType

if TYPE_CHECKING:
    from torch import nn


class LayerNormParams(Params):
    eps: float = Field(1e-5, gt=0, description="added to the variance for stability")
    affine: bool = Field(True, description="learn a per-feature scale γ and shift β")


class BatchNormParams(Params):
    momentum: float | None = Field(
        0.1, ge=0.0, le=1.0, description="weight of the new batch in the running statistics; null: cumulative average"
    )
    eps: float = Field(1e-5, gt=0, description="added to the variance for stability")
    affine: bool = Field(True, description="learn a per-feature scale γ and shift β")


def infer_layer_norm(call: ShapeCall, p: LayerNormParams) -> list[TensorType]:
    call.match("x", "... F", dtype="float")
    return [call.keep("x", why="LayerNorm keeps the shape")]


def infer_batch_norm(call: ShapeCall, p: BatchNormParams) -> list[TensorType]:
    t = call.type("x")
    if t.variadic or len(t.shape) not in (2, 3, 4):
        # The features (channels) are dim 1: with unknown leading dims we cannot tell which that is.
        raise ShapeError(
            "rank mismatch in argument `x` of `BatchNorm`",
            arg="x",
            label=f"expected [B, F], [B, C, L] or [B, C, H, W], found {t}",
            help="BatchNorm normalises dim 1 (the features or channels); reshape or transpose first",
            code="E0303",
        )
    call.match("x", {2: "B F", 3: "B F L", 4: "B F H W"}[len(t.shape)], dtype="float")
    return [call.keep("x", why="BatchNorm keeps the shape")]


def build_layer_norm(call: BuildCall, p: LayerNormParams) -> nn.Module:
    from torch import nn

    return nn.LayerNorm(call.size("x", -1), eps=p.eps, elementwise_affine=p.affine)


def build_batch_norm(call: BuildCall, p: BatchNormParams) -> nn.Module:
    from torch import nn

    cls = nn.BatchNorm2d if len(call.type("x").shape) == 4 else nn.BatchNorm1d
    return cls(call.size("x", 1), eps=p.eps, momentum=p.momentum, affine=p.affine)


def count_layer_norm(call: BuildCall, p: LayerNormParams) -> int:
    return 2 * call.size("x", -1) if p.affine else 0  # γ and β


def count_batch_norm(call: BuildCall, p: BatchNormParams) -> int:
    return 2 * call.size("x", 1) if p.affine else 0  # γ and β; running statistics are buffers


register(
    Decl(
        name="LayerNorm",
        kind="block",
        params=LayerNormParams,
        inputs=(TensorArg("x", doc="input features"),),
        outputs=("y",),
        infer=infer_layer_norm,
        build=build_layer_norm,
        count_params=count_layer_norm,
        prunable=frozenset(),
        doc=__doc__ or "",
        paper="Ba, Kiros & Hinton, Layer Normalization, 2016",
        signature="[..., F] -> [..., F]",
    )
)

register(
    Decl(
        name="BatchNorm",
        kind="block",
        params=BatchNormParams,
        inputs=(TensorArg("x", doc="input features, [B, F] or [B, F, L]"),),
        outputs=("y",),
        infer=infer_batch_norm,
        build=build_batch_norm,
        count_params=count_batch_norm,
        prunable=frozenset(),
        doc=__doc__ or "",
        paper="Ioffe & Szegedy, Batch Normalization, ICML 2015",
        signature="[B, F] -> [B, F]  or  [B, F, L] -> [B, F, L]",
    )
)
