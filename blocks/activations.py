"""Elementwise activations and the softmax family (functions: no weights).

    relu(x)        = max(x, 0)                                   torch.relu
    gelu(x)        = x · Φ(x)   (tanh approximation on request)  torch.nn.functional.gelu
    elu(x)         = x if x > 0 else α (eˣ - 1)                  torch.nn.functional.elu
    silu(x)        = x · σ(x)                                    torch.nn.functional.silu
    tanh(x), sigmoid(x) = σ(x) = 1 / (1 + e⁻ˣ)                   torch.tanh, torch.sigmoid
    softmax(x)_i   = exp(x_i) / Σ_j exp(x_j)   along `dim`       torch.softmax
    log_softmax(x) = x_i - log Σ_j exp(x_j)   along `dim`        torch.log_softmax

All of them take a float tensor and keep its shape, ``...`` included.

Shapes:
    x: [..., F] -> y: [..., F]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field

from dsl.blocks.tensor_ops import axis
from dsl.language.registry import BuildCall, Decl, Lowered, NoParams, Params, TensorArg, register
from dsl.language.shapes import ShapeCall, TensorType


class GeluParams(Params):
    approximate: Literal["none", "tanh"] = Field(
        "none", description="'tanh' uses the tanh approximation of the Gaussian CDF"
    )


class EluParams(Params):
    alpha: float = Field(1.0, gt=0, description="α: the value elu approaches for large negative x")


class SoftmaxParams(Params):
    dim: int = Field(-1, description="the dim that sums to one (negative counts from the end)")


def _kept(call: ShapeCall, fn: str) -> TensorType:
    call.match("x", "...", dtype="float")
    return call.keep("x", why=f"{fn} keeps the shape")


def infer_pointwise(fn: str) -> Callable[[ShapeCall, Any], list[TensorType]]:
    def infer(call: ShapeCall, p: Any) -> list[TensorType]:
        return [_kept(call, fn)]

    return infer


def infer_softmax(fn: str) -> Callable[[ShapeCall, SoftmaxParams], list[TensorType]]:
    def infer(call: ShapeCall, p: SoftmaxParams) -> list[TensorType]:
        t = _kept(call, f"{fn}(dim={p.dim})")
        axis(call, "x", p.dim, lenient=True)  # only the range check: the shape is kept
        return [t]

    return infer


def _torch(path: str) -> Any:
    """``torch.relu`` / ``torch.nn.functional.gelu`` looked up only when lowering."""
    import importlib

    module, _, attr = path.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def lower_to(path: str, **defaults: Any) -> Callable[[BuildCall, Any], Lowered]:
    """A lowering to ``path`` passing only the hyperparameters that differ from ``defaults``.

    Left-out defaults keep the generated fx code short: ``gelu(x)``, not
    ``gelu(x, approximate='none')``.
    """

    def lower(call: BuildCall, p: Any) -> Lowered:
        values = p.model_dump()
        kw = {k: v for k, v in values.items() if k not in defaults or defaults[k] != v}
        return Lowered(_torch(path), kwargs=kw)

    return lower


_POINTWISE: tuple[tuple[str, type[Params], str, dict[str, Any], str], ...] = (
    ("relu", NoParams, "torch.relu", {}, "max(x, 0)"),
    ("gelu", GeluParams, "torch.nn.functional.gelu", {"approximate": "none"}, "x · Φ(x)"),
    ("elu", EluParams, "torch.nn.functional.elu", {"alpha": 1.0}, "x if x > 0 else α(eˣ - 1)"),
    ("silu", NoParams, "torch.nn.functional.silu", {}, "x · σ(x)"),
    ("tanh", NoParams, "torch.tanh", {}, "tanh(x)"),
    ("sigmoid", NoParams, "torch.sigmoid", {}, "1 / (1 + e⁻ˣ)"),
)

for _name, _params, _path, _defaults, _eq in _POINTWISE:
    register(
        Decl(
            name=_name,
            kind="function",
            params=_params,
            inputs=(TensorArg("x", doc="input tensor (float)"),),
            outputs=("y",),
            infer=infer_pointwise(_name),
            lower=lower_to(_path, **_defaults),
            doc=f"{_name}(x) = {_eq}, elementwise ({_path}).\n\nShapes:\n    x: [..., F] -> y: [..., F]\n",
            signature="[..., F] -> [..., F]",
        )
    )

for _name, _path, _eq in (
    ("softmax", "torch.softmax", "exp(x_i) / Σ_j exp(x_j) along dim"),
    ("log_softmax", "torch.log_softmax", "x_i - log Σ_j exp(x_j) along dim"),
):
    register(
        Decl(
            name=_name,
            kind="function",
            params=SoftmaxParams,
            inputs=(TensorArg("x", doc="input tensor (float)"),),
            outputs=("y",),
            infer=infer_softmax(_name),
            # dim is always passed: torch.softmax has no default dim.
            lower=lower_to(_path),
            doc=f"{_name}(x) = {_eq} ({_path}).\n\nShapes:\n    x: [..., F] -> y: [..., F]\n",
            signature="[..., F] -> [..., F]",
        )
    )
