"""Evaluate loss and metric expressions on a batch and the model's outputs (torch)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from dsl.ir import BinOp, Call, Expr, Name, Num, UnaryOp

from .exprs import const_value
from .functional import IMPLS
from .functions import lookup_fn


class Evaluator:
    """Names resolve to model outputs first, then batch fields, then constants."""

    def __init__(self, consts: dict[str, Any], model: torch.nn.Module | None = None):
        self.consts = consts
        self.model = model

    def call(self, c: Call, names: dict[str, Tensor]) -> tuple[Tensor, int]:
        d = lookup_fn(c.func)
        if d is None:
            raise KeyError(c.func)
        tensors = [names[a.id] for a in c.args if isinstance(a, Name)]
        kwargs: dict[str, Any] = {}
        for k in c.kwargs:
            if k.name == "mask":
                kwargs["mask"] = names[k.value.id] if isinstance(k.value, Name) else None
            else:
                kwargs[k.name] = const_value(k.value, self.consts)
        if d.needs_model:
            return IMPLS[c.func](self.model)
        return IMPLS[c.func](*tensors, **kwargs)

    def loss(self, e: Expr, names: dict[str, Tensor]) -> Tensor | float:
        if isinstance(e, Num):
            return float(e.value)
        if isinstance(e, Name):
            return float(const_value(e, self.consts))
        if isinstance(e, UnaryOp):
            v = self.loss(e.operand, names)
            return -v if e.op == "-" else v
        if isinstance(e, BinOp):
            a, b = self.loss(e.left, names), self.loss(e.right, names)
            if e.op == "+":
                return a + b
            if e.op == "-":
                return a - b
            if e.op == "*":
                return a * b
            if e.op == "/":
                return a / b
        if isinstance(e, Call):
            return self.call(e, names)[0]
        raise ValueError(f"cannot evaluate {e!r} as a loss")
