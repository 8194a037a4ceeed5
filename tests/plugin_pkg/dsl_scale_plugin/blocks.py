"""Scale: multiply a tensor by a factor, fixed or learned.

    y = a · x,   a = factor (a constant), or a learned scalar initialised to factor
                 when learnable=true

Shapes:
    x: [...] -> y: [...]   (float; the shape is kept)
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from dsl.language.registry import BuildCall, Decl, Params, TensorArg, register
from dsl.language.shapes import ShapeCall, TensorType


class ScaleParams(Params):
    factor: float = Field(1.0, description="the multiplier a (its initial value when learnable)")
    learnable: bool = Field(False, description="learn a as a scalar parameter")


def infer_scale(call: ShapeCall, p: ScaleParams) -> list[TensorType]:
    call.match("x", "...", dtype="float")
    return [call.keep("x", why=f"Scale(factor={p.factor}) keeps the shape")]


def build_scale(call: BuildCall, p: ScaleParams) -> Any:
    from dsl_scale_plugin.nn import ScaleModule  # torch only when building

    return ScaleModule(p.factor, p.learnable)


def count_scale(call: BuildCall, p: ScaleParams) -> int:
    return 1 if p.learnable else 0


register(
    Decl(
        name="Scale",
        kind="block",
        params=ScaleParams,
        inputs=(TensorArg("x", doc="any float tensor"),),
        outputs=("y",),
        infer=infer_scale,
        build=build_scale,
        count_params=count_scale,
        doc=__doc__ or "",
        signature="[...] -> [...]",
    )
)
