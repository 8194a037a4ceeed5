"""Metrics over a split: each returns ``(mean, count)`` for one batch, so that the
trainer aggregates them exactly over batches and ranks (sum of mean·count, divided
by the total count). The declarations are :mod:`dsl.checking.train.metrics`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from dsl.checking.train.objective import MetricUse

Result = tuple[Tensor, int]


def _select(mask: Tensor | None, *tensors: Tensor) -> tuple[Tensor, ...]:
    if mask is None:
        return tensors
    m = mask.to(device=tensors[0].device, dtype=torch.bool)
    return tuple(t[m] for t in tensors)


def accuracy(logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Result:
    logits, target = _select(mask, logits, target)
    logits, target = logits.reshape(-1, logits.shape[-1]), target.reshape(-1)
    if target.numel() == 0:
        return logits.new_zeros(()), 0
    return (logits.argmax(-1) == target).float().mean(), target.numel()


METRICS: dict[str, Callable[..., Result]] = {"accuracy": accuracy}


def metric_value(metric: MetricUse, out: dict[str, Tensor], rows: int) -> tuple[Any, int]:
    """One batch's value of ``metric`` and the count it covers, from the training step's outputs."""
    if metric.decl is None:  # a loss reported as a metric: its mean over the batch's rows
        return out[metric.outputs[0]].detach(), rows
    tensors = {key.rsplit(".", 1)[1]: out[key].detach() for key in metric.outputs}
    mask = tensors.pop("mask", None)
    return METRICS[metric.decl.name](*tensors.values(), mask=mask, **metric.consts)
