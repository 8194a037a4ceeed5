"""Gate and MoE: paper identities, dispatch, the load estimator, the losses, shapes, compile."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pydantic
import pytest
import torch
from helpers import build, infer, value
from torch import nn

from dsl.language.registry import BlockValue, lookup
from dsl.language.shapes import ShapeCall, ShapeError, TensorType

from dsl.blocks.nn.moe import (  # isort: skip
    MixtureOfExperts,
    NoisyTopKGate,
    cv_squared,
    dispatch,
    prob_in_top_k,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _randomise_gate(gate: NoisyTopKGate, scale: float = 1.0) -> None:
    with torch.no_grad():
        gate.w_gate.normal_(0, scale)
        if gate.w_noise is not None:
            gate.w_noise.normal_(0, scale)


class LinearExpert(BlockValue):
    """A hand-written block value, as the checker makes for a user-defined block."""

    name = "LinearExpert"

    def __init__(self, out: int, module: type[nn.Linear] = nn.Linear):
        self.out = out
        self.module = module
        self.built = 0

    def infer(self, call: ShapeCall, inputs: Sequence[TensorType]) -> list[TensorType]:
        (t,) = inputs
        if t.shape[-1] == 3:  # an arbitrary restriction, to exercise error reporting
            raise ShapeError("LinearExpert refuses 3 features", arg="x", label="found 3")
        return [TensorType((t.shape[0], self.out))]

    def build(self, inputs: Sequence[TensorType]) -> Any:
        self.built += 1
        d = inputs[0].shape[-1]
        assert isinstance(d, int)
        return self.module(d, self.out)

    def describe(self) -> str:
        return f"LinearExpert(out={self.out})"


def _naive(x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, experts: Sequence[nn.Module], out: int,
           capacity: float | None = None) -> tuple[torch.Tensor, int]:
    """Per-token loop; with capacity, each expert keeps its heaviest assignments
    (ties: earlier token) up to ceil(c*T*k/E)."""
    tokens, k = idx.shape
    keep = torch.ones(tokens, k, dtype=torch.bool)
    if capacity is not None:
        cap = math.ceil(capacity * tokens * k / len(experts))
        for e in range(len(experts)):
            pairs = [(t, j) for t in range(tokens) for j in range(k) if idx[t, j] == e]
            pairs.sort(key=lambda tj: (-float(w[tj].detach()), tj[0]))
            for t, j in pairs[cap:]:
                keep[t, j] = False
    y = torch.zeros(tokens, out)
    for t in range(tokens):
        for j in range(k):
            if keep[t, j]:
                y[t] += w[t, j] * experts[int(idx[t, j])](x[t : t + 1])[0]
    return y, int(keep.sum())


# --------------------------------------------------------------------------- gate


def test_gate_weights_zero_at_init() -> None:
    gate = build("Gate", "[N, 8]", experts=4)
    assert torch.count_nonzero(gate.w_gate) == 0 and torch.count_nonzero(gate.w_noise) == 0
    moe = build("MoE", "[N, 8]", experts=4, noisy=False)
    assert torch.count_nonzero(moe.gate.w_gate) == 0 and moe.gate.w_noise is None


def test_gate_topk_on_noisy_logits_softmax_over_k_only() -> None:
    gate = NoisyTopKGate(6, 5, k=2)
    _randomise_gate(gate)
    x, noise = torch.randn(7, 6), torch.randn(7, 5)
    idx, w, _ = gate.route(x, noise=noise)
    std = nn.functional.softplus(x @ gate.w_noise) + 1e-2
    noisy = x @ gate.w_gate + noise * std
    top, top_idx = noisy.topk(2, dim=-1)
    assert torch.equal(idx, top_idx)
    torch.testing.assert_close(w, torch.softmax(top, dim=-1))


def test_gate_dense_weights_zero_outside_top_k_and_eval_is_deterministic() -> None:
    gate = build("Gate", "[B, T, 6]", experts=5, k=2)
    _randomise_gate(gate)
    x = torch.randn(3, 4, 6)
    weights, balance = gate(x)
    assert weights.shape == (3, 4, 5) and balance.shape == ()
    assert ((weights > 0).sum(-1) == 2).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4))
    gate.eval()
    a, _ = gate(x)
    b, _ = gate(x)
    assert torch.equal(a, b)
    clean_top = (x @ gate.w_gate).topk(2, dim=-1).indices.sort(-1).values
    assert torch.equal(a.topk(2, dim=-1).indices.sort(-1).values, clean_top)


def test_cv_squared() -> None:
    assert cv_squared(torch.full((5,), 3.0)).item() == 0.0
    assert cv_squared(torch.tensor([7.0])).item() == 0.0
    # population variance: [1, 3] has variance 1 and mean 2
    torch.testing.assert_close(cv_squared(torch.tensor([1.0, 3.0])), torch.tensor(0.25))


def test_topk_balance_loss_in_eval_uses_counts() -> None:
    gate = NoisyTopKGate(4, 3, k=1, balance=0.5).eval()
    _randomise_gate(gate)
    x = torch.randn(20, 4)
    idx, w, loss = gate.route(x)
    importance = torch.zeros(3).index_add(0, idx[:, 0], w[:, 0])
    load = torch.bincount(idx[:, 0], minlength=3).float()
    torch.testing.assert_close(loss, 0.5 * (cv_squared(importance) + cv_squared(load)))


def test_topk_balance_loss_in_training_uses_smooth_load() -> None:
    gate = NoisyTopKGate(4, 5, k=2, balance=0.1)
    _randomise_gate(gate)
    x, noise = torch.randn(9, 4), torch.randn(9, 5)
    idx, w, loss = gate.route(x, noise=noise)
    clean = x @ gate.w_gate
    std = nn.functional.softplus(x @ gate.w_noise) + 1e-2
    noisy = clean + noise * std
    importance = torch.zeros(9, 5).scatter(1, idx, w).sum(0)
    load = prob_in_top_k(clean, noisy, std, noisy.topk(3, dim=-1).values, 2).sum(0)
    torch.testing.assert_close(loss, 0.1 * (cv_squared(importance) + cv_squared(load)))
    loss.backward()
    assert gate.w_noise.grad is not None and gate.w_noise.grad.abs().sum() > 0


def test_load_estimator_matches_monte_carlo_when_resampling_one_expert() -> None:
    """P(x, i) is the chance that i stays in the top k when only its own noise is redrawn."""
    experts, k, draws = 5, 2, 20000
    gate = NoisyTopKGate(3, experts, k=k)
    _randomise_gate(gate, scale=0.8)
    x = torch.randn(4, 3)
    clean = x @ gate.w_gate
    std = nn.functional.softplus(x @ gate.w_noise) + 1e-2
    noise = torch.randn(4, experts)
    noisy = clean + noise * std
    p = prob_in_top_k(clean, noisy, std, noisy.topk(k + 1, dim=-1).values, k)
    for i in range(experts):
        resampled = noisy.unsqueeze(0).repeat(draws, 1, 1)
        resampled[:, :, i] = clean[:, i] + torch.randn(draws, 4) * std[:, i]
        in_top = (resampled.topk(k, dim=-1).indices == i).any(-1).float().mean(0)
        torch.testing.assert_close(in_top, p[:, i], atol=0.02, rtol=0)


def test_load_estimator_expectation_is_top_k_frequency() -> None:
    """Averaged over the noise, P(x, i) equals how often i lands in the top k."""
    experts, k, draws = 4, 2, 20000
    gate = NoisyTopKGate(3, experts, k=k)
    _randomise_gate(gate, scale=0.8)
    x = torch.randn(1, 3).expand(draws, 3)
    clean = x @ gate.w_gate
    std = nn.functional.softplus(x @ gate.w_noise) + 1e-2
    noisy = clean + torch.randn(draws, experts) * std
    top = noisy.topk(k + 1, dim=-1)
    p = prob_in_top_k(clean, noisy, std, top.values, k).mean(0)
    freq = torch.zeros(experts).index_add(0, top.indices[:, :k].reshape(-1), torch.ones(draws * k)) / draws
    torch.testing.assert_close(p, freq, atol=0.02, rtol=0)


def test_switch_loss_is_balance_under_uniform_routing() -> None:
    experts, balance = 4, 0.3
    gate = NoisyTopKGate(experts, experts, k=1, noisy=False, balance=balance, router="switch")
    with torch.no_grad():
        gate.w_gate.copy_(2.0 * torch.eye(experts))
    x = torch.eye(experts).repeat(3, 1)  # token t prefers expert t % E, symmetrically
    idx, w, loss = gate.route(x)
    torch.testing.assert_close(loss, torch.tensor(balance))
    probs = torch.softmax(x @ gate.w_gate, dim=-1)
    assert torch.equal(idx[:, 0], torch.arange(12) % experts)
    torch.testing.assert_close(w[:, 0], probs.max(-1).values)  # gate = prob over ALL experts
    # everything sent to expert 0: f = [1, 0, 0, 0] and P_0 > 1/E, so the loss grows
    _, _, skewed = gate.route(torch.eye(experts)[[0] * 8])
    assert skewed.item() > balance * 1.5


def test_params_validation() -> None:
    with pytest.raises(pydantic.ValidationError, match="exceeds"):
        infer("Gate", "[N, 4]", experts=2, k=3)
    with pytest.raises(pydantic.ValidationError, match="switch"):
        infer("MoE", "[N, 4]", experts=4, k=2, router="switch")
    with pytest.raises(pydantic.ValidationError):
        infer("MoE", "[N, 4]", experts=4, capacity=0)
    assert build("Gate", "[N, 4]", experts=3, router="switch").k == 1


# --------------------------------------------------------------------------- MoE


def test_k_equals_experts_without_noise_is_the_dense_softmax_mixture() -> None:
    experts = 4
    moe = build("MoE", "[N, 6]", experts=experts, k=experts, noisy=False, expert=value("Linear", out=5))
    _randomise_gate(moe.gate)
    x = torch.randn(11, 6)
    y, _ = moe(x)
    g = torch.softmax(x @ moe.gate.w_gate, dim=-1)
    dense = sum(g[:, i : i + 1] * moe.experts[i](x) for i in range(experts))
    torch.testing.assert_close(y, dense, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("capacity", [None, 0.5, 1.0])
def test_sorted_dispatch_matches_naive_loop(capacity: float | None) -> None:
    experts = [nn.Linear(6, 3) for _ in range(5)]
    gate = NoisyTopKGate(6, 5, k=2)
    _randomise_gate(gate)
    x = torch.randn(13, 6)
    idx, w, _ = gate.route(x)
    y, kept, _ = dispatch(x, idx, w, experts, 3, capacity)
    y_ref, kept_ref = _naive(x, idx, w, experts, 3, capacity)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    assert int(kept) == kept_ref


def test_each_expert_runs_once_on_its_own_tokens() -> None:
    separate = build("MoE", "[N, 4]", experts=3, k=2, expert=LinearExpert(out=4))
    _randomise_gate(separate.gate)
    rows: list[int] = []
    for e in separate.experts:
        e.register_forward_hook(lambda _m, inp, _o: rows.append(inp[0].shape[0]))
    separate(torch.randn(10, 4))
    assert len(rows) <= 3 and sum(rows) == 20


def test_unselected_experts_get_no_gradient() -> None:
    moe = build("MoE", "[N, 4]", experts=5, k=2, noisy=False, expert=value("Linear", out=4))
    with torch.no_grad():
        moe.gate.w_gate.zero_()
        moe.gate.w_gate[:, 1] = 3.0
        moe.gate.w_gate[:, 3] = 2.0
    x = torch.rand(8, 4) + 0.1  # positive: experts 1 and 3 always win
    y, balance = moe(x)
    (y.sum() + balance).backward()
    for i, expert in enumerate(moe.experts):
        if i in (1, 3):
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in expert.parameters())
        else:
            assert all(p.grad is None for p in expert.parameters())


def test_capacity_drops_lowest_weights_and_reports_fraction() -> None:
    moe = build("MoE", "[N, 4]", experts=4, k=2, capacity=0.5, expert=value("Linear", out=2))
    _randomise_gate(moe.gate, scale=2.0)
    moe.eval()
    x = torch.randn(12, 4)
    y, _ = moe(x)
    idx, w, _ = moe.gate.route(x)
    y_ref, kept = _naive(x, idx, w, moe.experts, 2, capacity=0.5)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    assert kept < 24  # cap = ceil(0.5 * 12 * 2 / 4) = 3 per expert: at most 12 of 24 kept
    torch.testing.assert_close(moe.dropped_fraction, torch.tensor(1 - kept / 24))
    assert "dropped_fraction" not in moe.state_dict()


def test_capacity_all_to_one_expert() -> None:
    moe = build("MoE", "[N, 2]", experts=2, k=1, capacity=1.0, noisy=False, expert=value("Linear", out=2))
    with torch.no_grad():
        moe.gate.w_gate[:, 0] = 1.0
    moe(torch.rand(8, 2) + 0.1)  # all 8 tokens want expert 0, which takes ceil(8/2) = 4
    torch.testing.assert_close(moe.dropped_fraction, torch.tensor(0.5))


@pytest.mark.parametrize(
    ("shape", "kw", "expected"),
    [
        ("[N, 8]", {}, (9, 8)),
        ("[B, T, 8]", {"out": 8}, (2, 5, 8)),
        ("[N, 8]", {"expert": value("Linear", out=3)}, (9, 3)),
        ("[B, T, 8]", {"expert": value("Linear", out=3), "out": 3, "router": "switch"}, (2, 5, 3)),
        ("[N, 8]", {"expert": LinearExpert(out=6), "capacity": 1.0}, (9, 6)),
    ],
)
def test_shape_rule_agrees_with_module(shape: str, kw: dict[str, Any], expected: tuple[int, ...]) -> None:
    y_type, b_type = infer("MoE", shape, experts=3, **kw)
    assert y_type.shape[-1] == expected[-1] and len(y_type.shape) == len(expected) and b_type.shape == ()
    moe = build("MoE", shape.replace("N", "9").replace("B", "2").replace("T", "5"), experts=3, **kw)
    y, balance = moe(torch.randn(*expected[:-1], 8))
    assert tuple(y.shape) == expected and balance.shape == ()
    w_type, _ = infer("Gate", shape, experts=3)
    assert w_type.shape[-1] == 3


def test_shape_rule_keeps_symbols_and_ellipsis() -> None:
    y, _ = infer("MoE", "[..., T, 8]", experts=2, expert=value("Linear", out=4))
    assert str(y) == "[..., T, 4]"


def test_out_must_agree_with_expert() -> None:
    with pytest.raises(ShapeError) as err:
        infer("MoE", "[N, 8]", experts=3, expert=value("Linear", out=4), out=5)
    assert err.value.arg == "out" and "4" in err.value.label


def test_expert_that_rejects_tokens_is_reported() -> None:
    with pytest.raises(ShapeError) as err:
        infer("MoE", "[N, 3]", experts=2, expert=LinearExpert(out=2))
    assert "LinearExpert(out=2)" in err.value.message


def test_dtype_checked() -> None:
    with pytest.raises(ShapeError):
        infer("MoE", "[N, 8] long", experts=2)


def test_user_block_value_is_built_once_per_copy() -> None:
    expert = LinearExpert(out=4)
    moe = build("MoE", "[N, 6]", experts=3, expert=expert)
    assert expert.built == 3
    weights = [e.weight for e in moe.experts]  # three Linear copies: three initialisations
    assert weights[0].shape == (4, 6) and not torch.equal(weights[0], weights[1])


@pytest.mark.skipif(lookup("MLP") is None, reason="the MLP block is not registered yet")
def test_expert_mlp_value() -> None:
    y, _ = infer("MoE", "[N, 8]", experts=2, expert=value("MLP", hidden=16, out=5))
    assert y.shape[-1] == 5
    moe = build("MoE", "[N, 8]", experts=2, expert=value("MLP", hidden=16, out=5))
    assert moe(torch.randn(7, 8))[0].shape == (7, 5)
    default = build("MoE", "[N, 8]", experts=2, out=3)
    assert default(torch.randn(7, 8))[0].shape == (7, 3)


def test_switch_moe_routes_each_token_to_one_expert() -> None:
    moe = build("MoE", "[N, 4]", experts=3, router="switch", expert=value("Linear", out=2))
    _randomise_gate(moe.gate)
    x = torch.randn(9, 4)
    torch.manual_seed(1)
    y, balance = moe(x)
    torch.manual_seed(1)
    idx, w, balance_ref = moe.gate.route(x)
    assert idx.shape == (9, 1)
    y_ref, _ = _naive(x, idx, w, moe.experts, 2)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(balance, balance_ref)


def test_moe_trains_balance_gradient_reaches_gate() -> None:
    moe = build("MoE", "[N, 4]", experts=4, k=2, expert=value("Linear", out=4), balance=1.0)
    y, balance = moe(torch.randn(16, 4))
    (y.pow(2).mean() + balance).backward()
    assert moe.gate.w_gate.grad is not None and moe.gate.w_gate.grad.abs().sum() > 0


def test_aux_loss_declared() -> None:
    for name in ("Gate", "MoE"):
        decl = lookup(name)
        assert decl is not None and [(a.output, a.weight) for a in decl.aux] == [("balance", 1.0)]


def test_declarations_do_not_import_torch() -> None:
    code = "import sys, dsl.blocks.moe; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- compile / export


def _compile_target(capacity: float | None) -> MixtureOfExperts:
    moe = build("MoE", "[N, 6]", experts=4, k=2, capacity=capacity, expert=value("Linear", out=3))
    _randomise_gate(moe.gate)
    return moe


def _step(moe: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    torch.manual_seed(7)  # the same routing noise for eager and compiled
    y, b = moe(x)
    params = [p for p in moe.parameters() if p.requires_grad]
    grads = torch.autograd.grad(y.pow(2).sum() + b, params, allow_unused=True)
    return y, b, [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


@pytest.mark.parametrize(("capacity", "training"), [(None, False), (0.75, True)])
def test_torch_compile_fullgraph(capacity: float | None, training: bool) -> None:
    moe = _compile_target(capacity).train(training)
    x = torch.randn(10, 6)
    y_ref, b_ref, g_ref = _step(moe, x)
    torch._dynamo.reset()
    # aot_eager traces forward and backward like inductor but skips codegen (fast).
    # No config flag: fullgraph=True turns on capture_scalar_outputs itself.
    compiled = torch.compile(moe, fullgraph=True, backend="aot_eager")
    y, b, g = _step(compiled, x)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(b, b_ref)
    torch.testing.assert_close(g, g_ref)


def test_torch_export_with_dynamic_tokens() -> None:
    moe = _compile_target(0.75).eval()
    x = torch.randn(10, 6)
    exported = torch.export.export(moe, (x,), dynamic_shapes={"x": {0: torch.export.Dim("T")}})
    module = exported.module()
    for tokens in (10, 17):
        x = torch.randn(tokens, 6)
        y_ref, b_ref = moe(x)
        moe_dropped = moe.dropped_fraction.clone()
        y, b = module(x)
        torch.testing.assert_close(y, y_ref)
        torch.testing.assert_close(b, b_ref)
        torch.testing.assert_close(module.dropped_fraction, moe_dropped)
    assert moe_dropped > 0
