"""Resolve: `use` imports, params with overrides, constant evaluation. Pure Python.

The resolver turns a parsed :class:`~dsl.language.ir.Spec` into a :class:`Resolved` spec:
every top-level and model param has a constant value (overrides applied and
type-checked), imported blocks and params are merged in, and import cycles are
diagnosed. Composite blocks, ``repeat`` and block values are elaborated by the
checker, which needs the argument shapes to do so.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dsl.language import ir
from dsl.language.diagnostics import NO_SPAN, Diagnostic, Span, did_you_mean

Const = int | float | bool | str | None | list

MAX_INT = 2**62
MAX_REPEAT = 10_000
MAX_USE_DEPTH = 32


class ConstError(Exception):
    def __init__(self, message: str, span: Span, code: str = "E0405", help: str | None = None):
        super().__init__(message)
        self.message, self.span, self.code, self.help = message, span, code, help


@dataclass
class ParamValue:
    value: Const
    span: Span  # where it was defined (or overridden)
    origin: str = "spec"  # "spec" | "override" | "default"


@dataclass
class Resolved:
    spec: ir.Spec
    params: dict[str, ParamValue] = field(default_factory=dict)
    blocks: dict[str, ir.BlockDef] = field(default_factory=dict)
    model: ir.BlockDef | None = None
    model_args: dict[str, ParamValue] = field(default_factory=dict)
    train: ir.TrainSection | None = None
    sources: dict[str, str] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def constants(self) -> dict[str, Const]:
        out = {k: v.value for k, v in self.params.items()}
        out.update({k: v.value for k, v in self.model_args.items()})
        return out


# --------------------------------------------------------------------------- constants


def _type_name(v: Any) -> str:
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


def _binop(op: str, a: Any, b: Any, span: Span) -> Any:
    numeric = (int, float)
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
            if abs(b) > 64 or (isinstance(a, int) and abs(a) > MAX_INT):
                raise ConstError("exponent too large in constant arithmetic (limit 64)", span, "E0801")
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


def parse_override(text: str) -> Const:
    """The value of ``--set k=v``: a constant in the text language; a bare word is a string."""
    from dsl.language.text import parse_expr

    try:
        expr = parse_expr(text, file="<--set>")
    except Exception:
        return text
    if isinstance(expr, ir.Name):
        return expr.id
    try:
        return eval_const(expr, lambda n, s: n)
    except ConstError:
        return text


# --------------------------------------------------------------------------- imports


def _read_spec(path: str) -> ir.Spec:
    from dsl.api import load

    return load(path)


def _merge_imports(
    spec: ir.Spec, res: Resolved, stack: tuple[str, ...], loader: Callable[[str], ir.Spec], pending: list
) -> None:
    base = os.path.dirname(os.path.abspath(spec.file)) if spec.file not in ("<input>", "") else os.getcwd()
    for use in spec.uses:
        if "://" in use.path or use.path.startswith("\\\\"):
            res.diagnostics.append(
                Diagnostic("E0204", f"`use` takes a local file path, not a URL: {use.path!r}", use.span)
            )
            continue
        path = os.path.normpath(os.path.join(base, use.path))
        if path in stack:
            chain = " -> ".join(os.path.basename(p) for p in (*stack, path))
            res.diagnostics.append(Diagnostic("E0205", f"import cycle: {chain}", use.span))
            continue
        if len(stack) >= MAX_USE_DEPTH:
            res.diagnostics.append(Diagnostic("E0801", f"`use` nested deeper than {MAX_USE_DEPTH} files", use.span))
            continue
        if not os.path.isfile(path):
            res.diagnostics.append(
                Diagnostic("E0702", f"cannot find `{use.path}`", use.span, label=f"looked for {path}")
            )
            continue
        try:
            sub = loader(path)
        except Exception as exc:  # SpecError of the imported file: report its diagnostics
            from dsl.language.diagnostics import SpecError

            if isinstance(exc, SpecError):
                res.diagnostics.extend(exc.diagnostics)
                res.sources.update(exc.sources)
                continue
            res.diagnostics.append(Diagnostic("E0204", f"cannot import `{use.path}`: {exc}", use.span))
            continue
        _merge_imports(sub, res, (*stack, path), loader, pending)
        _collect_definitions(sub, res, pending, imported=True)


def _collect_definitions(spec: ir.Spec, res: Resolved, pending: list, imported: bool) -> None:
    for b in spec.blocks:
        if b.name in res.blocks and not imported:
            prev = res.blocks[b.name]
            res.diagnostics.append(
                Diagnostic("E0203", f"block `{b.name}` is defined twice", b.name_span or b.span).note(
                    "first defined here", prev.name_span or prev.span
                )
            )
        if imported:
            res.blocks.setdefault(b.name, b)
        else:
            res.blocks[b.name] = b
    pending.extend((p, imported) for p in spec.params)


# --------------------------------------------------------------------------- params


def _eval_params(res: Resolved, pending: list[tuple[ir.Param, bool]], overrides: Mapping[str, Any], used: set[str]) -> None:
    for p, imported in pending:
        if p.name in res.params and not imported and res.params[p.name].origin == "spec":
            res.diagnostics.append(Diagnostic("E0203", f"param `{p.name}` is defined twice", p.span))
            continue
        if p.name in overrides:
            used.add(p.name)
            res.params[p.name] = ParamValue(overrides[p.name], NO_SPAN, "override")
            continue
        try:
            value = eval_const(p.value, lambda n, s: _lookup_param(res, n, s))
        except ConstError as e:
            res.diagnostics.append(Diagnostic(e.code, e.message, e.span, help=e.help))
            continue
        res.params[p.name] = ParamValue(value, p.span)


def _lookup_param(res: Resolved, name: str, span: Span, extra: Mapping[str, ParamValue] | None = None) -> Const:
    if extra and name in extra:
        return extra[name].value
    if name in res.params:
        return res.params[name].value
    choices = list(res.params) + list(extra or {})
    raise ConstError(f"unknown param `{name}`", span, "E0201", help=did_you_mean(name, choices))


def _eval_model_args(res: Resolved, overrides: Mapping[str, Any], used: set[str]) -> None:
    model = res.model
    if model is None:
        return
    for decl in model.params:
        if decl.name in overrides:
            used.add(decl.name)
            try:
                res.model_args[decl.name] = ParamValue(
                    coerce(overrides[decl.name], decl.type, decl.span, f"param `{decl.name}`"), decl.span, "override"
                )
            except ConstError as e:
                res.diagnostics.append(
                    Diagnostic("E0404", f"invalid override for `{decl.name}`: {e.message}", decl.span)
                )
            continue
        if decl.default is None:
            res.diagnostics.append(
                Diagnostic(
                    "E0403",
                    f"model param `{decl.name}` has no default and no value",
                    decl.span,
                    help=f"give it with --set {decl.name}=... or dsl.compile(spec, {decl.name}=...)",
                )
            )
            continue
        try:
            value = eval_const(decl.default, lambda n, s: _lookup_param(res, n, s, res.model_args))
            res.model_args[decl.name] = ParamValue(coerce(value, decl.type, decl.default.span, f"param `{decl.name}`"), decl.span, "default")
        except ConstError as e:
            res.diagnostics.append(Diagnostic(e.code, e.message, e.span, help=e.help))


def resolve(
    spec: ir.Spec,
    overrides: Mapping[str, Any] | None = None,
    loader: Callable[[str], ir.Spec] | None = None,
) -> Resolved:
    """Merge imports, evaluate params and model params with ``overrides`` applied."""
    overrides = dict(overrides or {})
    res = Resolved(spec=spec, model=spec.model, train=spec.train)
    root = os.path.abspath(spec.file) if spec.file not in ("<input>", "") else "<input>"
    pending: list[tuple[ir.Param, bool]] = []
    _merge_imports(spec, res, (root,), loader or _read_spec, pending)
    _collect_definitions(spec, res, pending, imported=False)
    used: set[str] = set()
    _eval_params(res, pending, overrides, used)
    _eval_model_args(res, overrides, used)
    for name in overrides:
        if name not in used:
            choices = list(res.params) + [p.name for p in (res.model.params if res.model else ())]
            res.diagnostics.append(
                Diagnostic(
                    "E0404",
                    f"`--set {name}=...` does not name a param of this spec",
                    Span(file=spec.file),
                    help=did_you_mean(name, choices) or (f"params: {', '.join(sorted(choices))}" if choices else None),
                )
            )
    if spec.model is None:
        res.diagnostics.append(
            Diagnostic("E0208", "no `model` in this spec", Span(file=spec.file, line=1, col=1, end_line=1, end_col=1),
                       help="a spec needs one `model Name(...) { ... }` (or `model:` in YAML)")
        )
    return res
