"""The metrics a train section may report, declared statically. Pure Python.

A metric is computed over a whole split (aggregated over batches and ranks),
from tensors the train section names: ``accuracy(logits, y, mask=test_mask)``.
Each declaration gives its tensor arguments as shape patterns (as block shape
rules use them), its constant keywords and which direction is better. Any
loss function is a metric too (its mean over the split, lower is better);
``mse`` is both a loss function and a metric. The torch side
(:mod:`dsl.training.metrics`) computes them with torchmetrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Arg:
    name: str
    pattern: str  # e.g. "B C"; "" for a scalar; "..." for any shape
    dtype: tuple[str, ...] = ("float",)


@dataclass(frozen=True)
class MetricDecl:
    name: str
    args: tuple[Arg, ...]
    consts: dict[str, tuple[type, ...]] = field(default_factory=dict)  # keyword -> accepted types
    higher_is_better: bool = True
    doc: str = ""

    @property
    def signature(self) -> str:
        parts = [a.name for a in self.args] + [f"{k}=" for k in self.consts] + ["mask="]
        return f"{self.name}({', '.join(parts)})"


ROWS = ("long", "int")
AVERAGES = ("macro", "micro", "weighted")
_CLASSES = (Arg("logits", "... C"), Arg("target", "...", ROWS))
_PAIR = (Arg("input", "..."), Arg("target", "..."))
_AVERAGE = {"average": (str,)}

METRICS: dict[str, MetricDecl] = {
    d.name: d
    for d in (
        MetricDecl("accuracy", _CLASSES, {"top_k": (int,)},
                   doc="share of rows whose target is the argmax (or among the top_k scores); "
                       "key `topK_accuracy` with top_k=K"),
        MetricDecl("f1", _CLASSES, _AVERAGE, doc="F1 score over the classes (average: macro, micro, weighted)"),
        MetricDecl("precision", _CLASSES, _AVERAGE, doc="precision over the classes (average: macro, micro, weighted)"),
        MetricDecl("recall", _CLASSES, _AVERAGE, doc="recall over the classes (average: macro, micro, weighted)"),
        MetricDecl("auroc", _CLASSES, _AVERAGE,
                   doc="area under the ROC curve, one class against the rest, from the scores' softmax"),
        MetricDecl("perplexity", _CLASSES, {"ignore_index": (int,)}, higher_is_better=False,
                   doc="exp of the mean cross-entropy per row (per token for a language model)"),
        MetricDecl("mse", _PAIR, higher_is_better=False, doc="mean squared error (also a loss function)"),
        MetricDecl("mae", _PAIR, higher_is_better=False, doc="mean absolute error"),
    )
}


def lookup_metric(name: str) -> MetricDecl | None:
    return METRICS.get(name)
