"""Torch implementations of the train section's losses and metrics.

Each returns ``(mean, count)``: the mean over the selected rows and how many
rows it covers, so metrics aggregate exactly over batches and ranks
(sum of mean*count, divided by the total count). ``mask`` selects rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

Result = tuple[Tensor, int]


def _select(mask: Tensor | None, *tensors: Tensor) -> tuple[Tensor, ...]:
    if mask is None:
        return tensors
    m = mask.to(device=tensors[0].device, dtype=torch.bool)
    return tuple(t[m] for t in tensors)


def _float(t: Tensor) -> Tensor:
    """``t.float()``, without the dispatched no-op ``aten::to`` when it already is float32
    (the loss runs every training step, where that call costs more than this check)."""
    return t if t.dtype == torch.float32 else t.float()


def _long(t: Tensor) -> Tensor:
    """``t.long()``, without the no-op call (see :func:`_float`)."""
    return t if t.dtype == torch.int64 else t.long()


def _empty(t: Tensor) -> Result:
    # No selected rows: a zero that still depends on the graph (DDP needs every parameter used).
    return t.sum() * 0.0, 0


def cross_entropy(logits: Tensor, target: Tensor, mask: Tensor | None = None, label_smoothing: float = 0.0) -> Result:
    logits, target = _select(mask, logits, target)
    if target.numel() == 0:
        return _empty(logits)
    return F.cross_entropy(_float(logits), _long(target), label_smoothing=float(label_smoothing)), target.numel()


def nll(log_probs: Tensor, target: Tensor, mask: Tensor | None = None) -> Result:
    log_probs, target = _select(mask, log_probs, target)
    if target.numel() == 0:
        return _empty(log_probs)
    return F.nll_loss(_float(log_probs), _long(target)), target.numel()


def mse(a: Tensor, b: Tensor, mask: Tensor | None = None) -> Result:
    a, b = _select(mask, a, b)
    if a.numel() == 0:
        return _empty(a)
    return F.mse_loss(_float(a), _float(b)), int(a.shape[0]) if a.dim() else 1


def l1(a: Tensor, b: Tensor, mask: Tensor | None = None) -> Result:
    a, b = _select(mask, a, b)
    if a.numel() == 0:
        return _empty(a)
    return F.l1_loss(_float(a), _float(b)), int(a.shape[0]) if a.dim() else 1


def bce_with_logits(logits: Tensor, target: Tensor, mask: Tensor | None = None, pos_weight: float | None = None) -> Result:
    logits, target = _select(mask, logits, target)
    if logits.numel() == 0:
        return _empty(logits)
    pw = None if pos_weight is None else torch.tensor(float(pos_weight), device=logits.device)
    loss = F.binary_cross_entropy_with_logits(_float(logits), _float(target), pos_weight=pw)
    return loss, int(logits.shape[0]) if logits.dim() else 1


def accuracy(logits: Tensor, target: Tensor, mask: Tensor | None = None) -> Result:
    logits, target = _select(mask, logits, target)
    if target.numel() == 0:
        return _empty(logits.detach())
    return (logits.argmax(-1) == target).float().mean(), target.numel()


def cluster_cost(distances: Tensor, target: Tensor, mask: Tensor | None = None, per_class: int = 1) -> Result:
    from dsl.blocks.nn.prototype import cluster_cost as clst

    distances, target = _select(mask, distances, target)
    if target.numel() == 0:
        return _empty(distances)
    return clst(distances, target, per_class), target.numel()


def separation_cost(distances: Tensor, target: Tensor, mask: Tensor | None = None, per_class: int = 1) -> Result:
    from dsl.blocks.nn.prototype import separation_cost as sep

    distances, target = _select(mask, distances, target)
    if target.numel() == 0:
        return _empty(distances)
    return sep(distances, target, per_class), target.numel()


def l1_last_layer(model: torch.nn.Module) -> Result:
    from dsl.blocks.nn.prototype import last_layer_l1, prototype_heads

    heads = prototype_heads(model)
    if not heads:
        raise ValueError("l1_last_layer() needs a PrototypeHead in the model")
    total = sum((last_layer_l1(h) for h in heads), torch.zeros(()))
    return total, 1


IMPLS: dict[str, Callable[..., Any]] = {
    "cross_entropy": cross_entropy,
    "nll": nll,
    "mse": mse,
    "l1": l1,
    "bce_with_logits": bce_with_logits,
    "accuracy": accuracy,
    "cluster_cost": cluster_cost,
    "separation_cost": separation_cost,
    "l1_last_layer": l1_last_layer,
}
