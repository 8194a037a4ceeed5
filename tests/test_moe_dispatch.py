"""MoE dispatch and routing give the values and gradients of the paper's definitions:
every (token, slot) through its expert, and the noisy top-k gate's formulas."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dsl.blocks.nn.moe import NoisyTopKGate, dispatch, prob_in_top_k


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


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
def test_dispatch_values_and_gradients_match_the_loop(k: int, upstream: str) -> None:
    """Gradients for x, the gate weights and every expert parameter, including a
    broadcast upstream gradient (``y.sum()``)."""
    experts = _mlp_experts(6, 8)
    ref_experts = copy.deepcopy(experts)
    x = torch.randn(40, 8, requires_grad=True)
    idx = torch.stack([torch.randperm(6)[:k] for _ in range(40)])
    w = torch.rand(40, k, requires_grad=True)
    y, kept, _ = dispatch(x, idx, w, experts, 8)
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
def test_dispatch_gradcheck(k: int) -> None:
    """Against finite differences (float64), for the tokens, the gate weights and the experts' parameters."""
    experts = [e.double() for e in _mlp_experts(4, 3)]
    params = [p for e in experts for p in e.parameters()]
    x = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    idx = torch.stack([torch.randperm(4)[:k] for _ in range(7)])
    w = torch.rand(7, k, dtype=torch.float64, requires_grad=True)

    def layer(x: torch.Tensor, w: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        return dispatch(x, idx, w, experts, 3)[0]

    assert torch.autograd.gradcheck(layer, (x, w, *params))


def test_gate_route_equals_the_plain_expressions() -> None:
    """The noisy top-k route against the paper's formulas (Shazeer et al. 2017, Appendix A)."""
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
