"""Which data fields are class labels, and how many classes they index. Pure Python.

``cross_entropy(logits, y)`` and ``nll(log_probs, y)`` read ``y`` as indices into
the class (last) dim of their first argument. A label outside ``0..C-1`` makes
torch fail deep inside training (``IndexError: Target 7 is out of bounds``), and
``-100``, torch's default ``ignore_index``, silently drops the row. So the
training layer checks every label a data file holds against these rules when
the data loads (:mod:`dsl.training.labels`); ``-100`` (or any value) is allowed
only where the spec passes it as ``ignore_index=`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsl.checking.program import Ref
from dsl.checking.train.objective import Objective
from dsl.language.diagnostics import Span

CLASS_TARGETS = frozenset({"cross_entropy", "nll"})


@dataclass(frozen=True)
class LabelRule:
    """Data field ``field`` holds class numbers below ``classes`` (or ``ignore``), as ``loss`` reads it."""

    field: str
    classes: int
    ignore: int | None
    loss: str
    span: Span


def label_rules(objective: Objective) -> list[LabelRule]:
    """One rule per class loss whose target is a data field and whose class count is known."""
    prog = objective.program
    field_of = {ref.node: name for name, ref in prog.inputs.items() if name in objective.fields}
    rules: list[LabelRule] = []
    for node in prog.nodes:
        if node.op not in CLASS_TARGETS or len(node.args) < 2:
            continue
        scores, target = node.args[0], node.args[1]
        if not isinstance(scores, Ref) or not isinstance(target, Ref) or target.node not in field_of:
            continue
        shape = prog.type_of(scores).shape
        classes = shape[-1] if shape else None
        if not isinstance(classes, int):
            continue
        given = node.params is not None and "ignore_index" in node.params.model_fields_set
        ignore = getattr(node.params, "ignore_index", None) if given else None
        rules.append(LabelRule(field_of[target.node], classes, ignore, node.op, node.span))
    return rules
