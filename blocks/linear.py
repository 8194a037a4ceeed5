"""Linear: an affine map over the last dimension.

    y = x Wᵀ + b,   W ∈ R^{out×F}, b ∈ R^{out}

Same initialisation as ``torch.nn.Linear``.

Shapes:
    x: [..., F] -> y: [..., out]
"""

from __future__ import annotations

from pydantic import Field

from dsl.language.registry import BuildCall, Decl, Params, TensorArg, register
from dsl.language.shapes import ShapeCall, TensorType


class LinearParams(Params):
    out: int = Field(gt=0, description="output features")
    bias: bool = Field(True, description="learn an additive bias")


def infer_linear(call: ShapeCall, p: LinearParams) -> list[TensorType]:
    call.match("x", "... F", dtype="float")
    return [call.keep("x", [p.out], why=f"Linear(out={p.out}) maps the last dim to {p.out}")]


def build_linear(call: BuildCall, p: LinearParams):
    from torch import nn

    return nn.Linear(call.size("x", -1), p.out, bias=p.bias)


def count_linear(call: BuildCall, p: LinearParams) -> int:
    """F*out weights, plus out biases."""
    return call.size("x", -1) * p.out + (p.out if p.bias else 0)


register(
    Decl(
        name="Linear",
        kind="block",
        params=LinearParams,
        inputs=(TensorArg("x", doc="input features"),),
        outputs=("y",),
        infer=infer_linear,
        build=build_linear,
        count_params=count_linear,
        doc=__doc__ or "",
        signature="[..., F] -> [..., out]",
    )
)
