"""The static side of ``push_every = n`` (the ProtoPNet push). Pure Python.

The push (:mod:`dsl.training.hooks.push`) moves each prototype onto its nearest
training embedding of its own class. It needs a PrototypeHead in the model and
class labels: the target of the loss's first class-label term (else of the
first ``accuracy`` metric), with that term's ``mask=``.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsl.checking.program import Program, arg_refs
from dsl.checking.receptive import ReceptiveField, receptive_field
from dsl.checking.train.config import TrainConfig
from dsl.language.diagnostics import Diagnostic
from dsl.language.ir import Call, Name

HEAD_BLOCK = "PrototypeHead"
#: Loss functions whose second argument is a class label, in order of preference.
LABEL_TERMS = ("cross_entropy", "nll", "cluster_cost", "separation_cost")


@dataclass(frozen=True)
class LabelSource:
    """Where the class labels come from: a field (model output or data field) and a row mask."""

    label: str
    mask: str | None
    term: str  # the loss or metric term they were taken from, for messages


def _label_of(c: Call) -> LabelSource | None:
    if len(c.args) < 2 or not isinstance(c.args[1], Name):
        return None
    mask = c.kwarg("mask")
    return LabelSource(c.args[1].id, mask.id if isinstance(mask, Name) else None, c.func)


def label_source(cfg: TrainConfig) -> LabelSource | None:
    """The class labels the push uses: the loss's first label term, else the first accuracy metric."""
    if cfg.loss is not None:
        for node in cfg.loss.walk():
            if isinstance(node, Call) and node.func in LABEL_TERMS and (found := _label_of(node)) is not None:
                return found
    for m in cfg.metrics:
        if m.expr.func == "accuracy" and (found := _label_of(m.expr)) is not None:
            return found
    return None


def uses_block(prog: Program, block: str) -> bool:
    """Whether the checked program calls ``block``, directly or inside a user block."""
    for spec in prog.modules.values():
        if spec.decl is not None and spec.decl.name == block:
            return True
        if getattr(spec.value, "name", None) == block:
            return True
        if spec.program is not None and uses_block(spec.program, block):
            return True
    return False


def head_fields(prog: Program) -> dict[str, ReceptiveField]:
    """The receptive field in the model input of each top-level head on a feature map, by module name:
    where a pushed patch prototype came from (see :mod:`dsl.checking.receptive`)."""
    fields: dict[str, ReceptiveField] = {}
    for node in prog.nodes:
        if node.decl is None or node.decl.name != HEAD_BLOCK or node.module is None:
            continue
        z = arg_refs(node.args)[:1]
        rank = len(prog.type_of(z[0]).shape) if z else 0
        if rank >= 3:
            field = receptive_field(prog, z[0], rank - 2)
            if field is not None:
                fields[node.module] = field
    return fields


def check_push_rows(cfg: TrainConfig, prog: Program, label_types: dict[str, object]) -> list[Diagnostic]:
    """The push needs one class label per embedding the head sees: a head on [B*T, D] with labels [B] cannot push."""
    source = label_source(cfg)
    if (cfg.push_every is None and cfg.push_epochs() is None) or source is None:
        return []
    label = label_types.get(source.label)
    rows_label = prog.env.resolve(label.shape[0]) if getattr(label, "shape", None) else None  # type: ignore[union-attr]
    out = []
    for node in prog.nodes:
        if node.decl is None or node.decl.name != HEAD_BLOCK or not arg_refs(node.args):
            continue
        z = prog.type_of(arg_refs(node.args)[0])
        rows = prog.env.resolve(z.shape[0]) if z.shape else None
        if rows is None or rows_label is None or rows == rows_label:
            continue
        if isinstance(rows, int) or isinstance(rows_label, int) or rows.name is None or rows_label.name is None:  # type: ignore[union-attr]
            out.append(Diagnostic(
                "E0501", f"the push needs one class label per embedding, and the PrototypeHead sees {rows} rows "
                f"where the labels `{source.label}` have {rows_label}", cfg.push_span,
                help="push a head that classifies one row per labelled example, or drop the push "
                     "(`push_every`, or the `stages` whose joint stages push)",
            ).note(f"`{node.var or node.name}` is computed here", node.span))
    return out


def check_push(cfg: TrainConfig, prog: Program) -> list[Diagnostic]:
    """Diagnostics for the push (``push_every``, or ``stages``, whose joint stages push): the model
    needs a PrototypeHead and the loss class labels."""
    if cfg.push_every is None and cfg.push_epochs() is None:
        return []
    cfg.push_fields = head_fields(prog)
    out: list[Diagnostic] = []
    if not uses_block(prog, HEAD_BLOCK) and not cfg.stages:  # with stages, check_stages says it
        out.append(Diagnostic(
            "E0501", "`push_every` pushes the prototypes of a PrototypeHead, and this model has none", cfg.push_span,
            help="remove `push_every`, or classify with `logits, dist = PrototypeHead(z, classes=...)`",
        ))
    if label_source(cfg) is None:
        what = "a joint stage's push" if cfg.stages else "`push_every`"
        out.append(Diagnostic(
            "E0501", f"{what} needs class labels, and neither the loss nor an accuracy metric names them",
            cfg.push_span, help=f"the push takes the target of the first {', '.join(LABEL_TERMS)} term of the loss",
        ))
    return out
