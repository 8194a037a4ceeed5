"""Constant expressions: the one evaluator of the language, with its limits.

Params, model and block arguments, hyperparameters, shape dims and every
constant of the train section are evaluated here, so the same limits hold
everywhere a constant appears: integers up to 2**62, exponents up to 64, no
non-finite or complex result. A mistake is a :class:`ConstError` with the span
of the offending expression; callers turn it into a diagnostic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from dsl.language import ir
from dsl.language.diagnostics import Span
from dsl.language.errors import DslError
from dsl.language.shapes import Dim, Sym, dim_add, dim_mul

Const = int | float | bool | str | None | list | Sym

MAX_INT = 2**62
MAX_EXPONENT = 64


class ConstError(DslError):
    def __init__(self, message: str, span: Span, code: str = "E0405", help: str | None = None):
        super().__init__(message)
        self.message, self.span, self.code, self.help = message, span, code, help


def _type_name(v: Any) -> str:
    if isinstance(v, Sym):
        return "size"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    if v is None:
        return "null"
    if isinstance(v, list):
        return "list"
    return type(v).__name__


def _check_int(v: Any, span: Span) -> Any:
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_INT:
        raise ConstError(f"integer constant too large ({_type_name(v)} with {len(str(abs(v)))} digits)", span, "E0801")
    if isinstance(v, float) and not math.isfinite(v):
        raise ConstError("constant arithmetic produced a non-finite number", span)
    return v


def _size_binop(op: str, a: Any, b: Any, span: Span) -> Dim:
    """Arithmetic on sizes (a symbolic dim such as ``T`` used as a value): + - * with
    integers and other sizes, ``//`` by an integer that divides every coefficient."""
    if isinstance(a, bool) or isinstance(b, bool) or not all(isinstance(v, (int, Sym)) for v in (a, b)):
        raise ConstError(f"cannot apply `{op}` to {_type_name(a)} and {_type_name(b)}", span, "E0405")
    if op == "+":
        return dim_add(a, b)
    if op == "-":
        return dim_add(a, dim_mul(b, -1))
    if op == "*":
        return dim_mul(a, b)
    if op == "//" and isinstance(b, int) and b > 0 and isinstance(a, Sym) and all(c % b == 0 for c in a.terms.values()):
        return Sym.normalise({m: c // b for m, c in a.terms.items()})
    raise ConstError(f"`{op}` on a size is not supported here: sizes take + - * and // by a divisor of every term",
                     span, "E0405", help="write the size as a dim, e.g. [B, T, heads, d // heads]")


def _binop(op: str, a: Any, b: Any, span: Span) -> Any:
    numeric = (int, float)
    if isinstance(a, Sym) or isinstance(b, Sym):
        return _size_binop(op, a, b, span)
    if op == "+" and isinstance(a, str) and isinstance(b, str):
        return a + b
    if not (isinstance(a, numeric) and isinstance(b, numeric)):
        raise ConstError(
            f"cannot apply `{op}` to {_type_name(a)} and {_type_name(b)}", span, "E0405"
        )
    try:
        if op == "+":
            r = a + b
        elif op == "-":
            r = a - b
        elif op == "*":
            r = a * b
        elif op == "/":
            r = a / b
        elif op == "//":
            r = a // b
        elif op == "%":
            r = a % b
        elif op == "**":
            if abs(b) > MAX_EXPONENT or (isinstance(a, int) and abs(a) > MAX_INT):
                raise ConstError(f"exponent too large in constant arithmetic (limit {MAX_EXPONENT})", span, "E0801")
            r = a**b
        else:
            raise ConstError(f"operator `{op}` is not constant arithmetic", span, "E0206")
    except ZeroDivisionError:
        raise ConstError("division by zero in constant arithmetic", span) from None
    except OverflowError:
        raise ConstError("overflow in constant arithmetic", span, "E0801") from None
    if isinstance(r, complex):
        raise ConstError("constant arithmetic produced a complex number", span)
    return _check_int(r, span)


def eval_const(expr: ir.Expr, lookup: Callable[[str, Span], Const]) -> Const:
    """Evaluate a constant expression; names are resolved by ``lookup``."""
    if isinstance(expr, ir.Num):
        return _check_int(expr.value, expr.span)
    if isinstance(expr, (ir.Str, ir.Bool)):
        return expr.value
    if isinstance(expr, ir.NoneLit):
        return None
    if isinstance(expr, ir.Name):
        return lookup(expr.id, expr.span)
    if isinstance(expr, ir.UnaryOp):
        v = eval_const(expr.operand, lookup)
        if isinstance(v, Sym):
            return dim_mul(v, -1) if expr.op == "-" else v
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise ConstError(f"cannot apply unary `{expr.op}` to {_type_name(v)}", expr.span)
        return -v if expr.op == "-" else v
    if isinstance(expr, ir.BinOp):
        return _binop(expr.op, eval_const(expr.left, lookup), eval_const(expr.right, lookup), expr.span)
    if isinstance(expr, ir.ListExpr):
        return [eval_const(i, lookup) for i in expr.items]
    if isinstance(expr, ir.Call):
        raise ConstError(f"`{expr.func}(...)` is not a constant", expr.span, "E0207")
    raise ConstError("not a constant expression", expr.span, "E0207")


def coerce(value: Const, type_name: str | None, span: Span, what: str) -> Const:
    """Check a constant against a declared param type (int → float is allowed)."""
    if type_name is None or value is None:
        return value
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
    }[type_name]
    if not ok:
        raise ConstError(
            f"{what} expects {type_name}, found {_type_name(value)} `{value!r}`", span, "E0401"
        )
    if type_name == "float":
        return float(value)  # type: ignore[arg-type]
    return value


