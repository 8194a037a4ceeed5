"""The YAML writer: :class:`~dsl.language.ir.Spec` -> the YAML form (``to_yaml``).

Deterministic, block style, one line per node; comments and blank lines are
placed where the text printer would put them (:mod:`dsl.language.yaml_comments`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from dsl.language.ir import (
    BlockDef,
    Bool,
    Call,
    DimExpr,
    Ellipsis_,
    Expr,
    Input,
    ListExpr,
    Name,
    NoneLit,
    Num,
    Output,
    ParamDecl,
    Repeat,
    Spec,
    Stmt,
    Str,
    TensorDecl,
    UnaryOp,
    Wildcard,
)
from dsl.language.printer import dim_to_text, expr_to_text
from dsl.language.yaml_comments import decorate
from dsl.language.yaml_reader import IDENTIFIER, infer_type


class _Flow:
    """A mapping or list written on one line (``{id: h, op: Linear}``)."""

    def __init__(self, value: dict[str, Any] | list[Any]) -> None:
        self.value = value


_PLAIN_RESERVED = frozenset({"yes", "no", "on", "off", "true", "false", "null", "~"})


def _scalar_text(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return ".nan"
        if math.isinf(v):
            return ".inf" if v > 0 else "-.inf"
        return repr(v)
    s = str(v)
    if IDENTIFIER.match(s) and s.lower() not in _PLAIN_RESERVED:
        return s
    return json.dumps(s, ensure_ascii=False)


def _flow_text(v: Any) -> str:
    if isinstance(v, _Flow):
        v = v.value
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_scalar_text(k)}: {_flow_text(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_flow_text(x) for x in v) + "]"
    return _scalar_text(v)


def _emit(v: Any, indent: int, out: list[str]) -> None:
    """Block-style YAML for dicts and lists; _Flow values and scalars inline."""
    pad = "  " * indent
    if isinstance(v, dict):
        for k, x in v.items():
            key = f"{pad}{_scalar_text(k)}:"
            if isinstance(x, (dict, list)) and x:
                out.append(key)
                _emit(x, indent + 1, out)
            else:
                out.append(f"{key} {_flow_text(x)}")
    elif isinstance(v, list):
        for x in v:
            if isinstance(x, dict) and x:
                sub: list[str] = []
                _emit(x, indent + 1, sub)
                sub[0] = f"{pad}- " + sub[0][len(pad) + 2 :]
                out.extend(sub)
            else:
                out.append(f"{pad}- {_flow_text(x)}")


def _expr_text(e: Expr) -> str:

    return expr_to_text(e)


def _wrap(e: Expr) -> str:
    return "${" + _expr_text(e) + "}"


def _number(e: Expr) -> int | float | None:
    """The number a literal (or a negated positive literal) stands for."""
    if isinstance(e, Num) and (e.value >= 0 or isinstance(e.value, float) and math.isnan(e.value)):
        return e.value
    if isinstance(e, UnaryOp) and e.op == "-" and isinstance(e.operand, Num) and e.operand.value > 0:
        return -e.operand.value
    return None


def _with_value(e: Expr) -> Any:
    """A hyperparameter value as YAML data (literal, list, block value or ${...})."""
    if _number(e) is not None:
        return _number(e)
    if isinstance(e, Bool):
        return e.value
    if isinstance(e, NoneLit):
        return None
    if isinstance(e, Str):
        return _wrap(e) if "${" in e.value else e.value
    if isinstance(e, ListExpr):
        return _Flow([_with_value(i) for i in e.items])
    if isinstance(e, Call) and not e.args:
        body: dict[str, Any] = {"op": e.func}
        if e.kwargs:
            body["with"] = _Flow({k.name: _with_value(k.value) for k in e.kwargs})
        return _Flow(body)
    return _wrap(e)


def _expr_value(e: Expr) -> Any:
    """A text-expression position (``in``, ``expr``, ``train``, ``repeat``)."""
    if _number(e) is not None:
        return _number(e)
    if isinstance(e, Bool):
        return e.value
    if isinstance(e, NoneLit):
        return None
    return _expr_text(e)


def _dim_value(d: DimExpr) -> Any:

    if isinstance(d, (Num, UnaryOp)) and isinstance(_number(d), int):
        return _number(d)
    if isinstance(d, Wildcard):
        return "_"
    if isinstance(d, Ellipsis_):
        return "..."
    if isinstance(d, Name) and d.id[:1].isupper():
        return d.id
    return "${" + dim_to_text(d) + "}"


def _decl_fields(d: TensorDecl) -> _Flow:
    body: dict[str, Any] = {}
    if d.shape is not None:
        body["shape"] = _Flow([_dim_value(x) for x in d.shape.dims])
    if isinstance(d, Input) and d.dtype is not None:
        body["dtype"] = d.dtype
    return _Flow(body)


def _statement(s: Stmt) -> Any:
    if isinstance(s, Repeat):
        body: dict[str, Any] = {"repeat": _expr_value(s.count)}
        if s.var is not None:
            body["as"] = s.var
        body["nodes"] = [_statement(x) for x in s.body]
        return body
    if isinstance(s, (Input, Output)):
        head = {"input" if isinstance(s, Input) else "output": s.name}
        return _Flow({**head, **_decl_fields(s).value})
    names = [t.name for t in s.targets]
    node: dict[str, Any] = {"id": names[0] if len(names) == 1 else _Flow(names)}
    v = s.value
    if isinstance(v, Call) and all(isinstance(a, Name) for a in v.args):
        node["op"] = v.func
        if v.args:
            node["in"] = _Flow([a.id for a in v.args])
        if v.kwargs:
            node["with"] = _Flow({k.name: _with_value(k.value) for k in v.kwargs})
    else:
        node["expr"] = _expr_value(v)
    return _Flow(node)


def _split_body(body: Sequence[Stmt]) -> tuple[list[Input], list[Stmt], list[Output]]:
    """Leading inputs and trailing outputs (names unique) go to the mappings;
    everything else stays in ``nodes`` in order, so the round trip is exact."""
    inputs: list[Input] = []
    i = 0
    while i < len(body) and isinstance(body[i], Input) and body[i].name not in {x.name for x in inputs}:
        inputs.append(body[i])  # type: ignore[arg-type]
        i += 1
    outputs: list[Output] = []
    j = len(body)
    while j > i and isinstance(body[j - 1], Output) and body[j - 1].name not in {x.name for x in outputs}:
        outputs.insert(0, body[j - 1])  # type: ignore[arg-type]
        j -= 1
    return inputs, list(body[i:j]), outputs


def _param_decl(p: ParamDecl) -> Any:
    if p.default is not None and p.type is not None and infer_type(p.default) == p.type:
        if not (isinstance(p.default, Str) and "${" in p.default.value):
            return _with_value(p.default)
    body: dict[str, Any] = {}
    if p.type is not None:
        body["type"] = p.type
    if p.default is not None:
        body["default"] = _with_value(p.default)
    return _Flow(body)


def _block(b: BlockDef) -> dict[str, Any]:
    out: dict[str, Any] = {"name": b.name} if b.is_model else {}
    if b.params:
        out["args"] = {p.name: _param_decl(p) for p in b.params}
    inputs, nodes, outputs = _split_body(b.body)
    if inputs:
        out["inputs"] = {d.name: _decl_fields(d) for d in inputs}
    if nodes:
        out["nodes"] = [_statement(s) for s in nodes]
    if outputs:
        out["outputs"] = {d.name: _decl_fields(d) for d in outputs}
    return out


def _train_value(e: Expr) -> Any:
    if isinstance(e, ListExpr):
        return _Flow([_expr_value(i) for i in e.items])
    return _expr_value(e)


def to_yaml(spec: Spec) -> str:
    """The YAML form of a spec: deterministic, block style, one line per node.
    Comments and blank lines are kept where the text printer would put them."""
    doc: dict[str, Any] = {}
    if spec.params:
        doc["params"] = {p.name: _with_value(p.value) for p in spec.params}
    if spec.uses:
        doc["use"] = _Flow([u.path for u in spec.uses])
    if spec.blocks:
        doc["blocks"] = {b.name: _block(b) or _Flow({}) for b in spec.blocks}
    if spec.model is not None:
        doc["model"] = _block(spec.model)
    if spec.train is not None:
        doc["train"] = {e.key: _train_value(e.value) for e in spec.train.entries} or _Flow({})
    if not doc:
        return decorate(spec, "{}\n")
    lines: list[str] = []
    _emit(doc, 0, lines)

    return decorate(spec, "\n".join(lines) + "\n")


__all__ = ["to_yaml", "write"]


def write(spec: Spec) -> str:
    """The format registry's entry point (:mod:`dsl.language.formats`)."""
    return to_yaml(spec)
