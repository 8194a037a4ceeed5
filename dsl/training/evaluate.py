"""Evaluate loss and metric expressions on a batch and the model's outputs (torch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from dsl.checking.train_exprs import const_value
from dsl.checking.train_functions import lookup_fn
from dsl.language.ir import BinOp, Call, Expr, Name, Num, UnaryOp
from dsl.training.functional import IMPLS

LossFn = Callable[[dict[str, Tensor]], "Tensor | float"]

_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
}


class Evaluator:
    """Names resolve to model outputs first, then batch fields, then constants."""

    def __init__(self, consts: dict[str, Any], model: torch.nn.Module | None = None):
        self.consts = consts
        self.model = model
        # Compiled loss expressions by id, with the expression kept alive so the id stays its own.
        self._compiled: dict[int, tuple[Expr, LossFn]] = {}

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
        """The value of loss expression ``e`` on ``names`` (compiled on first use, then reused)."""
        hit = self._compiled.get(id(e))
        if hit is None or hit[0] is not e:
            hit = (e, self.compile_loss(e))
            self._compiled[id(e)] = hit
        return hit[1](names)

    def compile_loss(self, e: Expr) -> LossFn:
        """``e`` as a function of ``names``, computing exactly what :meth:`interpret` does.

        The training loop evaluates its loss every step; walking the expression
        tree there (isinstance chains, function look-ups, constant keyword
        arguments) cost a few µs per step, so the walk happens once here.
        Constants are read when compiling: ``consts`` does not change during a run.
        """
        if isinstance(e, (Num, Name)):
            value = self.interpret(e, {})
            return lambda names: value
        if isinstance(e, UnaryOp):
            operand = self.compile_loss(e.operand)
            if e.op == "-":
                return lambda names: -operand(names)
            return operand
        if isinstance(e, BinOp) and e.op in _ARITH:
            op, left, right = _ARITH[e.op], self.compile_loss(e.left), self.compile_loss(e.right)
            return lambda names: op(left(names), right(names))
        if isinstance(e, Call):
            return self._compile_call(e)
        raise ValueError(f"cannot evaluate {e!r} as a loss")

    def _compile_call(self, c: Call) -> LossFn:
        """A loss term such as ``cross_entropy(logits, y)``; the first item of its result."""
        d = lookup_fn(c.func)
        if d is None:
            raise KeyError(c.func)
        impl = IMPLS[c.func]
        if d.needs_model:
            return lambda names: impl(self.model)[0]
        args = [a.id for a in c.args if isinstance(a, Name)]
        has_mask, mask_name = False, None  # `mask=m` reads m from names; `mask=none` passes None
        kwargs: dict[str, Any] = {}
        for k in c.kwargs:
            if k.name == "mask":
                has_mask, mask_name = True, k.value.id if isinstance(k.value, Name) else None
            else:
                kwargs[k.name] = const_value(k.value, self.consts)
        if not has_mask:
            return lambda names: impl(*[names[a] for a in args], **kwargs)[0]

        def term(names: dict[str, Tensor]) -> Tensor:
            mask = names[mask_name] if mask_name is not None else None
            return impl(*[names[a] for a in args], mask=mask, **kwargs)[0]

        return term

    def interpret(self, e: Expr, names: dict[str, Tensor]) -> Tensor | float:
        """The loss expression walked node by node (the reference :meth:`compile_loss` follows)."""
        if isinstance(e, Num):
            return float(e.value)
        if isinstance(e, Name):
            return float(const_value(e, self.consts))
        if isinstance(e, UnaryOp):
            v = self.interpret(e.operand, names)
            return -v if e.op == "-" else v
        if isinstance(e, BinOp):
            a, b = self.interpret(e.left, names), self.interpret(e.right, names)
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
