"""Elementwise math (functions, no weights).

    log(x), exp(x), sqrt(x), abs(x), square(x) = x·x       torch.log, torch.exp, ...
    clamp(x, min=null, max=null)                             torch.clamp
    pow(x, exponent)                                         torch.pow (a constant exponent)
    minimum(a, b), maximum(a, b)                             torch.minimum / torch.maximum
    where(condition, a, b)                                   torch.where: a where condition, else b

The unary ones keep the shape; ``minimum``, ``maximum`` and ``where`` broadcast
their tensors as torch does. ``log``, ``exp`` and ``sqrt`` take float tensors;
``abs``, ``square``, ``clamp`` and ``pow`` keep integer dtypes.

Shapes:
    log, exp, sqrt, abs, square, clamp, pow: [...] -> [...]
    minimum, maximum: [A, F], [F] -> [A, F]           where: [A, 1] bool, [A, F], [F] -> [A, F]
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from dsl.language.registry import BuildCall, Decl, Lowered, NoParams, Params, TensorArg, register
from dsl.language.shapes import DimConflict, ShapeCall, ShapeError, TensorType, broadcast


class ClampParams(Params):
    min: float | None = Field(None, description="the lower bound (null: none)")
    max: float | None = Field(None, description="the upper bound (null: none)")

    @model_validator(mode="after")
    def _a_bound(self) -> ClampParams:
        if self.min is None and self.max is None:
            raise ValueError("clamp needs min= or max=")
        return self


class PowParams(Params):
    exponent: float = Field(description="the constant exponent")


def _unary(fn: str, floating: bool) -> Any:
    def infer(call: ShapeCall, p: Any) -> list[TensorType]:
        call.match("x", "...", dtype="float" if floating else None)
        return [call.keep("x", why=f"{fn} keeps the shape")]

    return infer


def _broadcast_all(call: ShapeCall, names: list[str], dtype: str) -> TensorType:
    out = call.type(names[0])
    for name in names[1:]:
        t = call.type(name)
        try:
            out = broadcast(out, t, call.env)
        except DimConflict:
            raise ShapeError(f"the tensors of `{call.block}` do not broadcast", arg=name,
                             label=f"{out} and {t}") from None
    return out.with_dtype(dtype)


def infer_binary(call: ShapeCall, p: Any) -> list[TensorType]:
    a, b = call.type("a"), call.type("b")
    dtype = "float" if "float" in (a.dtype, b.dtype) else a.dtype
    return [_broadcast_all(call, ["a", "b"], dtype)]


def infer_where(call: ShapeCall, p: Any) -> list[TensorType]:
    call.match("condition", "...", dtype="bool")
    a, b = call.type("a"), call.type("b")
    dtype = "float" if "float" in (a.dtype, b.dtype) else a.dtype
    return [_broadcast_all(call, ["condition", "a", "b"], dtype)]


def _target(name: str) -> Any:
    import torch

    from dsl.blocks.nn.tensors import square

    return square if name == "square" else getattr(torch, name)


def lower_math(call: BuildCall, p: Any) -> Lowered:
    return Lowered(_target(call.block), kwargs=p.model_dump(exclude_none=True))


_X = (TensorArg("x", doc="input tensor"),)
_AB = (TensorArg("a", doc="first tensor"), TensorArg("b", doc="second tensor"))

_TABLE: tuple[tuple[str, type[Params], tuple[TensorArg, ...], Any, tuple[str, ...] | None], ...] = (
    ("log", NoParams, _X, _unary("log", True), None),
    ("exp", NoParams, _X, _unary("exp", True), None),
    ("sqrt", NoParams, _X, _unary("sqrt", True), None),
    ("abs", NoParams, _X, _unary("abs", False), None),
    ("square", NoParams, _X, _unary("square", False), None),
    ("clamp", ClampParams, _X, _unary("clamp", False), ("x", "min", "max")),
    ("pow", PowParams, _X, _unary("pow", False), ("x", "exponent")),
    ("minimum", NoParams, _AB, infer_binary, None),
    ("maximum", NoParams, _AB, infer_binary, None),
    ("where", NoParams, (TensorArg("condition", doc="bool: where to take `a`"), *_AB), infer_where, None),
)

for _name, _params, _inputs, _infer, _positional in _TABLE:
    register(
        Decl(
            name=_name,
            kind="function",
            params=_params,
            inputs=_inputs,
            outputs=("y",),
            infer=_infer,
            lower=lower_math,
            positional=_positional,
            doc=__doc__ or "",
            signature="[...] -> [...]",
        )
    )
