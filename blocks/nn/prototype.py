"""torch modules and training helpers for the prototype blocks.

``PrototypeHeadModule`` follows ProtoPNet (Chen et al. 2019, "This Looks Like
That", reference code cfchen-duke/ProtoPNet) on embeddings [B, D] or feature
maps [B, D, H, W] (1x1 patch prototypes, min distance over positions).
``ProtoNetModule`` follows Prototypical Networks (Snell et al. 2017, reference
code jakesnell/prototypical-networks). The equations are in
:mod:`dsl.blocks.prototype`.

The plain functions ``cluster_cost``, ``separation_cost``, ``last_layer_l1`` and
``push_prototypes`` are the ProtoPNet training terms; the trainer calls them.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

#: ProtoPNet's epsilon in log((d + 1) / (d + eps)); sim(0) = log(1e4).
LOG_SIM_EPS = 1e-4
#: ProtoPNet's last-layer weight for a prototype of another class.
INCORRECT_STRENGTH = -0.5


def squared_distances(x: Tensor, prototypes: Tensor) -> Tensor:
    """||x_b - p_j||² for x [B, D], prototypes [P, D] -> [B, P].

    Expanded as ||x||² - 2 x·p + ||p||² (as ProtoPNet's ``_l2_convolution``)
    so memory is B*P, not B*P*D; rounding can make it slightly negative, hence
    the clamp (ProtoPNet uses relu for the same reason).
    """
    x2 = x.pow(2).sum(-1, keepdim=True)
    p2 = prototypes.pow(2).sum(-1)
    return (x2 - 2.0 * (x @ prototypes.t()) + p2).clamp_min(0.0)


def patches(z: Tensor) -> Tensor:
    """The vectors a prototype is compared with: [B, D] -> [B, 1, D], [B, D, H, W] -> [B, H*W, D]."""
    if z.dim() == 2:
        return z.unsqueeze(1)
    return z.flatten(2).transpose(1, 2)


def log_similarity(d: Tensor, eps: float = LOG_SIM_EPS) -> Tensor:
    """ProtoPNet's activation log((d + 1) / (d + eps)): large near 0, → 0 far away."""
    return torch.log((d + 1.0) / (d + eps))


class PrototypeHeadModule(nn.Module):
    """ProtoPNet head: distances to learned prototypes -> similarities -> class logits.

    forward(z [B, D] or [B, D, H, W]) -> (logits [B, classes], distances [B, classes*per_class]);
    on a feature map a distance is the smallest over the positions (ProtoPNet's
    min-pooling of its distance map).

    Attributes the training helpers rely on: ``prototypes`` (Parameter [P, D]),
    ``last_layer`` (Linear P -> classes, no bias), ``prototype_class``
    (buffer [P] long: prototype j belongs to class j // per_class),
    ``per_class``, ``classes``, ``similarity``.
    """

    #: Parameters gradual pruning counts as prototypes (masked only with prototypes=true).
    prototype_parameters: ClassVar[tuple[str, ...]] = ("prototypes",)

    def __init__(self, dim: int, classes: int, per_class: int = 1, similarity: str = "log"):
        super().__init__()
        if similarity not in ("log", "linear"):
            raise ValueError(f"similarity must be 'log' or 'linear', got {similarity!r}")
        self.dim, self.classes, self.per_class = dim, classes, per_class
        self.similarity = similarity
        count = classes * per_class
        # Uniform [0, 1) as ProtoPNet (its features come out of a sigmoid);
        # push_prototypes later projects them onto real embeddings anyway.
        self.prototypes = nn.Parameter(torch.rand(count, dim))
        self.register_buffer("prototype_class", torch.arange(count) // per_class)
        self.last_layer = nn.Linear(count, classes, bias=False)
        self.reset_last_layer()

    @property
    def num_prototypes(self) -> int:
        return self.classes * self.per_class

    def own_class_mask(self) -> Tensor:
        """[classes, P] bool: True where prototype j belongs to class k."""
        ks = torch.arange(self.classes, device=self.prototype_class.device)
        return self.prototype_class.unsqueeze(0) == ks.unsqueeze(1)

    @torch.no_grad()
    def reset_last_layer(self, incorrect_strength: float = INCORRECT_STRENGTH) -> None:
        """ProtoPNet's ``set_last_layer_incorrect_connection``: 1 own class, -0.5 elsewhere."""
        own = self.own_class_mask()
        self.last_layer.weight.copy_(torch.where(own, 1.0, incorrect_strength))

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        if z.dim() == 2:
            distances = squared_distances(z, self.prototypes)
        else:
            distances = squared_distances(patches(z), self.prototypes).amin(1)
        sim = log_similarity(distances) if self.similarity == "log" else -distances
        return self.last_layer(sim), distances

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, classes={self.classes}, per_class={self.per_class}, "
            f"similarity={self.similarity!r}"
        )


class ProtoNetModule(nn.Module):
    """Prototypical Networks logits; no weights (the encoder is whatever feeds it).

    forward(query [Q, D], support [S, D], support_y [S] long) -> logits [Q, ways].

    A class with no support example has no centroid: its logit is -inf, so it
    is never predicted (and softmax over the other classes stays finite).
    Labels outside [0, ways) are an indexing error at run time (index_add).
    """

    def __init__(self, ways: int):
        super().__init__()
        self.ways = ways

    def forward(self, query: Tensor, support: Tensor, support_y: Tensor) -> Tensor:
        centroids, counts = class_means(support, support_y, self.ways)
        diff = query.unsqueeze(1) - centroids.unsqueeze(0)  # [Q, ways, D], exact as the paper
        logits = -diff.pow(2).sum(-1)
        return torch.where(counts > 0, logits, -math.inf)

    def extra_repr(self) -> str:
        return f"ways={self.ways}"


def class_means(x: Tensor, y: Tensor, classes: int) -> tuple[Tensor, Tensor]:
    """Per-class means of the rows of x [S, D] by label y [S] -> ([classes, D], counts [classes]).

    One index_add for the sums and one for the counts: no Python loop over
    classes, so it traces into a single graph. Empty classes get a zero mean.
    """
    sums = x.new_zeros((classes, x.shape[-1])).index_add(0, y, x)
    counts = x.new_zeros((classes,)).index_add(0, y, torch.ones_like(y, dtype=x.dtype))
    return sums / counts.clamp_min(1.0).unsqueeze(-1), counts


# --------------------------------------------------------------------------- ProtoPNet training terms


def _own_prototypes(distances: Tensor, y: Tensor, per_class: int) -> Tensor:
    """[B, P] bool: True where prototype j belongs to sample b's class."""
    cls = torch.arange(distances.shape[-1], device=distances.device) // per_class
    return cls.unsqueeze(0) == y.reshape(-1, 1)


def _masked_min(distances: Tensor, mask: Tensor) -> Tensor:
    """Row-wise min of distances over mask; 0 for a row whose mask is empty."""
    inf = torch.full_like(distances, math.inf)
    lowest = torch.where(mask, distances, inf).amin(-1)
    return torch.where(mask.any(-1), lowest, torch.zeros_like(lowest))


def cluster_cost(distances: Tensor, y: Tensor, per_class: int) -> Tensor:
    """ProtoPNet's Clst: mean over the batch of min_{j: class(j) = y_b} d_bj.

    Pulls every embedding towards some prototype of its own class. Computed as
    an exact masked min; the reference's ``max_dist - max((max_dist - d) * mask)``
    trick gives the same value whenever d <= max_dist (= D, true for its
    sigmoid features in [0, 1]).
    """
    return _masked_min(distances, _own_prototypes(distances, y, per_class)).mean()


def separation_cost(distances: Tensor, y: Tensor, per_class: int) -> Tensor:
    """ProtoPNet's Sep: mean over the batch of min_{j: class(j) != y_b} d_bj.

    The paper's loss subtracts it (weight -0.08) to push embeddings away from
    other classes' prototypes. A row with no other-class prototype (one class)
    contributes 0.
    """
    return _masked_min(distances, ~_own_prototypes(distances, y, per_class)).mean()


def last_layer_l1(head: nn.Module) -> Tensor:
    """L1 norm of the last-layer weights at wrong-class positions (ProtoPNet's ``l1``).

    Used in the last-layer fine-tuning stage to drive those weights to 0.
    """
    weight = head.last_layer.weight  # type: ignore[union-attr]
    wrong = ~head.own_class_mask()  # type: ignore[operator]
    return (weight * wrong).abs().sum()


@torch.no_grad()
def push_prototypes(head: nn.Module, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """ProtoPNet's push: move each prototype onto its nearest own-class embedding or patch.

    embeddings [N, D] or feature maps [N, D, H, W], labels [N]. Updates
    ``head.prototypes`` in place and returns, per prototype, the index into
    ``embeddings`` of the sample chosen and the position (h*W + w; 0 for flat
    embeddings) of the patch, or -1 for both (prototype left unchanged) when
    its class has no sample. Ties go to the first sample, then the first
    position, as the reference's argmin over its distance maps.
    """
    protos: Tensor = head.prototypes  # type: ignore[assignment]
    owner: Tensor = head.prototype_class  # type: ignore[assignment]
    cand = patches(embeddings.detach().to(device=protos.device, dtype=protos.dtype))  # [N, L, D]
    positions = cand.shape[1]
    distances = squared_distances(cand, protos).flatten(0, 1)  # [N*L, P]
    own = labels.reshape(-1, 1).to(owner.device).repeat_interleave(positions, 0) == owner.unsqueeze(0)
    flat = torch.where(own, distances, math.inf).argmin(0)  # [P]
    found = own.any(0)
    protos.copy_(torch.where(found.unsqueeze(1), cand.flatten(0, 1)[flat], protos))
    missing = torch.full_like(flat, -1)
    return torch.where(found, flat // positions, missing), torch.where(found, flat % positions, missing)


def prototype_heads(model: nn.Module) -> list[PrototypeHeadModule]:
    """Every PrototypeHead inside ``model`` (for the trainer's extra loss terms and push)."""
    return [m for m in model.modules() if isinstance(m, PrototypeHeadModule)]
