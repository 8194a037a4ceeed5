"""Train-section expressions: canonical text (metric names) and constant values. Pure Python."""

from __future__ import annotations

from typing import Any

from dsl.language.ir import (
    BinOp,
    Bool,
    Call,
    Expr,
    ListExpr,
    Name,
    NoneLit,
    Num,
    Spec,
    Str,
    UnaryOp,
)

_PREC = {"+": 1, "-": 1, "*": 2, "/": 2, "//": 2, "%": 2, "@": 2, "**": 3}


def expr_text(e: Expr, parent: int = 0) -> str:
    """Source-like text of an expression; metrics are named by it in logs and metrics.jsonl."""
    if isinstance(e, Num):
        return repr(e.value)
    if isinstance(e, Str):
        return '"' + e.value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(e, Bool):
        return "true" if e.value else "false"
    if isinstance(e, NoneLit):
        return "null"
    if isinstance(e, Name):
        return e.id
    if isinstance(e, UnaryOp):
        return e.op + expr_text(e.operand, 4)
    if isinstance(e, BinOp):
        p = _PREC[e.op]
        right_p = p + 1 if e.op != "**" else p
        text = f"{expr_text(e.left, p if e.op != '**' else p + 1)} {e.op} {expr_text(e.right, right_p)}"
        return f"({text})" if p < parent else text
    if isinstance(e, Call):
        parts = [expr_text(a) for a in e.args] + [f"{k.name}={expr_text(k.value)}" for k in e.kwargs]
        return f"{e.func}({', '.join(parts)})"
    if isinstance(e, ListExpr):
        return "[" + ", ".join(expr_text(i) for i in e.items) + "]"
    raise TypeError(type(e).__name__)


class NotConstant(Exception):
    def __init__(self, message: str, node: Expr):
        super().__init__(message)
        self.node = node


def param_values(spec: Spec, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The spec's top-level params, evaluated in order, with overrides applied."""
    overrides = overrides or {}
    env: dict[str, Any] = {}
    for p in spec.params:
        if p.name in overrides:
            env[p.name] = overrides[p.name]
            continue
        try:
            env[p.name] = const_value(p.value, env)
        except NotConstant:
            continue  # the main checker reports bad params; the train section just can't use it
    for k, v in overrides.items():
        env.setdefault(k, v)
    return env


def const_value(e: Expr, env: dict[str, Any]) -> Any:
    """Evaluate a constant expression (numbers, strings, lists, params, arithmetic)."""
    if isinstance(e, (Num, Str, Bool)):
        return e.value
    if isinstance(e, NoneLit):
        return None
    if isinstance(e, Name):
        if e.id in env:
            return env[e.id]
        if e.id in ("true", "false"):
            return e.id == "true"
        raise NotConstant(f"`{e.id}` is not a constant", e)
    if isinstance(e, ListExpr):
        return [const_value(i, env) for i in e.items]
    if isinstance(e, UnaryOp):
        v = const_value(e.operand, env)
        return -v if e.op == "-" else v
    if isinstance(e, BinOp):
        a, b = const_value(e.left, env), const_value(e.right, env)
        try:
            return _arith(e.op, a, b)
        except (TypeError, ZeroDivisionError) as exc:
            raise NotConstant(f"cannot evaluate `{expr_text(e)}`: {exc}", e) from None
    raise NotConstant(f"`{expr_text(e)}` is not a constant", e)


def _arith(op: str, a: Any, b: Any) -> Any:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return a / b
    if op == "//":
        return a // b
    if op == "%":
        return a % b
    if op == "**":
        return a**b
    raise TypeError(f"`{op}` is not defined on constants")
