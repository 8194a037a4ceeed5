"""JSON Schema (draft 2020-12) of YAML specs (``dsl schema``). Pure Python.

Generated, never written by hand: the document structure mirrors what
:mod:`dsl.language.yaml_reader` reads (the same key lists), and every
registered block and function contributes the schema of its ``with`` mapping
from its pydantic params (types, defaults, ranges, enums, docs) plus its
optional tensor inputs. A node ``{op: Linear, with: {...}}`` is checked
against ``Linear``'s params through an ``if``/``then`` on ``op``, so an editor's
YAML language server completes and validates hyperparameters.

Wherever a value may be an expression over params, ``"${...}"`` is accepted
too; the schema cannot evaluate it, so the checker remains the authority (the
schema catches typos and wrong types early; ``dsl check`` catches the rest).
"""

from __future__ import annotations

import re
import typing
from typing import Any

from pydantic.json_schema import GenerateJsonSchema

from dsl.language import registry
from dsl.language.ir import DTYPES
from dsl.language.yaml_reader import PARAM_TYPES, RESERVED

SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"
IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"
EXPR = r"^\$\{[\s\S]*\}$"

TRAIN_DOCS = {
    "data": 'the data source, e.g. "digits(batch=64)", "karate()" or a file: "data.npz"',
    "loss": 'the loss over outputs and data fields, e.g. "cross_entropy(logits, y)"',
    "metrics": 'metrics to report, e.g. ["accuracy(logits, y)"]',
    "optimizer": 'e.g. "adam(lr=0.01, weight_decay=5e-4)"',
    "schedule": "a learning-rate schedule, stepped once per epoch",
    "epochs": "number of epochs",
    "seed": "random seed",
    "batch": "batch size",
    "grad_clip": "clip the gradient norm to this value",
    "early_stop": 'stop when a validation metric stops improving: "early_stop(metric=accuracy, patience=10)"',
    "push_every": "ProtoPNet's push: project prototypes onto training patches every n epochs",
    "prune": 'gradual magnitude pruning: "magnitude(sparsity=0.8, end=20)"',
    "stages": 'ProtoPNet\'s schedule: ["warm(epochs=5)", "joint(epochs=20, push_every=10)", "last_layer(epochs=5)"]',
}
INSTANCE = r"^[a-z_][A-Za-z0-9_]*$"  # a named block instance (`enc` after `{id: enc, op: MLP}`)


class _Lenient(GenerateJsonSchema):
    """Pydantic's generator, with ``{}`` for types JSON Schema cannot describe
    (block values are Python objects)."""

    def handle_invalid_for_json_schema(self, schema: Any, error_info: str) -> dict[str, Any]:
        return {}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/$defs/{_pointer(name)}"}


def _pointer(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _prefix_refs(node: Any, prefix: str) -> Any:
    """Move a model's own ``$defs`` references under ``prefix`` (they join ours)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith("#/$defs/"):
                out[k] = "#/$defs/" + _pointer(prefix) + "." + v[len("#/$defs/") :]
            else:
                out[k] = _prefix_refs(v, prefix)
        return out
    if isinstance(node, list):
        return [_prefix_refs(v, prefix) for v in node]
    return node


def _mentions_block_value(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, registry.BlockValue):
        return True
    return any(_mentions_block_value(a) for a in typing.get_args(annotation))


def _with_schema(decl: registry.Decl, defs: dict[str, Any]) -> dict[str, Any]:
    """The ``with`` mapping of one block or function."""
    raw = decl.params.model_json_schema(schema_generator=_Lenient)
    prefix = f"{decl.name}"
    for name, sub in raw.get("$defs", {}).items():
        defs[f"{prefix}.{name}"] = _prefix_refs(sub, prefix)
    raw_props = _prefix_refs(raw.get("properties", {}), prefix)
    props: dict[str, Any] = {}
    for name, field in decl.params.model_fields.items():
        own = dict(raw_props.get(name, {}))
        doc = {k: own.pop(k) for k in ("description", "default", "title") if k in own}
        doc.pop("title", None)
        if _mentions_block_value(field.annotation):
            alternatives = [_ref("blockValue"), {"type": "null"}, _ref("expr")]
        else:
            alternatives = [own or {}, _ref("expr")]
        props[name] = {**doc, "anyOf": alternatives}
    for arg in decl.optional_inputs:
        props[arg.name] = {
            "description": f"optional tensor input{': ' + arg.doc if arg.doc else ''}",
            **_ref("expr"),
        }
    schema: dict[str, Any] = {
        "type": "object",
        "description": f"hyperparameters of {decl.name}",
        "properties": props,
        "additionalProperties": False,
    }
    required = [n for n, f in decl.params.model_fields.items() if f.is_required()]
    if required:
        schema["required"] = required
    return schema


def _op_rules(table: dict[str, registry.Decl]) -> list[dict[str, Any]]:
    """``if op is X then with follows X's params`` for every registered name."""
    rules = []
    for name, decl in sorted(table.items()):
        then: dict[str, Any] = {"properties": {"with": _ref(f"with.{name}")}}
        if any(f.is_required() for f in decl.params.model_fields.values()):
            then["required"] = ["with"]
        rules.append(
            {"if": {"properties": {"op": {"const": name}}, "required": ["op"]}, "then": then}
        )
    return rules


def _summary(decl: registry.Decl) -> str:
    first = decl.doc.strip().splitlines()[0] if decl.doc.strip() else ""
    sig = f" {decl.signature}" if decl.signature else ""
    return f"{decl.name} ({decl.kind}){sig}: {first}".strip()


def _structure(table: dict[str, registry.Decl]) -> dict[str, Any]:
    ident = {"type": "string", "pattern": IDENT, "not": {"enum": sorted(RESERVED)}}
    names = sorted(table)
    op = {
        "description": "a registered block or function, or a block defined under `blocks` or in a `use`d file",
        "anyOf": [
            {"enum": names, "description": "registered: " + ", ".join(names)},
            {"type": "string", "pattern": IDENT, "description": "a block of this spec or a `use`d one, or an instance"},
        ],
    }
    value = {
        "description": 'a constant, a list, a block value {op, with} or "${expression}"',
        "anyOf": [
            {"type": ["number", "boolean", "null", "string"]},
            {"type": "array", "items": _ref("value")},
            _ref("blockValue"),
        ],
    }
    tensor_arg = {
        "anyOf": [
            {"type": ["string", "number", "boolean", "null"]},
            {"type": "array", "items": {"$ref": "#/$defs/tensorArg"}},
        ]
    }
    dim = {
        "description": 'an integer, a symbol (N), "_", "...", or an expression ("${hidden * 2}")',
        "type": ["integer", "string"],
    }
    shape = {
        "description": "a list of dimensions; [] is a scalar",
        "anyOf": [{"type": "array", "items": _ref("dim")}, {"type": "null"}],
    }
    dtype = {"enum": list(DTYPES), "description": "float (default), long, int or bool"}
    input_decl = {
        "anyOf": [
            {"type": "null"},
            _ref("shape"),
            {
                "type": "object",
                "properties": {"shape": _ref("shape"), "dtype": _ref("dtype")},
                "additionalProperties": False,
            },
        ]
    }
    output_decl = {
        "anyOf": [
            {"type": "null"},
            _ref("shape"),
            {
                "type": "object",
                "properties": {"shape": _ref("shape")},
                "additionalProperties": False,
            },
        ]
    }
    targets = {
        "description": "the name bound, or a list of names for several outputs",
        "anyOf": [
            _ref("identifier"),
            {"type": "array", "items": _ref("identifier"), "minItems": 1},
        ],
    }
    node_op = {
        "type": "object",
        "description": "{id: h, op: Linear, in: [x], with: {out: 16}}",
        "properties": {
            "id": targets,
            "op": _ref("op"),
            "in": {"description": "tensor arguments", **_ref("tensorArg")},
            "with": {"type": "object", "description": "hyperparameters and optional tensor inputs"},
        },
        "required": ["id", "op"],
        "additionalProperties": False,
        "allOf": _op_rules(table),
    }
    node_expr = {
        "type": "object",
        "description": '{id: h, expr: "relu(h) + x"}',
        "properties": {
            "id": targets,
            "expr": {
                "type": ["string", "number", "boolean", "null"],
                "description": "an expression of the text language",
            },
        },
        "required": ["id", "expr"],
        "additionalProperties": False,
    }
    repeat = {
        "type": "object",
        "description": "{repeat: 2, as: i, nodes: [...]}: unrolled copies, each with its own weights",
        "properties": {
            "repeat": {"type": ["integer", "string"], "description": "number of copies"},
            "as": _ref("identifier"),
            "nodes": _ref("nodes"),
        },
        "required": ["repeat", "nodes"],
        "additionalProperties": False,
    }
    inline_input = {
        "type": "object",
        "required": ["input"],
        "additionalProperties": False,
        "properties": {"input": _ref("identifier"), "shape": _ref("shape"), "dtype": _ref("dtype")},
    }
    inline_output = {
        "type": "object",
        "required": ["output"],
        "additionalProperties": False,
        "properties": {"output": _ref("identifier"), "shape": _ref("shape")},
    }
    param_decl = {
        "anyOf": [
            {
                "type": "object",
                "properties": {"type": {"enum": list(PARAM_TYPES)}, "default": _ref("value")},
                "additionalProperties": False,
            },
            {"type": ["number", "boolean", "null", "string"]},
            {"type": "array", "items": _ref("value")},
        ]
    }
    body_props = {
        "args": {
            "type": "object",
            "description": "typed params: name: default, or name: {type, default}",
            "propertyNames": ident,
            "additionalProperties": _ref("paramDecl"),
        },
        "inputs": {
            "type": "object",
            "propertyNames": ident,
            "additionalProperties": _ref("inputDecl"),
        },
        "nodes": _ref("nodes"),
        "outputs": {
            "type": "object",
            "propertyNames": ident,
            "additionalProperties": _ref("outputDecl"),
        },
    }
    return {
        "identifier": ident,
        "expr": {
            "type": "string",
            "pattern": EXPR,
            "description": 'an expression over params: "${hidden * 2}"',
        },
        "value": value,
        "blockValue": {
            "type": "object",
            "description": "a block used as a value: {op: MLP, with: {hidden: 64, out: 16}}",
            "properties": {"op": _ref("op"), "with": {"type": "object"}},
            "required": ["op"],
            "additionalProperties": False,
            "allOf": _op_rules(table),
        },
        "op": op,
        "tensorArg": tensor_arg,
        "dim": dim,
        "shape": shape,
        "dtype": dtype,
        "inputDecl": input_decl,
        "outputDecl": output_decl,
        "paramDecl": param_decl,
        "node": {"oneOf": [node_op, node_expr, repeat, inline_input, inline_output]},
        "nodes": {"type": "array", "items": _ref("node")},
        "block": {"type": "object", "properties": body_props, "additionalProperties": False},
        "model": {
            "type": "object",
            "properties": {"name": _ref("identifier"), **body_props},
            "required": ["name"],
            "additionalProperties": False,
        },
        "trainValue": {
            "anyOf": [
                {"type": ["string", "number", "boolean", "null"]},
                {"type": "array", "items": _ref("trainValue")},
            ]
        },
    }


def _registered_ops(names: list[str]) -> dict[str, Any]:
    """The model's nodes and block values, with ``op`` one of the registered ``names`` or a
    named instance: what a spec without blocks of its own (no ``blocks``, no ``use``) may call."""
    op = {"anyOf": [{"enum": names}, {"type": "string", "pattern": INSTANCE}],
          "description": "a registered block or function (this spec defines no blocks), or a named instance"}
    value = {
        "properties": {"op": op, "with": {"additionalProperties": _ref("registeredOps.value")}},
        "items": _ref("registeredOps.value"),
    }
    nodes = {
        "type": "array",
        "items": {
            "properties": {
                "op": op,
                "nodes": _ref("registeredOps.nodes"),
                "with": {"additionalProperties": _ref("registeredOps.value")},
            }
        },
    }
    return {
        "registeredOps.model": {"properties": {"nodes": _ref("registeredOps.nodes")}},
        "registeredOps.nodes": nodes,
        "registeredOps.value": value,
    }


_TEXT = {"type": "string", "minLength": 1, "description": "an expression of the text language"}
_WRAPPED = r"^\s*(?:\$\{\s*)?"  # a train value may be wrapped in ${...}


def _calling(names: list[str], bare: bool = False, literal: bool = False) -> dict[str, Any]:
    """A string that calls one of ``names`` (``adam(lr=0.01)``); with ``bare`` the name alone
    does too (``adam``), with ``literal`` a quoted string too (a file: ``'"data.npz"'``)."""
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    head = rf"[\"']?(?:{alternatives})\b" if bare else rf"(?:{alternatives})\s*\("
    if literal:
        head = rf"(?:{head}|[\"'])"
    return {"type": "string", "pattern": _WRAPPED + head, "description": "one of: " + ", ".join(sorted(names))}


def _count(low: int) -> dict[str, Any]:
    return {"anyOf": [{"type": "integer", "minimum": low}, _TEXT]}


def _train_values() -> dict[str, dict[str, Any]]:
    """What a schema can say of each train value: numbers typed, calls named; expressions are strings."""
    from dsl.checking.train.config import OPTIMIZERS, SCHEDULES
    from dsl.checking.train.metrics import METRICS
    from dsl.checking.train.prune import METHODS
    from dsl.checking.train.stages import STAGES
    from dsl.data import source_names

    losses = [n for n, d in registry.load().items() if d.kind == "function" and d.outputs == ("loss",)]
    metric = _calling([*METRICS, *losses])
    return {
        "data": _calling(source_names(), literal=True),
        "loss": _TEXT,
        "metrics": {"anyOf": [metric, {"type": "array", "items": metric}]},
        "optimizer": _calling(list(OPTIMIZERS), bare=True),
        "schedule": _calling(list(SCHEDULES), bare=True),
        "epochs": _count(1),
        "seed": _count(0),
        "batch": _count(1),
        "grad_clip": {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, _TEXT]},
        "early_stop": _calling(["early_stop"]),
        "push_every": _count(1),
        "prune": _calling(list(METHODS)),
        "stages": {"type": "array", "items": _calling(list(STAGES))},
    }


def _train(keys: tuple[str, ...]) -> dict[str, Any]:
    values = _train_values()
    props = {
        k: {"description": TRAIN_DOCS.get(k, f"train key `{k}`"), **values.get(k, _ref("trainValue"))}
        for k in keys
    }
    return {
        "type": "object",
        "description": "how `dsl train` trains the model",
        "properties": props,
        "additionalProperties": False,
    }


def spec_schema() -> dict[str, Any]:
    """The JSON Schema of a YAML spec, from the registry as loaded now (plugins included)."""
    from dsl.checking.train.config import KEYS

    table = registry.load()
    defs = {**_structure(table), **_registered_ops(sorted(table))}
    for name, decl in sorted(table.items()):
        defs[f"with.{name}"] = {"description": _summary(decl), **_with_schema(decl, defs)}
    return {
        "$schema": SCHEMA_URI,
        "$id": "urn:dsl:spec.schema.json",
        "title": "dsl spec (YAML form)",
        "description": "A neural network spec: params, imports, blocks, one model and a train section.",
        "type": "object",
        "properties": {
            "params": {
                "type": "object",
                "description": "constants, overridable with --set",
                "propertyNames": _ref("identifier"),
                "additionalProperties": _ref("value"),
            },
            "use": {
                "description": "other spec files whose params and blocks this one imports",
                "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
            },
            "blocks": {
                "type": "object",
                "description": "composite blocks, by name",
                "propertyNames": _ref("identifier"),
                "additionalProperties": _ref("block"),
            },
            "model": _ref("model"),
            "train": _train(tuple(KEYS)),
        },
        "additionalProperties": False,
        # Without blocks of its own, a spec may only call registered names (`op: Linaer` fails).
        "if": {"anyOf": [{"required": ["blocks"]}, {"required": ["use"]}]},
        "else": {"properties": {"model": _ref("registeredOps.model")}},
        "$defs": defs,
    }
