"""MLP: a stack of Linear layers with an activation (and optional dropout) between them.

    h₀ = x
    hᵢ = dropout(act(hᵢ₋₁ Wᵢᵀ + bᵢ))     i = 1 .. layers-1   (width `hidden`)
    y  = h_{layers-1} W_{layers}ᵀ + b_{layers}               (width `out`, no activation)

``layers=1`` is a single Linear to ``out`` (``hidden`` is then unused). The
module is a ``torch.nn.Sequential`` of ``nn.Linear``, the activation module
and ``nn.Dropout``, initialised as torch does.

Shapes:
    x: [..., F] -> y: [..., out]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from dsl.language.registry import WEIGHTS, BuildCall, Decl, Params, TensorArg, register
from dsl.language.shapes import ShapeCall, TensorType

if TYPE_CHECKING:
    from torch import nn

Activation = Literal["relu", "gelu", "elu", "silu", "tanh", "sigmoid"]


class MLPParams(Params):
    hidden: int = Field(gt=0, description="width of every hidden layer")
    out: int = Field(gt=0, description="output features")
    layers: int = Field(2, ge=1, description="number of Linear layers (1: a single Linear to out)")
    act: Activation = Field("gelu", description="activation between layers")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout probability after each activation")
    bias: bool = Field(True, description="learn additive biases")


def infer_mlp(call: ShapeCall, p: MLPParams) -> list[TensorType]:
    call.match("x", "... F", dtype="float")
    why = f"MLP(hidden={p.hidden}, out={p.out}) ends with a Linear to {p.out}"
    return [call.keep("x", [p.out], why=why)]


def build_mlp(call: BuildCall, p: MLPParams) -> nn.Module:
    return make_mlp(call.size("x", -1), p)


def make_mlp(features: int, p: MLPParams) -> nn.Module:
    """Linear layers from ``features`` through ``hidden`` to ``out``, an activation between each."""
    from torch import nn

    acts = {"relu": nn.ReLU, "gelu": nn.GELU, "elu": nn.ELU, "silu": nn.SiLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    widths = [features] + [p.hidden] * (p.layers - 1) + [p.out]
    layers: list[nn.Module] = []
    for i, (w_in, w_out) in enumerate(zip(widths, widths[1:], strict=False)):
        layers.append(nn.Linear(w_in, w_out, bias=p.bias))
        if i < p.layers - 1:  # nothing after the last Linear: its output is the logits/features
            layers.append(acts[p.act]())
            if p.dropout > 0:
                layers.append(nn.Dropout(p.dropout))
    return nn.Sequential(*layers)


def count_mlp(call: BuildCall, p: MLPParams) -> int:
    return mlp_parameters(call.size("x", -1), p)


def mlp_parameters(features: int, p: MLPParams) -> int:
    """One Linear per consecutive pair of widths F, hidden, ..., out."""
    widths = [features] + [p.hidden] * (p.layers - 1) + [p.out]
    return sum(a * b + (b if p.bias else 0) for a, b in zip(widths, widths[1:], strict=False))


register(
    Decl(
        name="MLP",
        kind="block",
        params=MLPParams,
        inputs=(TensorArg("x", doc="input features"),),
        outputs=("y",),
        infer=infer_mlp,
        build=build_mlp,
        count_params=count_mlp,
        prunable=frozenset({WEIGHTS}),
        doc=__doc__ or "",
        signature="[..., F] -> [..., out]",
    )
)
