"""torch modules for the sparsely-gated mixture of experts (see ``dsl.blocks.moe``).

Two routers:

* ``topk``: the noisy top-k gate of Shazeer et al. 2017 ("Outrageously Large
  Neural Networks"), following the original tensor2tensor ``noisy_top_k_gating``:
  top-(k+1) is taken on the *noisy* logits, the softmax runs over the top k
  only, and the load uses the smooth estimator ``_prob_in_top_k``;
* ``switch``: the top-1 router of Fedus et al. 2021 ("Switch Transformers"),
  with the gate being the softmax probability over *all* experts and the loss
  ``alpha * E * sum_i f_i P_i``.

Dispatch (:func:`dispatch`) sorts the (token, expert) assignments by expert,
runs every expert once on its own tokens and adds the weighted outputs back;
no expert ever sees a token it was not routed to. In eager mode, when no
assignment is dropped, the sort is a permutation: the dispatch is a gather and the
combine a weighted sum of each token's k rows, both with hand-written backwards
(:class:`_Permute`, :class:`_Unpermute`) built on ``embedding_bag``'s fused
gather-scale-add kernels; with a capacity the combine is one weighted ``index_add``
(:class:`_WeightedSum`). The gate's load estimator is one autograd op too
(:class:`_SmoothLoad`), and on the CPU top-k is k rounds of ``max``
(:func:`top_k`). The experts themselves run through
:func:`~.moe_experts.run_experts`: the ``MoE`` block stores experts that are copies of
one ``Linear`` or ``nn.Sequential`` of Linear and elementwise layers (the default ``MLP``
expert) stacked (:class:`~.moe_experts.StackedExperts`: one [E, out, in] weight per
layer) and runs them as one autograd op that goes expert by expert through all layers
(or, for small experts with few rows each on the CPU, as one ``torch._grouped_mm`` per
layer); other experts are separate modules, each called on its slice. All give the
per-expert loop's outputs and gradients.

torch.compile / torch.export: how many tokens each expert receives is data
(it depends on the router's values). :func:`dispatch` reads the per-expert
counts with one ``.tolist()`` and states their invariants with
``torch._check``, so the sizes become unbacked symbolic ints instead of graph
breaks; the capacity limit is computed on tensors so that a dynamic token
count is not pinned. Checked with torch 2.13 (tests/test_moe.py):
``torch.compile(fullgraph=True)`` works as is, because dynamo turns on
``capture_scalar_outputs`` for full graphs (older torch needs
``torch._dynamo.config.capture_scalar_outputs = True``); without
``fullgraph=True`` and without that flag, dynamo splits the forward at the
``.tolist()`` into several graphs. ``torch.export.export`` works, with
``dynamic_shapes`` on the token axis too; the ``dropped_fraction`` buffer
update is kept as a buffer mutation. Counting uses ``scatter_add``, not
``bincount``, whose output length is itself data-dependent. In eager mode an
expert with no tokens is skipped (a separate expert module's parameters get
``grad is None``; stacked experts get an exactly zero gradient in its slices); while
compiling it runs on an empty batch instead (its gradient is exactly zero), because a branch on a
data-dependent size cannot be traced. Under inductor
the routing noise comes from inductor's own RNG, so a compiled training step
draws different noise than eager mode with the same seed.

Routing statistics (for ``dsl.training.hooks.expert_usage``): a gate whose
``usage`` attribute holds a :class:`RoutingStats` adds, for every training
forward, the routed assignments and gate mass per expert, the summed entropy
of the router's distribution, the token count and (for MoE with a capacity)
the dropped assignments. The update runs under ``no_grad``, draws no random
numbers and is skipped in eval mode and while torch.compile/export trace the
module, so it never changes an output and never enters a graph. ``usage`` is
``None`` by default: nothing is collected unless a training hook asks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .moe_experts import StackedExperts, run_experts

# The paper's noise_epsilon: keeps the noise std strictly positive.
NOISE_EPSILON = 1e-2
# cv_squared's epsilon in tensor2tensor.
CV_EPSILON = 1e-10


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
    is_in = noisy > threshold_if_in
    # One standard-normal CDF of the chosen threshold's distance: the same values and
    # gradients as Φ(in) where is_in else Φ(out), in a third of the elementwise ops.
    # The choice is out + is_in * (in - out), not torch.where: on the CPU a where over
    # broadcast [T, 1] operands (and its backward, two more) costs several times a
    # fused multiply-add over [T, E]. Exact: is_in is 0 or 1.
    threshold = torch.addcmul(threshold_if_out, is_in.to(noisy.dtype), threshold_if_in - threshold_if_out)
    return torch.special.ndtr((clean - threshold) / std)


class _SmoothLoad(torch.autograd.Function):
    """load[i] = sum over tokens of :func:`prob_in_top_k`, as one autograd op.

    With z = (clean - threshold) / std and φ the standard normal density, the
    backward of an incoming gradient g[i] is, per token and expert:
    d clean = g φ(z) / std, d std = -d clean · z, and d threshold = -d clean, which
    goes to the (k+1)-th top value where the expert is in the top k and to the k-th
    elsewhere. Autograd's chain for the same function (the threshold choice, the
    subtraction, the division, ``ndtr``) makes about twice as many [T, E] passes and
    temporaries, which on the CPU cost more than their arithmetic. Eager mode only
    (torch.compile fuses the plain version); ``once_differentiable``.
    """

    @staticmethod
    def forward(ctx: object, clean: Tensor, noisy: Tensor, std: Tensor, top_values: Tensor, k: int) -> Tensor:  # type: ignore[override]
        threshold_if_in = top_values[:, k : k + 1]
        threshold_if_out = top_values[:, k - 1 : k]
        is_in = noisy > threshold_if_in
        threshold = torch.addcmul(threshold_if_out, is_in.to(clean.dtype), threshold_if_in - threshold_if_out)
        z = torch.sub(clean, threshold).div_(std)
        ctx.save_for_backward(z, std, is_in)  # type: ignore[attr-defined]
        ctx.k, ctx.width = k, top_values.shape[1]  # type: ignore[attr-defined]
        return torch.special.ndtr(z).sum(0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: object, grad: Tensor) -> tuple[Tensor | None, None, Tensor | None, Tensor | None, None]:  # type: ignore[override]
        z, std, is_in = ctx.saved_tensors  # type: ignore[attr-defined]
        k, width = ctx.k, ctx.width  # type: ignore[attr-defined]
        needs_clean, _, needs_std, needs_top = ctx.needs_input_grad[:4]  # type: ignore[attr-defined]
        # φ(z) g / std, built in place in one buffer
        d_clean = z.square().mul_(-0.5).exp_().mul_(grad * _INV_SQRT_2PI).div_(std)
        d_std = torch.mul(d_clean, z).neg_() if needs_std else None
        d_top = None
        if needs_top:
            d_in = torch.mul(d_clean, is_in).sum(1)
            d_top = d_clean.new_zeros(z.shape[0], width)
            d_top[:, k] = -d_in
            d_top[:, k - 1] = d_in - d_clean.sum(1)
        return (d_clean if needs_clean else None), None, d_std, d_top, None


_INV_SQRT_2PI = 0.3989422804014327


def smooth_load(clean: Tensor, noisy: Tensor, std: Tensor, top_values: Tensor, k: int) -> Tensor:
    """The load estimator of the noisy top-k gate: ``prob_in_top_k(...).sum(0)`` [E]."""
    if torch.compiler.is_compiling():
        return prob_in_top_k(clean, noisy, std, top_values, k).sum(0)
    return _SmoothLoad.apply(clean, noisy, std, top_values, k)


def top_k(logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k largest values per row of ``logits`` [T, E] and their indices, descending:
    ``logits.topk(k, dim=-1)``.

    On the CPU, for 8 experts or more, the indices come from k rounds of a maximum over
    a transposed copy [E, T] (each round masks its winner): ``amax`` across contiguous
    rows vectorises, and the winner's index is found with arithmetic (the ``amin`` of
    ``row + E`` off the maximum, ``row`` on it), since ``topk``, ``max`` with indices,
    comparisons and ``where`` all run scalar loops over the short rows of [T, E] on the
    CPU. At E=16, 4,096 tokens, k=3: 250 µs against 460 µs for rounds of ``max`` and
    630 µs for ``topk`` (benchmarks/NOTES.md). The values are then gathered, so their
    gradient is the same scatter as ``topk``'s; among equal values the lower expert
    index wins. For finite logits the result is ``topk``'s; a NaN or infinite
    logit keeps the indices in range, with an unspecified winner. Elsewhere, and while
    torch.compile / export trace, ``topk`` itself."""
    experts = logits.shape[-1]
    if logits.device.type != "cpu" or experts < TOPK_BY_ARGMAX_MIN_EXPERTS or torch.compiler.is_compiling():
        return logits.topk(k, dim=-1)
    with torch.no_grad():
        work = logits.detach().t().contiguous()  # [E, T]
        rows = torch.arange(experts, dtype=work.dtype, device=work.device).unsqueeze(1)
        winners = []
        for j in range(k):
            off_max = torch.sub(work, work.amax(0, keepdim=True)).sign_()  # 0 on the maximum, else -1
            winner = off_max.mul_(-experts).add_(rows).amin(0, keepdim=True)
            winners.append(winner.nan_to_num_(experts - 1).clamp_(0, experts - 1).long())
            if j + 1 < k:
                work.scatter_(0, winners[-1], float("-inf"))
        idx = torch.cat(winners).t()
    return logits.gather(1, idx), idx


# From this many experts on, top_k takes k rounds of max on the CPU (measured crossover).
TOPK_BY_ARGMAX_MIN_EXPERTS = 8


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
        flat = idx.reshape(-1)
        sums[:e] += _counts(idx, e).to(sums.dtype)
        sums[e : 2 * e] += torch.zeros(e, dtype=sums.dtype, device=sums.device).scatter_add(
            0, flat, w.detach().reshape(-1).to(sums.dtype)
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
        self, dim: int, experts: int, k: int = 2, noisy: bool = True, balance: float = 0.01, router: str = "topk"
    ):
        super().__init__()
        if not 1 <= k <= experts:
            raise ValueError(f"k={k} must be between 1 and experts={experts}")
        if router not in ("topk", "switch"):
            raise ValueError(f"unknown router {router!r}")
        if router == "switch" and k != 1:
            raise ValueError("the switch router sends each token to one expert (k=1)")
        self.dim, self.experts, self.k = dim, experts, k
        self.noisy, self.balance, self.router = noisy, balance, router
        # Zero init, as in the paper: every expert starts equally likely.
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

    # -- routing
    def logits(self, x: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """(clean, noisy, std): noisy = clean + N(0, 1) * (softplus(x W_noise) + 1e-2) while
        training a noisy gate; otherwise noisy is clean and std is None."""
        if self.w_noise is None or not self.training:
            clean = x @ self.w_gate
            return clean, clean, None
        # Both projections in one matmul: x [W_g | W_noise].
        both = x @ torch.cat([self.w_gate, self.w_noise], dim=1)
        # Contiguous copies of the two column blocks: on the CPU, elementwise kernels on
        # strided column views are many times slower (softplus on the view: ~13x).
        clean, raw_std = (part.contiguous() for part in both.split(self.experts, dim=1))
        std = nn.functional.softplus(raw_std) + NOISE_EPSILON
        if noise is None:
            noise = torch.randn_like(clean)
        return clean, torch.addcmul(clean, noise, std), std

    def route(self, x: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """x [T, D] -> (indices [T, k] long, weights [T, k], weighted balance loss [])."""
        clean, noisy, std = self.logits(x, noise)
        if self.router == "switch":
            routed = self._route_switch(noisy)
        else:
            routed = self._route_topk(clean, noisy, std)
        if _collecting(self.usage, self):
            self.usage.add_routing(clean, routed[0], routed[1])  # type: ignore[union-attr]
        return routed

    def _route_topk(self, clean: Tensor, noisy: Tensor, std: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        k, experts = self.k, self.experts
        top_values, top_idx = top_k(noisy, min(k + 1, experts))
        idx = top_idx[:, :k]
        w = _softmax_of_sorted(top_values[:, :k])
        if self.balance == 0:
            return idx, w, clean.new_zeros(())
        importance = clean.new_zeros(experts).index_add(0, idx.reshape(-1), w.reshape(-1))
        if std is not None and k < experts:
            load = smooth_load(clean, noisy, std, top_values, k)
        else:
            load = _counts(idx, experts).to(clean.dtype)
        return idx, w, self.balance * (cv_squared(importance) + cv_squared(load))

    def _route_switch(self, logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        probs = torch.softmax(logits, dim=-1)  # over all experts, as Switch does
        w, idx = probs.max(dim=-1, keepdim=True)
        if self.balance == 0:
            return idx, w, logits.new_zeros(())
        tokens = logits.shape[0]
        f = _counts(idx, self.experts).to(probs.dtype) / tokens  # fraction dispatched to i
        p = probs.mean(0)  # mean router probability of i
        return idx, w, self.balance * self.experts * (f * p).sum()


def _softmax_of_sorted(values: Tensor) -> Tensor:
    """Softmax over the last dim of rows sorted descending: the gate over the k winners
    only (not over all experts, then top-k).

    For k = 1 that is exactly 1 with a zero gradient: a constant. Otherwise exp(v - v_0)
    normalised, v_0 being the row's maximum: the same function as ``torch.softmax``,
    whose CPU kernel pays a per-row cost that dominates rows of k = 2 values."""
    if values.shape[-1] == 1:
        return torch.ones_like(values)
    e = torch.exp(values - values[:, :1])
    return e / e.sum(-1, keepdim=True)


def _counts(idx: Tensor, experts: int) -> Tensor:
    """Assignments per expert. scatter_add, not bincount: its length must be static."""
    flat = idx.reshape(-1)
    return torch.zeros(experts, dtype=torch.long, device=idx.device).scatter_add(0, flat, torch.ones_like(flat))


def _capacity_tensor(counts: Tensor, capacity: float) -> Tensor:
    """ceil(c * T * k / E), the most assignments one expert takes, from T*k = counts.sum().

    A tensor, not a Python int: an int from the (symbolic) token count would pin T
    under torch.export. float64 so that it rounds like Python's math.ceil."""
    return (counts.sum().double() * capacity / counts.numel()).ceil().long()


def dispatch(
    x: Tensor,
    idx: Tensor,
    w: Tensor,
    experts: Sequence[nn.Module] | StackedExperts,
    out: int,
    capacity: float | None = None,
) -> tuple[Tensor, Tensor]:
    """y[t] = sum over kept assignments (t, e) of w[t, e] * expert_e(x[t]).

    x [T, D], idx/w [T, k] -> (y [T, out], number of kept assignments []).
    With ``capacity`` c each expert keeps at most ceil(c*T*k/E) assignments,
    highest gate weight first (ties: lower token index first); the rest are
    dropped and contribute zero.
    """
    tokens, k = idx.shape
    n_exp = len(experts)
    flat_e, flat_w = idx.reshape(-1), w.reshape(-1)
    flat_t = torch.arange(tokens * k, device=x.device) // k
    if capacity is None:
        order = torch.argsort(flat_e, stable=True)
    else:
        # Two stable sorts = sort by (expert, -weight): the heaviest come first.
        by_w = torch.argsort(flat_w.detach(), descending=True, stable=True)
        order = by_w[torch.argsort(flat_e[by_w], stable=True)]
    counts = _counts(flat_e, n_exp)
    kept_counts = counts if capacity is None else torch.minimum(counts, _capacity_tensor(counts, capacity))
    sizes, kept = _sizes(counts, kept_counts, tokens * k)
    if not torch.compiler.is_compiling():
        if tokens == 0:
            return x.new_zeros(0, out), kept_counts.sum()
        if kept == sizes:  # nothing dropped: ``order`` is a permutation of the assignments
            return _dispatch_permuted(x, w, order, flat_t, experts, sizes), kept_counts.sum()
        return _dispatch_grouped(x, flat_t[order], flat_w[order], experts, sizes, kept), kept_counts.sum()
    tok, wt = flat_t[order], flat_w[order]
    y = x.new_zeros(tokens, out)
    start = 0
    for e in range(n_exp):
        te = tok.narrow(0, start, kept[e])
        xe = x.index_select(0, te)
        ye = experts.expert(e, xe) if isinstance(experts, StackedExperts) else experts[e](xe)
        ye = ye * wt.narrow(0, start, kept[e]).unsqueeze(-1)
        y = y.index_add(0, te, ye.to(y.dtype))
        start = start + sizes[e]
    return y, kept_counts.sum()


def _row_dot(a: Tensor, b: Tensor) -> Tensor:
    """(a * b).sum(-1) for [R, C] rows, as a batched matmul: no [R, C] temporary."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(a.shape[0])


class _WeightedSum(torch.autograd.Function):
    """y[t] = sum over rows i with tok[i] = t of w[i] * ys[i]: the MoE combine as one op.

    Autograd's version (``index_add`` of ``ys * w``) makes four [assignments, out]
    temporaries in the backward (the gathered gradient, both products, the
    index_add's zero buffer); this one makes one: it gathers the incoming gradient
    once, takes the weights' gradient as a row-wise dot product with it, and then
    scales it in place into the gradient of ``ys``: on CPU such temporaries cost
    more than their arithmetic (allocation and first touch). Eager mode only;
    ``once_differentiable``: no double backward through the combine.
    """

    @staticmethod
    def forward(ctx: object, ys: Tensor, w: Tensor, tok: Tensor, tokens: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(ys, w, tok)  # type: ignore[attr-defined]
        return ys.new_zeros(tokens, ys.shape[-1]).index_add_(0, tok, ys * w.unsqueeze(-1))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: object, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:  # type: ignore[override]
        ys, w, tok = ctx.saved_tensors  # type: ignore[attr-defined]
        needs_ys, needs_w = ctx.needs_input_grad[:2]  # type: ignore[attr-defined]
        picked = grad.contiguous().index_select(0, tok)
        grad_w = _row_dot(picked, ys) if needs_w else None
        grad_ys = picked.mul_(w.unsqueeze(-1)) if needs_ys else None
        return grad_ys, grad_w, None, None


def _dispatch_grouped(
    x: Tensor,
    tok: Tensor,
    wt: Tensor,
    experts: Sequence[nn.Module] | StackedExperts,
    sizes: list[int],
    kept: list[int],
) -> Tensor:
    """The eager body of :func:`dispatch`: one gather, each expert once on its contiguous
    slice of the expert-sorted tokens, one weighted scatter back (:class:`_WeightedSum`).

    ``tok``/``wt`` are the expert-sorted assignments; with a capacity each expert's
    first ``kept[e]`` of its ``sizes[e]`` assignments are kept (the heaviest).
    """
    if kept != sizes:  # capacity: keep the first kept[e] of each expert's group
        sel = _kept_positions(sizes, kept, tok.device)
        tok, wt = tok[sel], wt[sel]
    ys = run_experts(x.index_select(0, tok), experts, kept)
    return _WeightedSum.apply(ys.to(x.dtype), wt.to(x.dtype), tok, x.shape[0])


def _dispatch_permuted(x: Tensor, w: Tensor, order: Tensor, flat_t: Tensor,
                       experts: Sequence[nn.Module] | StackedExperts, sizes: list[int]) -> Tensor:
    """:func:`_dispatch_grouped` when every assignment is kept: the expert order is then
    a permutation of the T*k (token, slot) assignments, so each token's k rows are
    known by position (``inverse`` viewed [T, k]): the dispatch is a gather and the
    combine and the dispatch's backward are sums over each token's own k rows
    (:class:`_Permute`, :class:`_Unpermute`), instead of weighted ``index_add``
    scatters into a zeroed buffer. ``flat_t``: the token of each (token, slot) assignment."""
    k = w.shape[1]
    inverse = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=order.device))
    src = torch.div(order, k, rounding_mode="floor")  # the token of each expert-ordered row
    xs = _Permute.apply(x, src, inverse, k)
    ys = run_experts(xs, experts, sizes)
    return _Unpermute.apply(ys.to(x.dtype), w.to(x.dtype), src, order, inverse, flat_t)


class _Permute(torch.autograd.Function):
    """xs[i] = x[src[i]]: each token's row copied to its k assignment slots, in expert
    order (``src`` = ``order // k``, the token of each expert-ordered row). Backward: the
    k slot gradients of each token summed back into token order (:func:`_bag_sum` over
    the token's slots, ``inverse`` viewed [T, k]): one pass that writes each token's
    row once, deterministic on every device (no atomic scatter, no zero fill)."""

    @staticmethod
    def forward(ctx: object, x: Tensor, src: Tensor, inverse: Tensor, k: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(inverse)  # type: ignore[attr-defined]
        ctx.k = k  # type: ignore[attr-defined]
        return x.index_select(0, src)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: object, grad: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        (inverse,) = ctx.saved_tensors  # type: ignore[attr-defined]
        k = ctx.k  # type: ignore[attr-defined]
        grad = grad.contiguous()
        if k == 1:
            return grad.index_select(0, inverse), None, None, None
        return _bag_sum(grad, inverse.view(-1, k)), None, None, None


class _Unpermute(torch.autograd.Function):
    """y[t] = sum over slots j of w[t, j] * ys[inverse[t*k + j]]: the combine of
    :func:`_dispatch_permuted` (``ys`` in expert order, ``w`` [T, k] in token order).

    Forward: one weighted bag sum per token (:func:`_bag_sum`). Backward, with
    g = dy: the weights' gradient is dot(g[t], ys[inverse[t*k + j]]) per (token, slot)
    (:func:`_slot_dots`), and the gradient of ``ys``, in expert order, is row i of g's
    token scaled by that row's weight: one weighted gather (:func:`_bag_sum` with bags of
    one row). Each reads its operands once and writes its result once, where gathers
    followed by a multiply pass over [T*k, D] two or three times."""

    @staticmethod
    def forward(ctx: object, ys: Tensor, w: Tensor, src: Tensor, order: Tensor, inverse: Tensor,  # type: ignore[override]
                flat_t: Tensor) -> Tensor:
        tokens, k = w.shape
        ctx.save_for_backward(ys, w, src, order, inverse, flat_t)  # type: ignore[attr-defined]
        return _bag_sum(ys, inverse.view(tokens, k), w)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: object, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None, None, None]:  # type: ignore[override]
        ys, w, src, order, inverse, flat_t = ctx.saved_tensors  # type: ignore[attr-defined]
        needs_ys, needs_w = ctx.needs_input_grad[:2]  # type: ignore[attr-defined]
        tokens, k = w.shape
        # contiguous: a broadcast gradient (e.g. of y.sum()) sends the gathers down a slow path
        grad = grad.contiguous()
        grad_w = _slot_dots(grad, ys, src, inverse, flat_t).view(tokens, k) if needs_w else None
        grad_ys = None
        if needs_ys:
            grad_ys = _bag_sum(grad, src.view(-1, 1), w.reshape(-1).index_select(0, order).view(-1, 1))
        return grad_ys, grad_w, None, None, None, None


def _bag_sum(table: Tensor, bags: Tensor, weights: Tensor | None = None) -> Tensor:
    """out[b] = sum over j of weights[b, j] * table[bags[b, j]] (weights default to 1):
    ``embedding_bag`` in ``sum`` mode, whose kernels (FBGEMM's on x86 CPUs) gather,
    scale and add each output row in one pass. [B, n] bags of rows of ``table`` [R, D]
    -> [B, D]. On a backend without those kernels, the same sum by indexing."""
    try:
        return nn.functional.embedding_bag(bags, table, mode="sum", per_sample_weights=weights)
    except NotImplementedError:
        rows = table[bags]  # [B, n, D]
        return (rows if weights is None else rows * weights.unsqueeze(-1)).sum(1)


def _slot_dots(grad: Tensor, ys: Tensor, src: Tensor, inverse: Tensor, flat_t: Tensor) -> Tensor:
    """dot(grad[t], ys[inverse[t*k + j]]) for every (token t, slot j), in token-slot order
    [T*k] (``flat_t``: t for each): the weights' gradient of the combine (:class:`_Unpermute`).

    That is the gradient ``embedding_bag`` gives its per-sample weights, and its aten
    op computes it without a [T*k, D] temporary. A private op: where it is missing (or
    has no kernel for the device), the gradient's rows are gathered into expert order
    and dotted there."""
    if _PER_SAMPLE_WEIGHTS_BACKWARD is not None:
        k = flat_t.numel() // grad.shape[0]
        offsets = torch.arange(0, flat_t.numel(), k, device=grad.device)
        try:
            return _PER_SAMPLE_WEIGHTS_BACKWARD(grad, ys, inverse, offsets, flat_t, 0)
        except NotImplementedError:
            pass
    return _row_dot(grad.index_select(0, src), ys).index_select(0, inverse)


_PER_SAMPLE_WEIGHTS_BACKWARD = getattr(torch.ops.aten, "_embedding_bag_per_sample_weights_backward", None)


def _kept_positions(sizes: list[int], kept: list[int], device: torch.device) -> Tensor:
    """Positions, in the expert-sorted order, of the first ``kept[e]`` assignments of each
    expert's group of ``sizes[e]``: group e starts at sum(sizes[:e]) there and at
    sum(kept[:e]) among the kept ones, so each kept one is shifted by the difference."""
    shift = [0]
    for s, c in zip(sizes[:-1], kept[:-1], strict=True):
        shift.append(shift[-1] + s - c)
    total = sum(kept)
    shifts = torch.tensor(shift, device=device).repeat_interleave(torch.tensor(kept, device=device), output_size=total)
    return torch.arange(total, device=device) + shifts


def _sizes(counts: Tensor, kept_counts: Tensor, total: int) -> tuple[list[int], list[int]]:
    """The per-expert sizes as Python ints (one host sync), with the facts that let
    torch.compile/export trace them as unbacked symbolic ints."""
    both = torch.stack([counts, kept_counts]).tolist()
    sizes, kept = both[0], both[1]
    if not torch.compiler.is_compiling():  # facts for the tracer only; ~20 µs each in eager
        return sizes, kept
    for s, c in zip(sizes, kept, strict=True):
        torch._check(c >= 0)
        torch._check(c <= s)
    torch._check(sum(sizes) == total)
    return sizes, kept


class MixtureOfExperts(nn.Module):
    """``x [..., D] -> (y [..., out], balance [])``: a gate plus ``experts``, either E expert
    modules (kept in an ``nn.ModuleList``, each called on its tokens) or one
    :class:`~.moe_experts.StackedExperts`."""

    dropped_fraction: Tensor

    def __init__(self, gate: NoisyTopKGate, experts: Sequence[nn.Module] | StackedExperts, out: int,
                 capacity: float | None = None):
        super().__init__()
        if len(experts) != gate.experts:
            raise ValueError(f"gate routes to {gate.experts} experts, got {len(experts)}")
        self.gate = gate
        self.experts = experts if isinstance(experts, StackedExperts) else nn.ModuleList(experts)
        self.out = out
        self.capacity = capacity
        # Fraction of (token, expert) assignments dropped by the capacity limit in the
        # last forward; not persistent, so it stays out of checkpoints.
        self.register_buffer("dropped_fraction", torch.zeros(()), persistent=False)

    def extra_repr(self) -> str:
        return f"out={self.out}, capacity={self.capacity}"

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        flat = x.reshape(-1, x.shape[-1])
        idx, w, loss = self.gate.route(flat)
        y, kept = dispatch(flat, idx, w, self.experts, self.out, self.capacity)
        if self.capacity is not None:
            with torch.no_grad():
                self.dropped_fraction.copy_(1.0 - kept.to(self.dropped_fraction.dtype) / idx.numel())
            if _collecting(self.gate.usage, self):
                self.gate.usage.add_dropped(idx.numel() - kept)  # type: ignore[union-attr]
        return y.reshape(*x.shape[:-1], self.out), loss
