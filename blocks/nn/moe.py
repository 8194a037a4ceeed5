"""torch modules for the sparsely-gated mixture of experts (see ``dsl.blocks.moe``).

Two routers:

* ``topk``: the noisy top-k gate of Shazeer et al. 2017 ("Outrageously Large
  Neural Networks"), following the original tensor2tensor ``noisy_top_k_gating``:
  top-(k+1) is taken on the *noisy* logits, the softmax runs over the top k
  only, and the load uses the smooth estimator :func:`prob_in_top_k`;
* ``switch``: the top-1 router of Fedus et al. 2021 ("Switch Transformers"),
  with the gate being the softmax probability over *all* experts and the loss
  ``alpha * E * sum_i f_i P_i``.

:func:`dispatch` sorts the (token, expert) assignments by expert, runs every
expert once on its own tokens and adds the weighted outputs back; no expert
ever sees a token it was not routed to.

torch.compile / torch.export: how many tokens each expert receives is data (it
depends on the router's values). :func:`dispatch` reads the per-expert counts
with one ``.tolist()`` and states their invariants with ``torch._check``, so
the sizes become unbacked symbolic ints instead of graph breaks;
``torch.compile(fullgraph=True)`` and ``torch.export`` work (torch 2.13). In
eager mode an expert with no tokens is skipped (its parameters get no
gradient); while compiling it runs on an empty batch instead, because a branch
on a data-dependent size cannot be traced.

Routing statistics (for ``dsl.training.hooks.expert_usage``): a gate whose
``usage`` attribute holds a :class:`RoutingStats` adds, for every training
forward, the routed assignments and gate mass per expert, the summed entropy
of the router's distribution, the token count and (for MoE with a capacity)
the dropped assignments. The update runs under ``no_grad``, draws no random
numbers and is skipped in eval mode and while torch.compile/export trace the
module, so it never changes an output and never enters a graph.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

# The paper's noise_epsilon: keeps the noise std strictly positive.
NOISE_EPSILON = 1e-2
# cv_squared's epsilon in tensor2tensor.
CV_EPSILON = 1e-10
# Switch routing (Fedus et al. 2021; mesh-tensorflow's defaults): the router's weights are drawn
# from a truncated normal of std sqrt(SWITCH_INIT_SCALE / D); while training its inputs are
# multiplied by U(1 - SWITCH_JITTER, 1 + SWITCH_JITTER).
SWITCH_INIT_SCALE = 0.1
SWITCH_JITTER = 1e-2


def cv_squared(v: Tensor) -> Tensor:
    """Squared coefficient of variation: population variance / (mean² + 1e-10); 0 for one value."""
    v = v.to(torch.promote_types(v.dtype, torch.float32))  # at least float32; float64 stays
    if v.numel() <= 1:  # a static shape: fine to branch on
        return v.new_zeros(())
    return v.var(unbiased=False) / (v.mean() ** 2 + CV_EPSILON)


def prob_in_top_k(clean: Tensor, noisy: Tensor, std: Tensor, top_values: Tensor, k: int) -> Tensor:
    """P(x, i): the probability that expert i stays in the top k when only its own
    noise is resampled (Shazeer et al. 2017, Appendix A; t2t ``_prob_in_top_k``).

    ``top_values`` holds the k+1 largest noisy logits per token, descending.
    If i is in the top k, the k-th largest of the *other* logits is the (k+1)-th
    overall; otherwise it is the k-th overall.
    """
    threshold_if_in = top_values[:, k : k + 1]
    threshold_if_out = top_values[:, k - 1 : k]
    threshold = torch.where(noisy > threshold_if_in, threshold_if_in, threshold_if_out)
    return torch.special.ndtr((clean - threshold) / std)


def expert_counts(idx: Tensor, experts: int) -> Tensor:
    """Assignments per expert. ``scatter_add``, not ``bincount``: its length must be static."""
    flat = idx.reshape(-1)
    return torch.zeros(experts, dtype=torch.long, device=idx.device).scatter_add(0, flat, torch.ones_like(flat))


class RoutingStats:
    """Routing statistics summed over training batches, on the device of the tokens.

    ``sums`` (float64, length 2E+3) holds: assignments per expert [0:E], gate
    mass per expert [E:2E], the summed per-token entropy of softmax(x W_g) over
    all experts [2E], the token count [2E+1] and the assignments dropped by a
    capacity limit [2E+2]. Kept on the device and read only when a hook asks,
    so collecting costs no host synchronisation per step.
    """

    def __init__(self, experts: int):
        self.experts = experts
        self.sums: Tensor | None = None

    def reset(self) -> None:
        self.sums = None

    def _row(self, like: Tensor) -> Tensor:
        if self.sums is None:
            self.sums = torch.zeros(2 * self.experts + 3, dtype=torch.float64, device=like.device)
        return self.sums

    @torch.no_grad()
    def add_routing(self, clean: Tensor, idx: Tensor, w: Tensor) -> None:
        """One batch: ``clean`` [T, E] logits without noise, ``idx``/``w`` [T, k] the routing."""
        e = self.experts
        sums = self._row(clean)
        sums[:e] += expert_counts(idx, e).to(sums.dtype)
        sums[e : 2 * e] += torch.zeros(e, dtype=sums.dtype, device=sums.device).scatter_add(
            0, idx.reshape(-1), w.detach().reshape(-1).to(sums.dtype)
        )
        logp = torch.log_softmax(clean.detach().to(sums.dtype), dim=-1)
        sums[2 * e] += -(logp.exp() * logp).sum()
        sums[2 * e + 1] += clean.shape[0]

    @torch.no_grad()
    def add_dropped(self, dropped: Tensor) -> None:
        """Assignments a capacity limit dropped in one batch."""
        sums = self._row(dropped)
        sums[2 * self.experts + 2] += dropped.to(sums.dtype)


def _collecting(stats: RoutingStats | None, module: nn.Module) -> bool:
    """Whether this forward adds to ``stats``: training, eager, and asked for."""
    return stats is not None and module.training and not torch.compiler.is_compiling()


class NoisyTopKGate(nn.Module):
    """The router: ``x [T, D] -> (expert indices [T, k], gate weights [T, k], balance loss [])``.

    ``forward`` (the ``Gate`` block) returns the dense weights ``[..., E]`` (zero
    outside the top k) and the weighted balance loss.
    """

    def __init__(
        self, dim: int, experts: int, k: int = 2, noisy: bool = True, balance: float = 0.01, router: str = "topk",
        z_loss: float = 0.0,
    ):
        super().__init__()
        if not 1 <= k <= experts:
            raise ValueError(f"k={k} must be between 1 and experts={experts}")
        if router not in ("topk", "switch"):
            raise ValueError(f"unknown router {router!r}")
        if router == "switch" and k != 1:
            raise ValueError("the switch router sends each token to one expert (k=1)")
        self.dim, self.experts, self.k = dim, experts, k
        self.noisy, self.balance, self.router, self.z_loss = noisy, balance, router, z_loss
        if router == "switch":
            # Random, as Switch initialises it: with zero weights every token ties and goes to expert 0.
            self.w_gate = nn.Parameter(torch.empty(dim, experts))
            std = math.sqrt(SWITCH_INIT_SCALE / dim)
            nn.init.trunc_normal_(self.w_gate, std=std, a=-2 * std, b=2 * std)
            self.w_noise = None  # Switch's noise is the input jitter, not learned
        else:
            # Zero init, as in Shazeer et al.: every expert starts equally likely.
            self.w_gate = nn.Parameter(torch.zeros(dim, experts))
            self.w_noise = nn.Parameter(torch.zeros(dim, experts)) if noisy else None
        # Routing statistics, off (None) unless a training hook sets a RoutingStats.
        self.usage: RoutingStats | None = None

    def extra_repr(self) -> str:
        return f"dim={self.dim}, experts={self.experts}, k={self.k}, noisy={self.noisy}, router={self.router!r}"

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        flat = x.reshape(-1, self.dim)
        idx, w, loss = self.route(flat)
        dense = torch.zeros(flat.shape[0], self.experts, dtype=w.dtype, device=w.device).scatter(1, idx, w)
        return dense.reshape(*x.shape[:-1], self.experts), loss

    def logits(self, x: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """(clean, noisy, std): noisy = clean + N(0, 1) * (softplus(x W_noise) + 1e-2) while
        training a noisy gate; otherwise noisy is clean and std is None."""
        if self.router == "switch" and self.noisy and self.training:
            jitter = torch.empty_like(x).uniform_(1.0 - SWITCH_JITTER, 1.0 + SWITCH_JITTER)
            logits = (x * jitter) @ self.w_gate
            return logits, logits, None
        if self.w_noise is None or not self.training:
            clean = x @ self.w_gate
            return clean, clean, None
        # both projections in one matmul: x [W_g | W_noise]
        clean, raw_std = (x @ torch.cat([self.w_gate, self.w_noise], dim=1)).split(self.experts, dim=1)
        std = nn.functional.softplus(raw_std) + NOISE_EPSILON
        if noise is None:
            noise = torch.randn_like(clean)
        return clean, clean + noise * std, std

    def route(self, x: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """x [T, D] -> (indices [T, k] long, weights [T, k], weighted auxiliary loss []): the balance
        loss, plus ``z_loss`` times the router z-loss mean(logsumexp(logits)²) when asked for."""
        clean, noisy, std = self.logits(x, noise)
        if self.router == "switch":
            routed = self._route_switch(noisy)
        else:
            routed = self._route_topk(clean, noisy, std)
        if _collecting(self.usage, self):
            self.usage.add_routing(clean, routed[0], routed[1])  # type: ignore[union-attr]
        if self.z_loss:  # Zoph et al. 2022 (ST-MoE); mesh-tensorflow adds it to the same loss
            idx, w, loss = routed
            return idx, w, loss + self.z_loss * torch.logsumexp(noisy.float(), dim=-1).square().mean()
        return routed

    def _route_topk(self, clean: Tensor, noisy: Tensor, std: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        k, experts = self.k, self.experts
        top_values, top_idx = noisy.topk(min(k + 1, experts), dim=-1)
        idx = top_idx[:, :k]
        w = torch.softmax(top_values[:, :k], dim=-1)
        if self.balance == 0:
            return idx, w, clean.new_zeros(())
        importance = clean.new_zeros(experts).index_add(0, idx.reshape(-1), w.reshape(-1))
        if std is not None and k < experts:
            load = prob_in_top_k(clean, noisy, std, top_values, k).sum(0)
        else:
            load = expert_counts(idx, experts).to(clean.dtype)
        return idx, w, self.balance * (cv_squared(importance) + cv_squared(load))

    def _route_switch(self, logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        probs = torch.softmax(logits, dim=-1)  # over all experts, as Switch does
        w, idx = probs.max(dim=-1, keepdim=True)
        if self.balance == 0:
            return idx, w, logits.new_zeros(())
        f = expert_counts(idx, self.experts).to(probs.dtype) / logits.shape[0]  # fraction dispatched to i
        p = probs.mean(0)  # mean router probability of i
        return idx, w, self.balance * self.experts * (f * p).sum()


def _capacity(counts: Tensor, capacity: float, minimum: int = 0) -> Tensor:
    """max(minimum, ceil(c * T * k / E)), the most assignments one expert takes, from T*k = counts.sum().

    A tensor, not a Python int: an int from the (symbolic) token count would pin T
    under torch.export. float64 so that it rounds like Python's math.ceil."""
    return (counts.sum().double() * capacity / counts.numel()).ceil().long().clamp_min(minimum)


def _sizes(counts: Tensor, kept_counts: Tensor, total: int) -> tuple[list[int], list[int]]:
    """The per-expert assignment counts and kept counts as Python ints, with the invariants
    that let torch.compile / torch.export trace them as unbacked sizes."""
    sizes, kept = counts.tolist(), kept_counts.tolist()
    for s, c in zip(sizes, kept, strict=True):
        torch._check(c >= 0)
        torch._check(c <= s)
    torch._check(sum(sizes) == total)
    return sizes, kept


def expert_output(result: Tensor | tuple[Tensor, ...], aux: Sequence[tuple[int, float]]) -> tuple[Tensor, Tensor | None]:
    """An expert's token output (its first output) and its weighted auxiliary losses (None: it has none)."""
    if isinstance(result, Tensor):
        return result, None
    losses = [weight * result[i] for i, weight in aux]
    return result[0], (torch.stack(losses).sum() if losses else None)


def dispatch(x: Tensor, idx: Tensor, w: Tensor, experts: Sequence[nn.Module], out: int,
             capacity: float | None = None, expert_aux: Sequence[tuple[int, float]] = (), min_capacity: int = 0,
             by_position: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """y[t] = sum over kept assignments (t, e) of w[t, e] * expert_e(x[t]).

    x [T, D], idx/w [T, k] -> (y [T, out], number of kept assignments [], the
    experts' own auxiliary losses summed []). An expert returning a tuple
    contributes its first output; ``expert_aux`` says which of its outputs are
    auxiliary losses and their weights.
    The kept assignments are sorted by expert: one gather gives every expert its
    rows (contiguous slices of one tensor), and one ``index_add`` sums the weighted
    outputs back into their tokens. With ``capacity`` c each expert keeps at most
    ceil(c*T*k/E) assignments, highest gate weight first (ties: lower token index
    first); the rest are dropped and contribute zero.
    """
    tokens, k = idx.shape
    flat_e, flat_w = idx.reshape(-1), w.reshape(-1)
    if capacity is None or by_position:
        order = torch.argsort(flat_e, stable=True)  # by expert, then by token
    else:  # two stable sorts = sort by (expert, -weight): the heaviest come first
        by_w = torch.argsort(flat_w.detach(), descending=True, stable=True)
        order = by_w[torch.argsort(flat_e[by_w], stable=True)]
    counts = expert_counts(flat_e, len(experts))
    kept_counts = (counts if capacity is None
                   else torch.minimum(counts, _capacity(counts, capacity, min_capacity)))
    sizes, kept = _sizes(counts, kept_counts, tokens * k)
    if capacity is not None:  # keep the first kept[e] of each expert's sorted assignments
        starts = [sum(sizes[:e]) for e in range(len(sizes))]
        order = torch.cat([order.narrow(0, start, n) for start, n in zip(starts, kept, strict=True)])
    tok = torch.div(order, k, rounding_mode="floor")
    rows = x.index_select(0, tok).split(kept)
    eager = not torch.compiler.is_compiling()
    # an expert without rows is skipped in eager mode; a branch on a data-dependent size cannot be traced
    results = [expert_output(expert(r), expert_aux)
               for expert, r, n in zip(experts, rows, kept, strict=True) if not eager or n > 0]
    ys = torch.cat([y for y, _ in results] or [x.new_zeros(0, out)])
    losses = [loss for _, loss in results if loss is not None]
    aux = torch.stack(losses).sum() if losses else x.new_zeros(())
    y = x.new_zeros(tokens, out).index_add_(0, tok, (ys * flat_w[order].unsqueeze(-1)).to(x.dtype))
    return y, kept_counts.sum(), aux


class MixtureOfExperts(nn.Module):
    """``x [..., D] -> (y [..., out], balance [])``: a gate plus E expert modules, each
    called on the tokens routed to it."""

    dropped_fraction: Tensor

    def __init__(self, gate: NoisyTopKGate, experts: Sequence[nn.Module], out: int, capacity: float | None = None,
                 expert_aux: Sequence[tuple[int, float]] = (), eval_capacity: float | None = None,
                 min_capacity: int = 0):
        super().__init__()
        if len(experts) != gate.experts:
            raise ValueError(f"gate routes to {gate.experts} experts, got {len(experts)}")
        self.gate = gate
        self.experts = nn.ModuleList(experts)
        self.out = out
        self.capacity = capacity  # while training
        self.eval_capacity = eval_capacity  # while evaluating
        self.min_capacity = min_capacity
        self.expert_aux = tuple(expert_aux)  # (output index, weight) of each expert's auxiliary losses
        # Fraction of (token, expert) assignments dropped by the capacity limit in the
        # last forward; not persistent, so it stays out of checkpoints.
        self.register_buffer("dropped_fraction", torch.zeros(()), persistent=False)

    def extra_repr(self) -> str:
        return (f"out={self.out}, capacity={self.capacity}, eval_capacity={self.eval_capacity}, "
                f"min_capacity={self.min_capacity}")

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        flat = x.reshape(-1, x.shape[-1])
        idx, w, loss = self.gate.route(flat)
        capacity = self.capacity if self.training else self.eval_capacity
        y, kept, expert_losses = dispatch(flat, idx, w, self.experts, self.out, capacity, self.expert_aux,
                                          self.min_capacity, by_position=self.gate.router == "switch")
        if capacity is not None:
            # detached rather than under no_grad: torch.export cannot load a graph that switches grad mode
            self.dropped_fraction.copy_(1.0 - kept.detach().to(self.dropped_fraction.dtype) / idx.numel())
            if _collecting(self.gate.usage, self):
                self.gate.usage.add_dropped(idx.numel() - kept)  # type: ignore[union-attr]
        return y.reshape(*x.shape[:-1], self.out), loss + expert_losses
