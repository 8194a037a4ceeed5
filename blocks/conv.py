"""Conv1d and Conv2d: convolutions over the last one or two dims, channels first.

    y[b, o] = bias[o] + Σ_c Σ_k W[o, c, k] · x[b, c, stride·i + dilation·k - padding]

As ``torch.nn.Conv1d``/``Conv2d`` (same initialisation). ``kernel``, ``stride``,
``padding`` and ``dilation`` are one integer or one per spatial dim;
``padding="same"`` keeps the length (stride 1). ``groups`` splits the channels
into groups convolved separately (C and out divisible by it). The output length
of each spatial dim is ``(L + 2·padding - dilation·(kernel - 1) - 1) // stride + 1``;
with a symbolic L and stride 1 it stays an expression of L, with a larger stride it
is a new symbol.

Shapes:
    Conv1d: x: [B, C, L] -> y: [B, out, L']
    Conv2d: x: [B, C, H, W] -> y: [B, out, H', W']
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from dsl.language.registry import WEIGHTS, BuildCall, Decl, Params, TensorArg, register
from dsl.language.shapes import Dim, ShapeCall, ShapeError, TensorType, dim_add

Pair = int | list[int]


def positive_pair(v: Any, low: int, what: str) -> Any:
    values = v if isinstance(v, list) else [v]
    if isinstance(v, list) and not 1 <= len(v) <= 2:
        raise ValueError(f"{what} takes one integer or one per spatial dim, found {v}")
    if any(x < low for x in values):
        raise ValueError(f"{what} must be >= {low}, found {v}")
    return v


class ConvParams(Params):
    out: int = Field(gt=0, description="output channels")
    kernel: Pair = Field(description="kernel size: one integer, or one per spatial dim")
    stride: Pair = Field(1, description="step between windows")
    padding: Pair | Literal["same"] = Field(0, description="zeros added on each side, or 'same' (stride 1)")
    dilation: Pair = Field(1, description="spacing between kernel elements")
    groups: int = Field(1, gt=0, description="channel groups convolved separately")
    bias: bool = Field(True, description="learn an additive bias per output channel")

    @field_validator("kernel", "stride", "dilation")
    @classmethod
    def _at_least_one(cls, v: Any, info: Any) -> Any:
        return positive_pair(v, 1, info.field_name)

    @field_validator("padding")
    @classmethod
    def _non_negative(cls, v: Any) -> Any:
        return v if v == "same" else positive_pair(v, 0, "padding")


def per_dim(v: Any, n: int) -> list[int]:
    values = v if isinstance(v, list) else [v] * n
    return values if len(values) == n else values * n


def out_length(length: Dim | None, kernel: int, stride: int, padding: int, dilation: int, call: ShapeCall,
               what: str) -> Dim | None:
    """``(L + 2·padding - dilation·(kernel - 1) - 1) // stride + 1`` for one spatial dim."""
    if length is None:
        return None
    span = dilation * (kernel - 1) + 1
    reach = dim_add(length, 2 * padding - span)
    if isinstance(reach, int):
        if reach < 0:
            raise ShapeError(f"the {what} is larger than the input", arg="x",
                             label=f"a span of {span} on a length of {length} + 2*{padding}", code="E0301")
        return reach // stride + 1
    if stride == 1:
        return dim_add(reach, 1)
    return call.fresh("L")


def infer_conv(n: int) -> Any:
    def infer(call: ShapeCall, p: ConvParams) -> list[TensorType]:
        t = call.type("x")
        if t.variadic or len(t.shape) != n + 2:
            pattern = "[B, C, L]" if n == 1 else "[B, C, H, W]"
            raise ShapeError(f"`{call.block}` needs a channels-first tensor {pattern}", arg="x",
                             label=f"expected rank {n + 2}, found {t}",
                             help="reshape or permute to put the channels at dim 1", code="E0303")
        call.match("x", "B C " + " ".join(f"S{i}" for i in range(n)), dtype="float")
        c = call.env.resolve(t.shape[1])
        if isinstance(c, int) and (c % p.groups or p.out % p.groups):
            raise ShapeError(f"`{call.block}` needs C and out divisible by groups={p.groups}", arg="groups",
                             label=f"C = {c}, out = {p.out}", code="E0401")
        if p.padding == "same" and any(s != 1 for s in per_dim(p.stride, n)):
            raise ShapeError("padding='same' needs stride 1", arg="padding", code="E0401")
        dims = []
        for i, (k, s, d) in enumerate(zip(per_dim(p.kernel, n), per_dim(p.stride, n), per_dim(p.dilation, n),
                                          strict=True)):
            length = call.env.resolve(t.shape[2 + i])
            if p.padding == "same":
                dims.append(length)
            else:
                dims.append(out_length(length, k, s, per_dim(p.padding, n)[i], d, call, f"{call.block} kernel"))
        why = f"{call.block}(out={p.out}, kernel={p.kernel}) gives out channels and windowed lengths"
        return [TensorType((t.shape[0], p.out, *dims), "float", False, why)]

    return infer


def build_conv(n: int) -> Any:
    def build(call: BuildCall, p: ConvParams) -> Any:
        from torch import nn

        cls = nn.Conv1d if n == 1 else nn.Conv2d
        padding = p.padding if p.padding == "same" else _pair(p.padding)
        return cls(call.size("x", 1), p.out, _pair(p.kernel), stride=_pair(p.stride), padding=padding,
                   dilation=_pair(p.dilation), groups=p.groups, bias=p.bias)

    return build


def _pair(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def count_conv(n: int) -> Any:
    def count(call: BuildCall, p: ConvParams) -> int:
        kernel = 1
        for k in per_dim(p.kernel, n):
            kernel *= k
        return call.size("x", 1) // p.groups * p.out * kernel + (p.out if p.bias else 0)

    return count


for _n, _name, _sig in ((1, "Conv1d", "[B, C, L] -> [B, out, L']"), (2, "Conv2d", "[B, C, H, W] -> [B, out, H', W']")):
    register(
        Decl(
            name=_name,
            kind="block",
            params=ConvParams,
            inputs=(TensorArg("x", doc="channels first"),),
            outputs=("y",),
            infer=infer_conv(_n),
            build=build_conv(_n),
            count_params=count_conv(_n),
            prunable=frozenset({WEIGHTS}),
            doc=__doc__ or "",
            paper="LeCun et al., Gradient-based learning applied to document recognition, 1998",
            signature=_sig,
        )
    )
