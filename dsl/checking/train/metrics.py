"""The metrics a train section may report, declared statically. Pure Python.

A metric is computed over a whole split (aggregated over batches and ranks),
from tensors the train section names: ``accuracy(logits, y, mask=test_mask)``.
Each declaration gives its tensor arguments as shape patterns (as block shape
rules use them), its constant keywords and which direction is better. Any
loss function is a metric too (its mean over the split, lower is better).
The torch side is :mod:`dsl.training.metrics`.
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

METRICS: dict[str, MetricDecl] = {
    d.name: d
    for d in (
        MetricDecl("accuracy", (Arg("logits", "... C"), Arg("target", "...", ROWS)),
                   doc="fraction of selected rows whose argmax equals the target"),
    )
}


def lookup_metric(name: str) -> MetricDecl | None:
    return METRICS.get(name)
