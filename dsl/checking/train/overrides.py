"""``--set`` beyond params: train keys and the arguments of the optimizer, schedule and data. Pure Python.

``--set k=v`` overrides, in this order of precedence:

1. a param of the spec (or of its model, or of a file it uses);
2. a train key (``epochs``, ``batch``, ``precision``, ``optimizer``, ...): the
   section's entry is replaced, or added;
3. ``optimizer.ARG``, ``schedule.ARG`` or ``data.ARG``: that call's keyword;
4. a bare argument name of the section's optimizer (``lr``, ``momentum``; the
   default optimizer ``adam()`` when the section names none), else of its
   schedule (``t_max``), else of its data source (``val``, ``per_class``).

Train overrides rewrite the spec's train section before it is checked, so every
value goes through the same checks (and diagnostics) as one written in the
spec; their spans name the ``--set`` they came from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

from dsl.checking.train.config import KEYS, OPTIMIZERS, SCHEDULES
from dsl.data import lookup_source
from dsl.language import ir
from dsl.language.diagnostics import Diagnostic, Span, did_you_mean

SECTIONS = ("optimizer", "schedule", "data")
DEFAULT_OPTIMIZER = "adam"


def route_overrides(spec: ir.Spec, overrides: Mapping[str, Any],
                    param_names: Callable[[], set[str]]) -> tuple[ir.Spec, dict[str, Any], list[Diagnostic]]:
    """(spec with its train section overridden, the param overrides left for resolve, problems)."""
    params: dict[str, Any] = {}
    diags: list[Diagnostic] = []
    train = spec.train
    # Whole entries first (optimizer=sgd), then their arguments (momentum=0.9), whatever the order given.
    ordered = sorted(overrides.items(), key=lambda kv: kv[0] not in KEYS)
    for key, value in ordered:
        if not _train_shaped(key) or key in param_names():
            params[key] = value  # resolve sets it, or reports it
            continue
        new = _apply(train, key, value) if train is not None else None
        if new is not None:
            train = new
        elif train is None and (key in KEYS or "." in key):
            diags.append(Diagnostic("E0404", f"`--set {key}=...` sets a train key, but this spec has no train section",
                                    Span(file=spec.file)))
        else:
            choices = sorted(param_names()) + override_targets(spec)
            diags.append(Diagnostic("E0404", f"`--set {key}=...` names no param, train key or argument of this spec",
                                    Span(file=spec.file), help=did_you_mean(key, choices)
                                    or f"params and train keys: {', '.join(choices)}"))
    if train is not spec.train:
        spec = spec.model_copy(update={"train": train})
    return spec, params, diags


def override_targets(spec: ir.Spec) -> list[str]:
    """Every name ``--set`` can reach in the train section (for "did you mean")."""
    train = spec.train or ir.TrainSection()
    return [*KEYS, *_args(train, "optimizer"), *_args(train, "schedule"), *_args(train, "data")]


def _train_shaped(key: str) -> bool:
    head, dot, arg = key.partition(".")
    return bool(dot) and head in SECTIONS and arg.isidentifier() or key.isidentifier()


def _apply(train: ir.TrainSection, key: str, value: Any) -> ir.TrainSection | None:
    head, dot, arg = key.partition(".")
    if dot:
        return _set_argument(train, head, arg, value, key)
    if key in KEYS:
        return _set_entry(train, key, _expr(value, key))
    for section in SECTIONS:
        if key in _args(train, section):
            return _set_argument(train, section, key, value, key)
    return None


def _call_of(train: ir.TrainSection, section: str) -> ir.Call | None:
    """The section's call for ``optimizer``/``schedule``/``data`` (``adam`` means ``adam()``)."""
    entry = train.get(section)
    if entry is None:
        return ir.Call(func=DEFAULT_OPTIMIZER) if section == "optimizer" else None
    v = entry.value
    if isinstance(v, ir.Call):
        return v
    if isinstance(v, ir.Name):
        return ir.Call(func=v.id, span=v.span, func_span=v.span)
    if isinstance(v, ir.Str):
        if section == "data":  # data = "rows.csv" is file("rows.csv")
            return ir.Call(func="file", args=(v,), span=v.span, func_span=v.span)
        return ir.Call(func=v.value, span=v.span, func_span=v.span)
    return None


def _args(train: ir.TrainSection, section: str) -> list[str]:
    call = _call_of(train, section)
    if call is None:
        return []
    if section == "data":
        src = lookup_source(call.func)
        fields = list(src.params.model_fields) if src is not None else []
        return [f for f in fields if f not in ("base_dir", *KEYS)]
    table = OPTIMIZERS if section == "optimizer" else SCHEDULES
    model = table.get(call.func)
    return [f for f in (model.model_fields if model is not None else ()) if f not in KEYS]


def _set_argument(train: ir.TrainSection, section: str, arg: str, value: Any, key: str) -> ir.TrainSection | None:
    call = _call_of(train, section)
    if call is None:
        return None
    expr = _expr(value, key)
    kwargs = [k for k in call.kwargs if k.name != arg]
    kwargs.append(ir.Keyword(name=arg, value=expr, span=expr.span))
    return _set_entry(train, section, call.model_copy(update={"kwargs": tuple(kwargs)}))


def _set_entry(train: ir.TrainSection, key: str, value: ir.Expr) -> ir.TrainSection:
    entries = list(train.entries)
    for i, e in enumerate(entries):
        if e.key == key:
            entries[i] = e.model_copy(update={"value": value})
            break
    else:
        entries.append(ir.TrainEntry(key=key, value=value, span=value.span, key_span=value.span))
    return train.model_copy(update={"entries": tuple(entries)})


def _expr(value: Any, key: str) -> ir.Expr:
    """``value`` as an expression of the text language, spanned at its ``--set``."""
    span = Span(file=f"--set {key}={_text(value)}")
    if isinstance(value, bool):
        return ir.Bool(value=value, span=span)
    if isinstance(value, (int, float)):
        return ir.Num(value=value, span=span)
    if value is None:
        return ir.NoneLit(span=span)
    if isinstance(value, (list, tuple)):
        return ir.ListExpr(items=tuple(_expr(v, key) for v in value), span=span)
    text = str(value)
    from dsl.language.text import parse_expr

    try:
        parsed = parse_expr(text, file=span.file)
    except Exception:  # not an expression: the text itself is the value
        return ir.Str(value=text, span=span)
    if isinstance(parsed, (ir.Call, ir.Name, ir.ListExpr)):
        return _respan(parsed, span)
    return ir.Str(value=text, span=span)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    return str(value)


def _respan(node: Any, span: Span) -> Any:
    """A copy of an IR value whose spans all point at ``span`` (the ``--set`` it came from)."""
    if isinstance(node, BaseModel):
        updates = {}
        for name in type(node).model_fields:
            value = getattr(node, name)
            updates[name] = span if isinstance(value, Span) else _respan(value, span)
        return node.model_copy(update=updates)
    if isinstance(node, tuple):
        return tuple(_respan(v, span) for v in node)
    return node
