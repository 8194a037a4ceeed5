"""Reductions (functions, no weights) over one dim, several, or all.

    sum(x, dim, keepdim)          torch.sum     integer and bool inputs sum to long, as in torch
    mean(x, dim, keepdim)         torch.mean    float input
    max / amax(x, dim, keepdim)   torch.amax    the values (not the indices)
    min / amin(x, dim, keepdim)   torch.amin
    logsumexp(x, dim, keepdim)    torch.logsumexp  log Σ exp x, computed stably
    norm(x, dim, keepdim, p=2)    torch.linalg.vector_norm  (Σ |x|^p)^(1/p)

``dim`` is one dim, a list of dims, or null (every dim; ``logsumexp`` needs a dim).
Dims may be negative, counted from the end.

Shapes:
    mean:      [A, B, F] (dim=1)           -> [A, F]           (keepdim: [A, 1, F])
    sum, max:  [..., F] (dim=null)         -> []
    norm:      [B, D] (dim=-1)             -> [B]
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator

from dsl.blocks.tensor_ops import axis, dims_list
from dsl.language.registry import BuildCall, Decl, Lowered, Params, TensorArg, register
from dsl.language.shapes import ShapeCall, ShapeError, TensorType

DimsArg = int | Annotated[list[int], Field(min_length=1)] | None


class ReduceParams(Params):
    dim: DimsArg = Field(None, description="dim or dims to reduce; null reduces every dim")
    keepdim: bool = Field(False, description="keep reduced dims with size 1")

    @field_validator("dim")
    @classmethod
    def _distinct(cls, v: Any) -> Any:
        if isinstance(v, list) and len(set(v)) != len(v):
            raise ValueError(f"dims must be distinct, got {v}")
        return v


def _reduce(call: ShapeCall, p: ReduceParams, fn: str, dtype: str) -> TensorType:
    t = call.type("x")
    dims = dims_list(p.dim)
    if dims is None:
        why = f"{fn}() over every dim" + (" keeping them as 1" if p.keepdim else " gives a scalar")
        if p.keepdim:
            return TensorType((1,) * len(t.shape), dtype, t.variadic, why)
        return TensorType((), dtype, False, why)
    positions: set[int] = set()
    for d in dims:
        pos = axis(call, "x", d)
        if pos is not None and pos in positions:
            raise ShapeError(
                f"`{fn}` reduces the same dim twice", arg="dim",
                label=f"dims {dims} name one axis twice for `x` {t}", code="E0401",
            )
        if pos is not None:
            positions.add(pos)
    shape = [1 if i in positions else d for i, d in enumerate(t.shape) if p.keepdim or i not in positions]
    why = f"{fn}(dim={p.dim}" + (", keepdim=true)" if p.keepdim else ") removes the reduced dims")
    return TensorType(tuple(shape), dtype, t.variadic, why)


def infer_mean(call: ShapeCall, p: ReduceParams) -> list[TensorType]:
    call.match("x", "...", dtype="float")
    return [_reduce(call, p, "mean", "float")]


def infer_sum(call: ShapeCall, p: ReduceParams) -> list[TensorType]:
    dtype = call.type("x").dtype
    return [_reduce(call, p, "sum", "float" if dtype == "float" else "long")]


def infer_max(call: ShapeCall, p: ReduceParams) -> list[TensorType]:
    return [_reduce(call, p, "max", call.type("x").dtype)]


def _reduce_kwargs(p: ReduceParams) -> dict[str, Any]:
    dim = tuple(p.dim) if isinstance(p.dim, list) else p.dim  # a copy the graph cannot alias
    if p.keepdim:  # torch wants dim spelled out (None included) next to keepdim
        return {"dim": dim, "keepdim": True}
    return {} if dim is None else {"dim": dim}


def lower_mean(call: BuildCall, p: ReduceParams) -> Lowered:
    import torch

    return Lowered(torch.mean, kwargs=_reduce_kwargs(p))


def lower_sum(call: BuildCall, p: ReduceParams) -> Lowered:
    import torch

    return Lowered(torch.sum, kwargs=_reduce_kwargs(p))


def lower_max(call: BuildCall, p: ReduceParams) -> Lowered:
    import torch

    # amax, not max: torch.max(x, dim) returns (values, indices); `max` here means the values.
    return Lowered(torch.amax, kwargs=_reduce_kwargs(p))


class NormParams(ReduceParams):
    p: float = Field(2.0, gt=0, description="the order of the norm")


def infer_min(call: ShapeCall, p: ReduceParams) -> list[TensorType]:
    return [_reduce(call, p, "min", call.type("x").dtype)]


def infer_logsumexp(call: ShapeCall, p: ReduceParams) -> list[TensorType]:
    call.match("x", "...", dtype="float")
    if p.dim is None:
        raise ShapeError("`logsumexp` needs dim=", arg="dim", help="e.g. logsumexp(x, dim=-1)", code="E0403")
    return [_reduce(call, p, "logsumexp", "float")]


def infer_norm(call: ShapeCall, p: NormParams) -> list[TensorType]:
    call.match("x", "...", dtype="float")
    return [_reduce(call, p, "norm", "float")]


def lower_min(call: BuildCall, p: ReduceParams) -> Lowered:
    import torch

    return Lowered(torch.amin, kwargs=_reduce_kwargs(p))


def lower_logsumexp(call: BuildCall, p: ReduceParams) -> Lowered:
    import torch

    return Lowered(torch.logsumexp, kwargs=_reduce_kwargs(p))


def lower_norm(call: BuildCall, p: NormParams) -> Lowered:
    import torch

    kwargs = _reduce_kwargs(p)
    if p.p != 2.0:
        kwargs["ord"] = p.p
    return Lowered(torch.linalg.vector_norm, kwargs=kwargs)


_X = (TensorArg("x", doc="input tensor"),)
_TABLE: tuple[tuple[str, type[Params], Any, Any, bool], ...] = (
    ("sum", ReduceParams, infer_sum, lower_sum, True),
    ("mean", ReduceParams, infer_mean, lower_mean, True),
    ("max", ReduceParams, infer_max, lower_max, True),
    ("amax", ReduceParams, infer_max, lower_max, True),
    ("min", ReduceParams, infer_min, lower_min, True),
    ("amin", ReduceParams, infer_min, lower_min, True),
    ("logsumexp", ReduceParams, infer_logsumexp, lower_logsumexp, True),
    ("norm", NormParams, infer_norm, lower_norm, True),
)

for _name, _params, _infer, _lower, _grad in _TABLE:
    register(
        Decl(
            name=_name,
            kind="function",
            params=_params,
            inputs=_X,
            outputs=("y",),
            infer=_infer,
            lower=_lower,
            positional=("x", "dim"),
            differentiable=_grad,
            doc=__doc__ or "",
            signature="[A, F] -> [A] (dim=-1)",
        )
    )
