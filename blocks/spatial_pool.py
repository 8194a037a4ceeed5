"""Pooling over the last one or two dims, channels first (functions, no weights).

    max_pool1d / max_pool2d(x, kernel, stride=kernel)      the largest value of each window
    avg_pool1d / avg_pool2d(x, kernel, stride=kernel)      the mean of each window
    adaptive_avg_pool1d / adaptive_avg_pool2d(x, size)     means over ``size`` equal regions

As ``torch.nn.functional``'s functions of the same names (no padding). ``kernel``,
``stride`` and ``size`` are one integer or one per spatial dim. A window's output
length is ``(L - kernel) // stride + 1``.

Shapes:
    *_pool1d: [B, C, L] -> [B, C, L']          *_pool2d: [B, C, H, W] -> [B, C, H', W']
    adaptive_avg_pool2d(size=1): [B, C, H, W] -> [B, C, 1, 1]
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from dsl.blocks.conv import Pair, out_length, per_dim, positive_pair
from dsl.language.registry import BuildCall, Decl, Lowered, Params, TensorArg, register
from dsl.language.shapes import ShapeCall, ShapeError, TensorType


class PoolParams(Params):
    kernel: Pair = Field(description="window size: one integer, or one per spatial dim")
    stride: Pair | None = Field(None, description="step between windows; default: the kernel")

    @field_validator("kernel", "stride")
    @classmethod
    def _positive(cls, v: Any, info: Any) -> Any:
        return v if v is None else positive_pair(v, 1, info.field_name)


class AdaptiveParams(Params):
    size: Pair = Field(description="the output length of each spatial dim")

    @field_validator("size")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        return positive_pair(v, 1, "size")


def _spatial(call: ShapeCall, n: int) -> TensorType:
    t = call.type("x")
    if t.variadic or len(t.shape) not in (n + 1, n + 2):
        pattern = "[B, C, L]" if n == 1 else "[B, C, H, W]"
        raise ShapeError(f"`{call.block}` needs a channels-first tensor {pattern}", arg="x",
                         label=f"found {t}", code="E0303")
    call.match("x", "...", dtype="float")
    return t


def infer_pool(n: int) -> Any:
    def infer(call: ShapeCall, p: PoolParams) -> list[TensorType]:
        t = _spatial(call, n)
        kernels = per_dim(p.kernel, n)
        strides = per_dim(p.stride if p.stride is not None else p.kernel, n)
        lead = t.shape[: len(t.shape) - n]
        dims = [out_length(call.env.resolve(d), k, s, 0, 1, call, f"{call.block} window")
                for d, k, s in zip(t.shape[len(t.shape) - n:], kernels, strides, strict=True)]
        return [TensorType((*lead, *dims), t.dtype, False, f"{call.block}(kernel={p.kernel}) shrinks the lengths")]

    return infer


def infer_adaptive(n: int) -> Any:
    def infer(call: ShapeCall, p: AdaptiveParams) -> list[TensorType]:
        t = _spatial(call, n)
        lead = t.shape[: len(t.shape) - n]
        return [TensorType((*lead, *per_dim(p.size, n)), t.dtype, False, f"{call.block}(size={p.size})")]

    return infer


def lower_pool(call: BuildCall, p: Any) -> Lowered:
    import torch.nn.functional as F

    fn = getattr(F, call.block)
    if isinstance(p, AdaptiveParams):
        return Lowered(fn, args=(_tuple(p.size),))
    kwargs = {} if p.stride is None else {"stride": _tuple(p.stride)}
    return Lowered(fn, args=(_tuple(p.kernel),), kwargs=kwargs)


def _tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


for _n in (1, 2):
    for _name, _params, _infer, _positional in (
        (f"max_pool{_n}d", PoolParams, infer_pool(_n), ("x", "kernel", "stride")),
        (f"avg_pool{_n}d", PoolParams, infer_pool(_n), ("x", "kernel", "stride")),
        (f"adaptive_avg_pool{_n}d", AdaptiveParams, infer_adaptive(_n), ("x", "size")),
    ):
        register(
            Decl(
                name=_name,
                kind="function",
                params=_params,
                inputs=(TensorArg("x", doc="channels first"),),
                outputs=("y",),
                infer=_infer,
                lower=lower_pool,
                positional=_positional,
                doc=__doc__ or "",
                signature="[B, C, L] -> [B, C, L']" if _n == 1 else "[B, C, H, W] -> [B, C, H', W']",
            )
        )
