"""Metrics over a split, computed by torchmetrics (declarations: :mod:`dsl.checking.train.metrics`).

:class:`SplitMetrics` keeps one torchmetrics object per metric of the train
section, plus the loss's row-weighted mean. Each batch updates them with the
training step's outputs (the rows a ``mask=`` selects); :meth:`SplitMetrics.compute`
reads them out. Under DDP torchmetrics synchronises every state across ranks
when it computes, so each rank reports the value over the whole split.

A metric object is made when its first batch arrives, since the number of
classes is the scores' last dim; a metric no row reached is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from dsl.checking.train.objective import LOSS, MetricUse


def _classes(make: Callable[..., Any]) -> Callable[[MetricUse, int], Any]:
    def build(use: MetricUse, classes: int) -> Any:
        return make(classes, **{k: v for k, v in use.consts.items() if k != "ignore_index"})

    return build


def _accuracy(classes: int, top_k: int = 1) -> Any:
    from torchmetrics.classification import MulticlassAccuracy

    return MulticlassAccuracy(num_classes=classes, top_k=top_k, average="micro")


def _averaged(name: str) -> Callable[..., Any]:
    def make(classes: int, average: str = "macro") -> Any:
        import torchmetrics.classification as c

        cls = {"f1": c.MulticlassF1Score, "precision": c.MulticlassPrecision, "recall": c.MulticlassRecall,
               "auroc": c.MulticlassAUROC}[name]
        if name == "auroc":
            return cls(num_classes=classes, average=None if average == "micro" else average)
        return cls(num_classes=classes, average=average)

    return make


def _perplexity(use: MetricUse, classes: int) -> Any:
    from torchmetrics.text import Perplexity

    return Perplexity(ignore_index=use.consts.get("ignore_index"))


def _regression(name: str) -> Callable[[MetricUse, int], Any]:
    def build(use: MetricUse, classes: int) -> Any:
        from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError

        return MeanSquaredError() if name == "mse" else MeanAbsoluteError()

    return build


BUILDERS: dict[str, Callable[[MetricUse, int], Any]] = {
    "accuracy": _classes(_accuracy),
    "f1": _classes(_averaged("f1")),
    "precision": _classes(_averaged("precision")),
    "recall": _classes(_averaged("recall")),
    "auroc": _classes(_averaged("auroc")),
    "perplexity": _perplexity,
    "mse": _regression("mse"),
    "mae": _regression("mae"),
}


def _select(mask: Tensor | None, *tensors: Tensor) -> tuple[Tensor, ...]:
    if mask is None:
        return tensors
    m = mask.to(device=tensors[0].device, dtype=torch.bool)
    return tuple(t[m] for t in tensors)


class _Tracked:
    """One metric of a split: its torchmetrics object (made at the first batch) and the rows it saw."""

    def __init__(self, use: MetricUse, device: torch.device):
        self.use, self.device = use, device
        self.metric: Any = None
        self.rows = 0
        if use.decl is None or use.classes is not None:
            self.metric = self._make(use.classes or 0)

    def _make(self, classes: int) -> Any:
        if self.use.decl is None:  # a loss reported as a metric: its row-weighted mean
            from torchmetrics.aggregation import MeanMetric

            return MeanMetric().to(self.device)
        return BUILDERS[self.use.decl.name](self.use, classes).to(self.device)

    def update(self, out: dict[str, Tensor], rows: int) -> None:
        if self.use.decl is None:
            self.metric.update(out[self.use.outputs[0]].detach().float(), rows)
            self.rows += rows
            return
        tensors = {key.rsplit(".", 1)[1]: out[key].detach() for key in self.use.outputs}
        mask = tensors.pop("mask", None)
        first, target = _select(mask, *tensors.values())
        if target.numel() == 0:
            return
        if self.metric is None:
            self.metric = self._make(int(first.shape[-1]))
        self.rows += int(target.numel())
        self.metric.update(*self._shaped(first, target))

    def _shaped(self, scores: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        name = self.use.decl.name if self.use.decl is not None else ""
        if name in ("mse", "mae"):
            return scores.float().reshape(-1), target.float().reshape(-1)
        scores, target = scores.float().reshape(-1, scores.shape[-1]), target.long().reshape(-1)
        if name == "perplexity":  # torchmetrics takes [batch, tokens, vocab]
            return scores[None], target[None]
        return scores, target

    def compute(self, world: int) -> float:
        rows = self.rows
        if world > 1:
            import torch.distributed as dist

            t = torch.tensor([float(rows)], dtype=torch.float64, device=self.device)
            dist.all_reduce(t)
            rows = int(t.item())
        if self.metric is None or rows == 0:
            return math.nan
        value = self.metric.compute()
        return float(value.float().mean()) if value.numel() > 1 else float(value)


class SplitMetrics:
    """The loss and every metric of one evaluation of a split."""

    def __init__(self, metrics: list[MetricUse], device: torch.device, world: int = 1):
        from torchmetrics.aggregation import MeanMetric

        self.world = world
        self.loss = MeanMetric().to(device)
        self.rows = 0
        self.tracked = [_Tracked(m, device) for m in metrics]

    def update(self, out: dict[str, Tensor], rows: int) -> None:
        self.loss.update(out[LOSS].detach().float(), rows)
        self.rows += rows
        for t in self.tracked:
            t.update(out, rows)

    def compute(self) -> dict[str, float]:
        values = {"loss": float(self.loss.compute()) if self.rows or self.world > 1 else math.nan}
        for t in self.tracked:
            values[t.use.name] = t.compute(self.world)
        return values
