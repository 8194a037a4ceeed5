"""Parameter: a learned tensor of a given shape, with no tensor inputs.

    Parameter(shape, init="normal", mean=0, std=1, low=-1, high=1, value=0)

``init`` is one of ``zeros ones normal uniform xavier_uniform constant``, as
``torch.nn.init`` draws them (``normal``: N(mean, std²); ``uniform``: U(low, high);
``constant``: every element ``value``; ``xavier_uniform``: Glorot's bound from the
first two dims, so it needs at least two). The call is the tensor itself, not a
block value: ``pos = Parameter([context, d], init="normal", std=0.02)``, then
``pos[:T]``; ``[]`` is a scalar (ReZero's ``alpha = Parameter([], init="zeros")``).
Its weights are the model's parameter named after the statement (``pos``).

Shapes:
    () -> [shape]
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from dsl.language.registry import BuildCall, Decl, Params, register
from dsl.language.shapes import ShapeCall, TensorType

Init = Literal["zeros", "ones", "normal", "uniform", "xavier_uniform", "constant"]


class ParameterParams(Params):
    shape: list[int] = Field(description="the tensor's shape ([] for a scalar); sizes must be known when building")
    init: Init = Field("normal", description="how the values start (torch.nn.init)")
    mean: float = Field(0.0, description="normal: the mean")
    std: float = Field(1.0, gt=0, description="normal: the standard deviation")
    low: float = Field(-1.0, description="uniform: the lower bound")
    high: float = Field(1.0, description="uniform: the upper bound")
    value: float | None = Field(None, description="constant: the value of every element")

    @field_validator("shape")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if any(s <= 0 for s in v):
            raise ValueError(f"every size must be positive, found {v}")
        return v

    @model_validator(mode="after")
    def _init_arguments(self) -> ParameterParams:
        if self.init == "constant" and self.value is None:
            raise ValueError('init="constant" needs value=')
        if self.init == "uniform" and not self.low < self.high:
            raise ValueError(f"uniform needs low < high, found low={self.low}, high={self.high}")
        if self.init == "xavier_uniform" and len(self.shape) < 2:
            raise ValueError(f"xavier_uniform needs at least two dims, found shape {self.shape}")
        return self


def infer_parameter(call: ShapeCall, p: ParameterParams) -> list[TensorType]:
    return [TensorType(tuple(p.shape), "float", False, f"Parameter({p.shape}) is learned")]


def build_parameter(call: BuildCall, p: ParameterParams) -> Any:
    from dsl.blocks.nn.tensors import MADE_BY, learned_tensor

    kwargs = {"init": p.init, "mean": p.mean, "std": p.std, "low": p.low, "high": p.high, "value": float(p.value or 0.0)}
    defaults = {"init": "normal", "mean": 0.0, "std": 1.0, "low": -1.0, "high": 1.0, "value": 0.0}
    kwargs = {k: v for k, v in kwargs.items() if v != defaults[k]}
    weight = learned_tensor(list(p.shape), **kwargs)
    setattr(weight, MADE_BY, (learned_tensor, (list(p.shape),), kwargs))
    return weight


def count_parameter(call: BuildCall, p: ParameterParams) -> int:
    total = 1
    for s in p.shape:
        total *= s
    return total


register(
    Decl(
        name="Parameter",
        kind="block",
        params=ParameterParams,
        inputs=(),
        outputs=("value",),
        infer=infer_parameter,
        build=build_parameter,
        count_params=count_parameter,
        prunable=frozenset(),  # a tensor of the model, not a layer's weight
        positional=("shape",),
        doc=__doc__ or "",
        signature="() -> [shape]",
    )
)
