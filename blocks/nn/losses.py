"""torch implementations of the loss functions (see ``dsl.blocks.losses``).

Each returns the mean over the selected elements as a scalar; ``mask`` (bool,
the target's shape) selects them. No selected element gives a zero that still
depends on the graph (DDP needs every parameter used).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _select(mask: Tensor | None, *tensors: Tensor) -> tuple[Tensor, ...]:
    if mask is None:
        return tensors
    m = mask.to(device=tensors[0].device, dtype=torch.bool)
    return tuple(t[m] for t in tensors)


def _empty(t: Tensor) -> Tensor:
    return t.sum() * 0.0


def _class_last(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """[..., C] logits and [...] targets as rows: [R, C] and [R]."""
    return logits.reshape(-1, logits.shape[-1]), target.reshape(-1)


def cross_entropy(logits: Tensor, target: Tensor, mask: Tensor | None = None, label_smoothing: float = 0.0,
                  ignore_index: int = -100) -> Tensor:
    logits, target = _select(mask, logits, target)
    logits, target = _class_last(logits, target)
    if target.numel() == 0:
        return _empty(logits)
    return F.cross_entropy(logits.float(), target.long(), label_smoothing=label_smoothing, ignore_index=ignore_index)


def nll(log_probs: Tensor, target: Tensor, mask: Tensor | None = None, ignore_index: int = -100) -> Tensor:
    log_probs, target = _select(mask, log_probs, target)
    log_probs, target = _class_last(log_probs, target)
    if target.numel() == 0:
        return _empty(log_probs)
    return F.nll_loss(log_probs.float(), target.long(), ignore_index=ignore_index)


def mse(input: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    input, target = _select(mask, input, target)
    return F.mse_loss(input.float(), target.float()) if input.numel() else _empty(input)


def l1(input: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    input, target = _select(mask, input, target)
    return F.l1_loss(input.float(), target.float()) if input.numel() else _empty(input)


def bce_with_logits(logits: Tensor, target: Tensor, mask: Tensor | None = None,
                    pos_weight: float | None = None) -> Tensor:
    logits, target = _select(mask, logits, target)
    if logits.numel() == 0:
        return _empty(logits)
    pw = None if pos_weight is None else torch.tensor(float(pos_weight), device=logits.device)
    return F.binary_cross_entropy_with_logits(logits.float(), target.float(), pos_weight=pw)


def smooth_l1(input: Tensor, target: Tensor, mask: Tensor | None = None, beta: float = 1.0) -> Tensor:
    input, target = _select(mask, input, target)
    return F.smooth_l1_loss(input.float(), target.float(), beta=beta) if input.numel() else _empty(input)


def kl_div(input: Tensor, target: Tensor, mask: Tensor | None = None, log_target: bool = False) -> Tensor:
    """KL(target ‖ exp(input)) per row, averaged over the rows (torch's ``batchmean``: the true KL)."""
    input, target = _select(mask, input, target)
    if input.numel() == 0:
        return _empty(input)
    rows = input.reshape(-1, input.shape[-1]).float()
    return F.kl_div(rows, target.reshape(rows.shape).float(), reduction="batchmean", log_target=log_target)


def triplet_margin(anchor: Tensor, positive: Tensor, negative: Tensor, mask: Tensor | None = None,
                   margin: float = 1.0, p: float = 2.0) -> Tensor:
    anchor, positive, negative = _select(mask, anchor, positive, negative)
    if anchor.numel() == 0:
        return _empty(anchor)
    return F.triplet_margin_loss(anchor.float(), positive.float(), negative.float(), margin=margin, p=p)


def cosine_embedding(input1: Tensor, input2: Tensor, target: Tensor, mask: Tensor | None = None,
                     margin: float = 0.0) -> Tensor:
    input1, input2, target = _select(mask, input1, input2, target)
    if input1.numel() == 0:
        return _empty(input1)
    return F.cosine_embedding_loss(input1.float(), input2.float(), target.float(), margin=margin)


def cluster_cost(distances: Tensor, target: Tensor, mask: Tensor | None = None, per_class: int = 1) -> Tensor:
    from .prototype import cluster_cost as clst

    distances, target = _select(mask, distances, target)
    return clst(distances, target, per_class) if target.numel() else _empty(distances)


def separation_cost(distances: Tensor, target: Tensor, mask: Tensor | None = None, per_class: int = 1) -> Tensor:
    from .prototype import separation_cost as sep

    distances, target = _select(mask, distances, target)
    return sep(distances, target, per_class) if target.numel() else _empty(distances)


def l1_last_layer(model: nn.Module) -> Tensor:
    """ProtoPNet's L1 term: the last layers' weights at wrong-class positions, summed over every head."""
    from .prototype import last_layer_l1, prototype_heads

    heads = prototype_heads(model)
    if not heads:
        raise ValueError("l1_last_layer() needs a PrototypeHead in the model")
    return torch.stack([last_layer_l1(h) for h in heads]).sum()
