"""Tensors made inside a model (functions without tensor inputs).

    arange(end, start=0, step=1)  torch.arange(start, end, step)     [ceil((end - start) / step)] long
    zeros(shape), ones(shape)      torch.zeros / torch.ones            shape, float
    full(shape, value)             torch.full                          shape; float, or bool for a bool value
    eye(n)                         torch.eye(n)                        [n, n] float
    causal_mask(n)                 ones(n, n, bool).triu(1)            [n, n] bool, true above the diagonal

Sizes may be symbolic dims of the model's inputs (``arange(T)``, ``causal_mask(T)``):
the compiled code reads them from the inputs' shapes at run time, so torch.compile
and torch.export keep them dynamic. The result lives on the device of the model's
first input. ``causal_mask`` follows the convention of ``key_padding_mask`` and
``attn_mask``: true marks a position that may not be attended to.

Shapes:
    arange(T): [T] long        zeros([T, D]): [T, D]        full([B, 1], 0.5): [B, 1]
    eye(N): [N, N]             causal_mask(T): [T, T] bool
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from dsl.language.registry import BuildCall, Decl, Lowered, Params, Size, register
from dsl.language.shapes import ShapeCall, ShapeError, TensorType, dim_add


def _positive(v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool) and v < 0:
        raise ValueError(f"a size must be >= 0, found {v}")
    return v


class ArangeParams(Params):
    end: Size = Field(description="one past the last value")
    start: int = Field(0, description="the first value")
    step: int = Field(1, gt=0, description="the distance between values")


class ShapeParams(Params):
    shape: list[Size] = Field(description="the sizes of the new tensor (ints or dims such as T)")

    @field_validator("shape")
    @classmethod
    def _sizes(cls, v: list[Any]) -> list[Any]:
        return [_positive(s) for s in v]


class FullParams(ShapeParams):
    value: float | int | bool = Field(description="the value of every element")


class SquareParams(Params):
    n: Size = Field(description="rows (and columns)")

    @field_validator("n")
    @classmethod
    def _size(cls, v: Any) -> Any:
        return _positive(v)


def infer_arange(call: ShapeCall, p: ArangeParams) -> list[TensorType]:
    length = dim_add(p.end, -p.start)
    if p.step != 1:
        if not isinstance(length, int):
            raise ShapeError("`arange` with a step needs a known length", arg="step",
                             help="use step=1, or a constant end", code="E0305")
        length = max(0, -(-length // p.step))
    return [TensorType((length,), "long", False, f"arange(end={p.end}) has {length} values")]


def infer_shape(fn: str, dtype: str = "float") -> Any:
    def infer(call: ShapeCall, p: ShapeParams) -> list[TensorType]:
        kind = dtype
        if isinstance(p, FullParams) and isinstance(p.value, bool):
            kind = "bool"
        return [TensorType(tuple(p.shape), kind, False, f"{fn}({list(p.shape)})")]

    return infer


def infer_eye(call: ShapeCall, p: SquareParams) -> list[TensorType]:
    return [TensorType((p.n, p.n), "float", False, f"eye({p.n})")]


def infer_causal_mask(call: ShapeCall, p: SquareParams) -> list[TensorType]:
    return [TensorType((p.n, p.n), "bool", False, f"causal_mask({p.n}) masks what lies ahead")]


def lower_arange(call: BuildCall, p: ArangeParams) -> Lowered:
    import torch

    args = (p.end,) if (p.start, p.step) == (0, 1) else (p.start, p.end, p.step)
    return Lowered(torch.arange, args=args, device=True)


def lower_like(fn: str) -> Any:
    def lower(call: BuildCall, p: Any) -> Lowered:
        import torch

        args: tuple[Any, ...] = (tuple(p.shape),) if fn != "full" else (tuple(p.shape), p.value)
        return Lowered(getattr(torch, fn), args=args, device=True)

    return lower


def lower_eye(call: BuildCall, p: SquareParams) -> Lowered:
    import torch

    return Lowered(torch.eye, args=(p.n,), device=True)


def lower_causal_mask(call: BuildCall, p: SquareParams) -> Lowered:
    from dsl.blocks.nn.tensors import causal_mask

    return Lowered(causal_mask, args=(p.n,), device=True)


_TABLE: tuple[tuple[str, type[Params], tuple[str, ...], Any, Any, str], ...] = (
    ("arange", ArangeParams, ("end",), infer_arange, lower_arange, "() -> [end - start] long"),
    ("zeros", ShapeParams, ("shape",), infer_shape("zeros"), lower_like("zeros"), "() -> shape"),
    ("ones", ShapeParams, ("shape",), infer_shape("ones"), lower_like("ones"), "() -> shape"),
    ("full", FullParams, ("shape", "value"), infer_shape("full"), lower_like("full"), "() -> shape"),
    ("eye", SquareParams, ("n",), infer_eye, lower_eye, "() -> [n, n]"),
    ("causal_mask", SquareParams, ("n",), infer_causal_mask, lower_causal_mask, "() -> [n, n] bool"),
)

for _name, _params, _positional, _infer, _lower, _sig in _TABLE:
    register(
        Decl(
            name=_name,
            kind="function",
            params=_params,
            inputs=(),
            outputs=("y",),
            infer=_infer,
            lower=_lower,
            positional=_positional,
            differentiable=False,
            doc=__doc__ or "",
            signature=_sig,
        )
    )
