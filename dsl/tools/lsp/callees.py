"""Everything a spec can call, described alike for hover and completion.

In a model or block body: the registered blocks and functions, and the user's
blocks. In the train section, by key: data sources, optimizers, schedules,
``early_stop``, pruning methods, ProtoPNet's stages, metrics and loss functions
(registered functions whose one output is ``loss``).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

from pydantic import BaseModel

from dsl.checking.train.config import OPTIMIZERS, SCHEDULES, EarlyStopArgs
from dsl.checking.train.metrics import METRICS, MetricDecl
from dsl.checking.train.prune import METHODS, MagnitudeArgs
from dsl.checking.train.stages import STAGES
from dsl.data import lookup_source, source_names
from dsl.language import ir, registry
from dsl.language.diagnostics import Span
from dsl.language.printer import expr_to_text, shape_to_text
from dsl.tools.catalogue import field_rows

PRUNERS: dict[str, type[BaseModel]] = {"magnitude": MagnitudeArgs}
assert set(PRUNERS) == set(METHODS), "a pruning method without its arguments model"


@dataclass
class Param:
    name: str
    type: str
    default: str  # as a spec writes it, or "required"
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default == "required"


@dataclass
class Callee:
    """A block, function, data source, optimizer, ... and what it takes."""

    name: str
    kind: str
    inputs: list[str] = field(default_factory=list)  # the tensors it needs, in order
    options: list[Param] = field(default_factory=list)  # optional tensor inputs, given by keyword
    params: list[Param] = field(default_factory=list)
    shapes: str = ""  # e.g. "[..., F] -> [..., out]"
    doc: str = ""  # the first paragraph of its documentation
    paper: str = ""
    where: Span | None = None  # a user block's definition

    @property
    def signature(self) -> str:
        """As DESIGN writes them: tensors, required hyperparameters, then keywords with defaults."""
        required = [p.name for p in self.params if p.required]
        optional = [f"{p.name}={p.default}" for p in [*self.options, *self.params] if not p.required]
        return f"{self.name}({', '.join([*self.inputs, *required, *optional])})"

    def param(self, name: str) -> Param | None:
        return next((p for p in [*self.params, *self.options] if p.name == name), None)


def first_paragraph(doc: str) -> str:
    return doc.strip().split("\n\n")[0].strip()


def _params(model: type[BaseModel], hidden: tuple[str, ...] = ()) -> list[Param]:
    return [Param(r["name"], r["type"], r["default"], r["doc"]) for r in field_rows(model) if r["name"] not in hidden]


def of_decl(decl: registry.Decl) -> Callee:
    inputs = [("*" if a.variadic else "") + a.name for a in decl.required_inputs]
    options = [Param(a.name, "tensor", a.default or "null", a.doc) for a in decl.optional_inputs]
    kind = "loss" if is_loss(decl) else decl.kind
    return Callee(decl.name, kind, inputs, options, _params(decl.params), decl.signature, first_paragraph(decl.doc),
                  decl.paper)


def of_block(bdef: ir.BlockDef) -> Callee:
    """A user block (called with its inputs) or the model (whose inputs the caller gives by name)."""
    inputs = [i.name for i in bdef.inputs] if not bdef.is_model else []
    params = [Param(p.name, p.type or "any", expr_to_text(p.default) if p.default is not None else "required")
              for p in bdef.params]
    ins = ", ".join(_decl_text(i) for i in bdef.inputs)
    outs = ", ".join(_decl_text(o) for o in bdef.outputs)
    kind = "model" if bdef.is_model else "user block"
    return Callee(bdef.name, kind, inputs, params=params, shapes=f"{ins} -> {outs}", where=bdef.name_span or bdef.span)


def _decl_text(d: ir.TensorDecl) -> str:
    shape = f": {shape_to_text(d.shape)}" if d.shape is not None else ""
    return f"{d.name}{shape}{' ' + d.dtype if d.dtype else ''}"


def is_loss(decl: registry.Decl) -> bool:
    return decl.kind == "function" and decl.outputs == ("loss",)


def of_metric(m: MetricDecl) -> Callee:
    params = [Param(k, " | ".join(t.__name__ for t in types), "required") for k, types in m.consts.items()]
    mask = Param("mask", "tensor", "null", "the rows that count")
    return Callee(m.name, "metric", [a.name for a in m.args], [mask], params, doc=m.doc)


def model_callees(blocks: dict[str, ir.BlockDef]) -> dict[str, Callee]:
    """What a model or block body can call: registered blocks and functions, the user's blocks."""
    return {**_registered(), **{name: of_block(b) for name, b in blocks.items()}}


@functools.cache
def _registered() -> dict[str, Callee]:
    """The registry's blocks and functions (loaded once per process, plugins included)."""
    return {name: of_decl(decl) for name, decl in registry.load().items()}


@functools.cache
def train_callees(key: str | None) -> dict[str, Callee]:
    """What the value of train key ``key`` can call (every train function when None)."""
    tables = {
        "data": _sources,
        "optimizer": lambda: _models(OPTIMIZERS, "optimizer"),
        "schedule": lambda: _models(SCHEDULES, "schedule"),
        "early_stop": lambda: {"early_stop": Callee("early_stop", "early stopping", params=_params(EarlyStopArgs),
                                                    doc="stop when a metric stops improving")},
        "prune": lambda: _models(PRUNERS, "pruning"),
        "stages": lambda: _models(STAGES, "ProtoPNet stage"),
        "metrics": lambda: {**{n: of_metric(m) for n, m in METRICS.items()}, **_losses()},
        "loss": lambda: _functions(),
    }
    if key is not None:
        return tables[key]() if key in tables else {}
    out: dict[str, Callee] = {}
    for make in tables.values():
        out.update(make())
    return out


def _sources() -> dict[str, Callee]:
    out = {}
    for name in source_names():
        src = lookup_source(name)
        if src is not None:
            params = _params(src.params, hidden=("base_dir",))
            out[name] = Callee(name, "data source", list(src.positional),
                               params=[p for p in params if p.name not in src.positional], doc=first_paragraph(src.doc))
    return out


def _models(table: dict[str, type[BaseModel]], kind: str) -> dict[str, Callee]:
    return {name: Callee(name, kind, params=_params(model), doc=first_paragraph(model.__doc__ or ""))
            for name, model in table.items()}


def _losses() -> dict[str, Callee]:
    return {n: of_decl(d) for n, d in registry.load().items() if is_loss(d)}


def _functions() -> dict[str, Callee]:
    """A loss is an expression of the model's functions and the loss functions."""
    return {n: of_decl(d) for n, d in registry.load().items() if d.kind == "function"}


def use_target(spec_file: str, path: str) -> str:
    """The file ``use "path"`` names, resolved as the resolver does: next to the spec."""
    base = os.path.dirname(os.path.abspath(spec_file)) if spec_file not in ("<input>", "") else os.getcwd()
    return os.path.normpath(os.path.join(base, path))
