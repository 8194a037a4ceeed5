"""Linear: an affine map over the last dimension.

    y = x Wᵀ + b,   W ∈ R^{out×F}, b ∈ R^{out}

Same initialisation as ``torch.nn.Linear``. ``tie=emb`` shares the weight of a
named ``Embedding`` instance (W = its [num, dim] table, so out = num and F = dim,
as in the output layer of a language model whose input embedding it reuses; Press &
Wolf, 2017) or of another ``Linear`` of the same shape; only the weight is shared,
the bias stays this block's own, and the shared weight is counted once.

Shapes:
    x: [..., F] -> y: [..., out]
"""

from __future__ import annotations

from pydantic import Field

from dsl.language.registry import WEIGHTS, BuildCall, Decl, InstanceRef, Params, TensorArg, register
from dsl.language.shapes import Dim, DimConflict, ShapeCall, ShapeError, TensorType


class LinearParams(Params):
    out: int = Field(gt=0, description="output features")
    bias: bool = Field(True, description="learn an additive bias")
    tie: InstanceRef | None = Field(None, description="a named Embedding or Linear instance whose weight to share")


def tied_shape(call: ShapeCall, ref: InstanceRef) -> tuple[Dim | None, Dim | None]:
    """The [out, in] weight shape of the instance ``tie=`` names."""
    value = ref.value
    params = getattr(value, "params", None)
    if value.name == "Embedding" and params is not None:
        return params.num, params.dim
    if value.name == "Linear" and params is not None and ref.inputs:
        return params.out, ref.inputs[0].shape[-1] if ref.inputs[0].shape else None
    raise ShapeError(f"`tie={ref.name}` names a {value.describe()}: only an Embedding or a Linear has a weight to share",
                     arg="tie", code="E0401")


def infer_linear(call: ShapeCall, p: LinearParams) -> list[TensorType]:
    f = call.match("x", "... F", dtype="float").F
    if p.tie is not None:
        out, features = tied_shape(call, p.tie)
        for mine, theirs, what in ((p.out, out, "out"), (f, features, "the input features")):
            try:
                call.env.unify(mine, theirs)
            except DimConflict:
                raise ShapeError(f"`tie={p.tie.name}` shares a weight of shape [{out}, {features}], and {what} "
                                 f"is {mine}", arg="tie", label=f"{p.tie.name}'s weight is [{out}, {features}]",
                                 help=f"this Linear's weight is [out, F] = [{p.out}, {f}]", code="E0301") from None
    return [call.keep("x", [p.out], why=f"Linear(out={p.out}) maps the last dim to {p.out}")]


def build_linear(call: BuildCall, p: LinearParams):
    from torch import nn

    return nn.Linear(call.size("x", -1), p.out, bias=p.bias)


def count_linear(call: BuildCall, p: LinearParams) -> int:
    """F*out weights (none of its own when tied), plus out biases."""
    return (0 if p.tie is not None else call.size("x", -1) * p.out) + (p.out if p.bias else 0)


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
        prunable=lambda p: frozenset() if p.tie is not None else frozenset({WEIGHTS}),  # a shared weight stays dense
        doc=__doc__ or "",
        signature="[..., F] -> [..., out]",
    )
)
