"""Dropout: zero each element with probability p while training (Srivastava et al., 2014).

    training:  y = x ⊙ m / (1 - p),   m ~ Bernoulli(1 - p) elementwise
    eval:      y = x

A block, not a function, because it behaves differently in train and eval
mode (``torch.nn.Dropout``); it has no weights.

Shapes:
    x: [..., F] -> y: [..., F]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from dsl.language.registry import BuildCall, Decl, Params, TensorArg, register
from dsl.language.shapes import ShapeCall, TensorType

if TYPE_CHECKING:
    from torch import nn


class DropoutParams(Params):
    p: float = Field(0.5, ge=0.0, le=1.0, description="probability of zeroing an element")


def infer_dropout(call: ShapeCall, p: DropoutParams) -> list[TensorType]:
    call.match("x", "...", dtype="float")
    return [call.keep("x", why=f"Dropout(p={p.p}) keeps the shape")]


def build_dropout(call: BuildCall, p: DropoutParams) -> nn.Module:
    from torch import nn

    return nn.Dropout(p.p)


def count_dropout(call: BuildCall, p: DropoutParams) -> int:
    return 0


register(
    Decl(
        name="Dropout",
        kind="block",
        params=DropoutParams,
        inputs=(TensorArg("x", doc="input tensor"),),
        outputs=("y",),
        infer=infer_dropout,
        build=build_dropout,
        count_params=count_dropout,
        prunable=frozenset(),
        doc=__doc__ or "",
        paper="Srivastava et al., Dropout: A Simple Way to Prevent Neural Networks from Overfitting, JMLR 2014",
        signature="[..., F] -> [..., F]",
    )
)
