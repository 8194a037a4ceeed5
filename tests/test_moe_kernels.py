"""The MoE's hand-written eager kernels give the values and gradients of the plain
torch expressions they replace (blocks/nn/moe.py; the speed is in benchmarks/)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import dsl.blocks.nn.moe as moe

from dsl.blocks.nn.moe import (  # isort: skip
    TOPK_BY_ARGMAX_MIN_EXPERTS,
    NoisyTopKGate,
    _SmoothLoad,
    _softmax_of_sorted,
    dispatch,
    prob_in_top_k,
    smooth_load,
    top_k,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("experts", [4, 8, 16, 64])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_top_k_matches_topk_values_indices_and_gradient(experts: int, n: int) -> None:
    logits = torch.randn(50, experts, dtype=torch.float64, requires_grad=True)
    values, idx = top_k(logits, n)
    ref_values, ref_idx = logits.topk(n, dim=-1)
    assert torch.equal(idx, ref_idx) and torch.equal(values, ref_values)
    g = torch.randn_like(values)
    (grad,) = torch.autograd.grad((values * g).sum(), logits)
    (ref_grad,) = torch.autograd.grad((ref_values * g).sum(), logits)
    assert torch.equal(grad, ref_grad)


def test_top_k_breaks_ties_towards_the_lower_index() -> None:
    experts = TOPK_BY_ARGMAX_MIN_EXPERTS
    logits = torch.zeros(3, experts)
    logits[1, 5] = logits[1, 2] = 1.0
    _, idx = top_k(logits, 3)
    assert idx.tolist() == [[0, 1, 2], [2, 5, 0], [0, 1, 2]]
    assert all(len(set(row)) == 3 for row in idx.tolist())


def test_top_k_of_all_experts_is_a_permutation() -> None:
    logits = torch.randn(20, 9)
    _, idx = top_k(logits, 9)
    assert torch.equal(idx.sort(-1).values, torch.arange(9).expand(20, 9))


def test_top_k_keeps_indices_in_range_for_non_finite_logits() -> None:
    logits = torch.randn(4, TOPK_BY_ARGMAX_MIN_EXPERTS)
    logits[1, 3] = float("nan")
    logits[2] = float("nan")
    logits[3, 5] = float("inf")
    _, idx = top_k(logits, 3)
    assert idx.shape == (4, 3) and int(idx.min()) >= 0 and int(idx.max()) < TOPK_BY_ARGMAX_MIN_EXPERTS
    assert torch.equal(idx[0], logits[0].topk(3).indices)  # finite rows are unaffected


def test_softmax_of_sorted_rows() -> None:
    v = torch.randn(30, 3, dtype=torch.float64).sort(-1, descending=True).values * 20
    torch.testing.assert_close(_softmax_of_sorted(v), torch.softmax(v, -1))
    assert torch.equal(_softmax_of_sorted(v[:, :1]), torch.ones(30, 1, dtype=torch.float64))


@pytest.mark.parametrize(("experts", "k"), [(5, 1), (5, 2), (16, 2), (8, 3)])
def test_smooth_load_matches_autograd_of_prob_in_top_k(experts: int, k: int) -> None:
    clean = torch.randn(37, experts, dtype=torch.float64, requires_grad=True)
    std = (torch.rand(37, experts, dtype=torch.float64) + 0.1).requires_grad_()
    noisy = clean + torch.randn(37, experts, dtype=torch.float64) * std
    top_values, _ = top_k(noisy, k + 1)
    g = torch.randn(experts, dtype=torch.float64)
    ref = prob_in_top_k(clean, noisy, std, top_values, k).sum(0)
    ref_grads = torch.autograd.grad((ref * g).sum(), (clean, std), retain_graph=True)
    load = smooth_load(clean, noisy, std, top_values, k)
    grads = torch.autograd.grad((load * g).sum(), (clean, std))
    torch.testing.assert_close(load, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads, ref_grads, rtol=1e-12, atol=1e-12)


def test_smooth_load_gradcheck() -> None:
    clean = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    std = (torch.rand(6, 5, dtype=torch.float64) + 0.5).requires_grad_()
    top = torch.randn(6, 3, dtype=torch.float64).sort(-1, descending=True).values.requires_grad_()
    noisy = clean.detach() + 0.1 * torch.randn(6, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda c, s, t: _SmoothLoad.apply(c, noisy, s, t, 2), (clean, std, top))


def _mlp_experts(n: int, dim: int) -> list[nn.Module]:
    return [nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)) for _ in range(n)]


def _loop_dispatch(x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, experts: list[nn.Module]) -> torch.Tensor:
    """Every (token, slot) pair through its expert: the definition, with autograd's gradients."""
    y = torch.zeros(x.shape[0], experts[0][-1].out_features, dtype=x.dtype)
    for e, expert in enumerate(experts):
        t, j = (idx == e).nonzero(as_tuple=True)
        if t.numel():
            y = y.index_add(0, t, expert(x[t]) * w[t, j].unsqueeze(-1))
    return y


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("upstream", ["sum", "random"])
@pytest.mark.parametrize("kernels", ["embedding_bag", "no aten op", "no kernel"])
def test_permuted_dispatch_values_and_gradients_match_the_loop(
    monkeypatch: pytest.MonkeyPatch, k: int, upstream: str, kernels: str
) -> None:
    """No capacity: the gather-only path. Gradients for x, the gate weights and every
    expert parameter, including a broadcast upstream gradient (``y.sum()``). With
    embedding_bag's kernels, and with the fallbacks for a torch without its private
    per-sample-weights op and for a backend without either kernel."""
    if kernels == "no aten op":
        monkeypatch.setattr(moe, "_PER_SAMPLE_WEIGHTS_BACKWARD", None)
    elif kernels == "no kernel":
        def missing(*args: object, **kwargs: object) -> None:
            raise NotImplementedError("no kernel for this backend")

        monkeypatch.setattr(moe, "_PER_SAMPLE_WEIGHTS_BACKWARD", missing)
        monkeypatch.setattr(moe.nn.functional, "embedding_bag", missing)
    else:
        assert moe._PER_SAMPLE_WEIGHTS_BACKWARD is not None
    experts = _mlp_experts(6, 8)
    ref_experts = copy.deepcopy(experts)
    x = torch.randn(40, 8, requires_grad=True)
    idx = torch.stack([torch.randperm(6)[:k] for _ in range(40)])
    w = torch.rand(40, k, requires_grad=True)
    y, kept = dispatch(x, idx, w, experts, 8)
    y_ref = _loop_dispatch(x, idx, w, ref_experts)
    torch.testing.assert_close(y, y_ref, atol=1e-6, rtol=1e-5)
    assert int(kept) == 40 * k
    g = torch.ones_like(y) if upstream == "sum" else torch.randn_like(y)
    params = [p for e in experts for p in e.parameters()]
    ref_params = [p for e in ref_experts for p in e.parameters()]
    grads = torch.autograd.grad(y, [x, w, *params], g)
    ref_grads = torch.autograd.grad(y_ref, [x, w, *ref_params], g)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("kernels", ["embedding_bag", "no aten op"])
def test_permuted_dispatch_gradcheck(monkeypatch: pytest.MonkeyPatch, k: int, kernels: str) -> None:
    """The combine's and the dispatch's hand-written backwards against finite differences
    (float64), for the tokens, the gate weights and the experts' parameters."""
    if kernels == "no aten op":
        monkeypatch.setattr(moe, "_PER_SAMPLE_WEIGHTS_BACKWARD", None)
    experts = [e.double() for e in _mlp_experts(4, 3)]
    params = [p for e in experts for p in e.parameters()]
    x = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    idx = torch.stack([torch.randperm(4)[:k] for _ in range(7)])
    w = torch.rand(7, k, dtype=torch.float64, requires_grad=True)

    def layer(x: torch.Tensor, w: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        return dispatch(x, idx, w, experts, 3)[0]

    assert torch.autograd.gradcheck(layer, (x, w, *params))


def test_gate_route_equals_the_plain_expressions() -> None:
    """The noisy top-k route (top_k, the sorted softmax, the smooth load) against the
    paper's formulas written with torch.topk, torch.softmax and prob_in_top_k."""
    gate = NoisyTopKGate(12, 16, k=2, balance=0.3).double()
    with torch.no_grad():
        gate.w_gate.normal_()
        gate.w_noise.normal_()
    x = torch.randn(64, 12, dtype=torch.float64)
    noise = torch.randn(64, 16, dtype=torch.float64)
    idx, w, loss = gate.route(x, noise=noise)
    clean = x @ gate.w_gate
    std = nn.functional.softplus(x @ gate.w_noise) + 1e-2
    noisy = clean + noise * std
    top = noisy.topk(3, dim=-1)
    assert torch.equal(idx, top.indices[:, :2])
    ref_w = torch.softmax(top.values[:, :2], -1)
    importance = torch.zeros(64, 16, dtype=torch.float64).scatter(1, idx, ref_w).sum(0)
    load = prob_in_top_k(clean, noisy, std, top.values, 2).sum(0)

    def cv2(v: torch.Tensor) -> torch.Tensor:
        return v.var(unbiased=False) / (v.mean() ** 2 + 1e-10)

    ref_loss = 0.3 * (cv2(importance) + cv2(load))
    torch.testing.assert_close(w, ref_w)
    torch.testing.assert_close(loss, ref_loss)
    grads = torch.autograd.grad(loss + w.sum(), [gate.w_gate, gate.w_noise])
    ref_grads = torch.autograd.grad(ref_loss + ref_w.sum(), [gate.w_gate, gate.w_noise])
    torch.testing.assert_close(grads, ref_grads)
