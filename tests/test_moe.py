"""Gate and MoE: paper identities, dispatch, the load estimator, the losses, shapes, compile."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pydantic
import pytest
import torch
from torch import nn

from dsl.language.registry import BlockValue, lookup
from dsl.language.shapes import ShapeCall, ShapeError, TensorType
from dsl.testing import build, infer, value

from dsl.blocks.nn.moe import (  # isort: skip
    MixtureOfExperts,
    NoisyTopKGate,
    cv_squared,
    dispatch,
    prob_in_top_k,
)
from dsl.blocks.nn.moe_experts import StackedExperts, run_experts  # isort: skip


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _randomise_gate(gate: NoisyTopKGate, scale: float = 1.0) -> None:
    with torch.no_grad():
        gate.w_gate.normal_(0, scale)
        if gate.w_noise is not None:
            gate.w_noise.normal_(0, scale)


class _OwnLinear(nn.Linear):
    """A Linear subclass (its forward could differ): such experts stay one module each."""


class LinearExpert(BlockValue):
    """A hand-written block value, as the checker makes for a user-defined block."""

    name = "LinearExpert"

    def __init__(self, out: int, module: type[nn.Linear] = nn.Linear):
        self.out = out
        self.module = module  # a subclass of nn.Linear makes experts that are not stacked
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
    dense = sum(g[:, i : i + 1] * moe.experts.expert(i, x) for i in range(experts))
    torch.testing.assert_close(y, dense, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("capacity", [None, 0.5, 1.0])
def test_sorted_dispatch_matches_naive_loop(capacity: float | None) -> None:
    experts = [nn.Linear(6, 3) for _ in range(5)]
    gate = NoisyTopKGate(6, 5, k=2)
    _randomise_gate(gate)
    x = torch.randn(13, 6)
    idx, w, _ = gate.route(x)
    y, kept = dispatch(x, idx, w, experts, 3, capacity)
    y_ref, kept_ref = _naive(x, idx, w, experts, 3, capacity)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    assert int(kept) == kept_ref


def test_each_expert_runs_once_on_its_own_tokens() -> None:
    moe = build("MoE", "[N, 4]", experts=3, k=2, expert=value("Linear", out=4))
    _randomise_gate(moe.gate)
    seen: list[int] = []
    moe.experts.register_forward_hook(lambda _m, inp, _o: seen.append(list(inp[1])))
    moe(torch.randn(10, 4))
    assert len(seen) == 1 and len(seen[0]) == 3 and sum(seen[0]) == 20  # 10 tokens * k=2, no more
    separate = build("MoE", "[N, 4]", experts=3, k=2, expert=LinearExpert(out=4, module=_OwnLinear))
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
    (linear,) = moe.experts.layers  # stacked: an unselected expert's slices get exact zeros
    for i in range(5):
        grads = [linear.weight.grad[i], linear.bias.grad[i]]
        if i in (1, 3):
            assert all(g.abs().sum() > 0 for g in grads)
        else:
            assert all(torch.count_nonzero(g) == 0 for g in grads)


def test_capacity_drops_lowest_weights_and_reports_fraction() -> None:
    moe = build("MoE", "[N, 4]", experts=4, k=2, capacity=0.5, expert=value("Linear", out=2))
    _randomise_gate(moe.gate, scale=2.0)
    moe.eval()
    x = torch.randn(12, 4)
    y, _ = moe(x)
    idx, w, _ = moe.gate.route(x)
    y_ref, kept = _naive(x, idx, w, moe.experts.to_modules(), 2, capacity=0.5)
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
    weight = moe.experts.layers[0].weight  # three Linear copies, stacked: three initialisations
    assert weight.shape == (3, 4, 6) and not torch.equal(weight[0], weight[1])


@pytest.mark.skipif(lookup("MLP") is None, reason="the MLP block is not registered yet")
def test_expert_mlp_value() -> None:
    y, _ = infer("MoE", "[N, 8]", experts=2, expert=value("MLP", hidden=16, out=5))
    assert y.shape[-1] == 5
    moe = build("MoE", "[N, 8]", experts=2, expert=value("MLP", hidden=16, out=5))
    assert moe(torch.randn(7, 8))[0].shape == (7, 5)
    default = build("MoE", "[N, 8]", experts=2, out=3)
    assert default(torch.randn(7, 8))[0].shape == (7, 3)


def test_default_expert_without_a_registered_mlp(monkeypatch: pytest.MonkeyPatch) -> None:
    import dsl.blocks.moe as moe_decl

    monkeypatch.setattr(moe_decl, "lookup", lambda name: None)
    moe = build("MoE", "[N, 8]", experts=2, out=3)
    first, last = moe.experts.layers[0], moe.experts.layers[-1]
    assert (first.experts, first.in_features, first.out_features, last.out_features) == (2, 8, 16, 3)
    assert moe(torch.randn(4, 8))[0].shape == (4, 3)


def test_switch_moe_routes_each_token_to_one_expert() -> None:
    moe = build("MoE", "[N, 4]", experts=3, router="switch", expert=value("Linear", out=2))
    _randomise_gate(moe.gate)
    x = torch.randn(9, 4)
    torch.manual_seed(1)
    y, balance = moe(x)
    torch.manual_seed(1)
    idx, w, balance_ref = moe.gate.route(x)
    assert idx.shape == (9, 1)
    y_ref, _ = _naive(x, idx, w, moe.experts.to_modules(), 2)
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


# --------------------------------------------------------------------------- stacked experts


def _mlp_experts(n: int, d: int = 8, hidden: int = 16) -> list[nn.Module]:
    return [nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d)) for _ in range(n)]


def _stacked(experts: list[nn.Module]) -> StackedExperts:
    """The experts stacked, from copies (``experts`` keep their own parameters)."""
    return StackedExperts.from_modules(copy.deepcopy(experts))


def _expert_grads(experts: list[nn.Module]) -> list[torch.Tensor]:
    """Per layer, each expert's parameter gradients stacked (zeros for ``None``), in the
    stacked parameters' order: the gradients a StackedExperts must have."""
    out = []
    for column in zip(*(list(e.parameters()) for e in experts), strict=True):
        out.append(torch.stack([torch.zeros_like(p) if p.grad is None else p.grad for p in column]))
    return out


def _grads(y: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    grads = torch.autograd.grad(y.pow(2).sum(), inputs, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads, strict=True)]


def _count_calls(monkeypatch: pytest.MonkeyPatch, *names: str) -> list[str]:
    import dsl.blocks.nn.moe_experts as mod

    taken: list[str] = []
    for name in names:
        real = getattr(mod, name)
        monkeypatch.setattr(mod, name, lambda *a, _n=name, _r=real: taken.append(_n) or _r(*a))
    return taken


@pytest.mark.parametrize(("k", "capacity"), [(1, None), (2, None), (2, 0.5)])
def test_grouped_experts_equal_per_expert_calls(monkeypatch: pytest.MonkeyPatch, k: int,
                                                capacity: float | None) -> None:
    taken = _count_calls(monkeypatch, "_run_grouped")
    experts = _mlp_experts(5)
    stacked = _stacked(experts)
    gate = NoisyTopKGate(8, 5, k=k)
    _randomise_gate(gate)
    x = torch.randn(23, 8, requires_grad=True)
    idx, w, _ = gate.route(x)
    y, kept = dispatch(x, idx, w, stacked, 8, capacity)
    assert taken == ["_run_grouped"]
    y_ref, kept_ref = dispatch(x, idx, w, experts, 8, capacity)  # each module called on its rows
    torch.testing.assert_close(y, y_ref)
    assert int(kept) == int(kept_ref)
    wrt = [x, w] if w.requires_grad else [x]  # k=1: the weight is the constant 1
    params = list(stacked.parameters())
    grads = _grads(y, [*wrt, *params])
    grads_ref = _grads(y_ref, [*wrt, *(p for e in experts for p in e.parameters())])
    for g, g_ref in zip(grads[: len(wrt)], grads_ref[: len(wrt)], strict=True):
        torch.testing.assert_close(g, g_ref)
    per_expert = grads_ref[len(wrt) :]
    for i, g in enumerate(grads[len(wrt) :]):
        torch.testing.assert_close(g, torch.stack(per_expert[i :: len(params)]))
    naive, kept_naive = _naive(x.detach(), idx.detach(), w.detach(), experts, 8, capacity)
    torch.testing.assert_close(y.detach(), naive, atol=1e-5, rtol=1e-5)
    assert int(kept) == kept_naive


def test_which_experts_stack() -> None:
    from dsl.blocks.nn.moe_experts import stackable

    assert stackable(_mlp_experts(3)) and stackable([nn.Linear(8, 4) for _ in range(3)])
    assert stackable([nn.Sequential(nn.Tanh(), nn.Linear(8, 4)) for _ in range(2)])
    mixed = _mlp_experts(2) + [nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))]
    tanh_gelu = _mlp_experts(2) + [nn.Sequential(nn.Linear(8, 16), nn.GELU("tanh"), nn.Linear(16, 8))]
    dropout = [nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.1), nn.Linear(16, 8)) for _ in range(3)]
    hooked = _mlp_experts(2)
    hooked[1][0].register_forward_hook(lambda _m, _i, _o: None)
    frozen = _mlp_experts(2)
    frozen[0][0].requires_grad_(False)
    mixed_dtypes = [e.double() if i else e for i, e in enumerate(_mlp_experts(2))]
    unchained = [nn.Sequential(nn.Linear(8, 16), nn.Linear(8, 4)) for _ in range(2)]
    for experts in (mixed, tanh_gelu, dropout, hooked, frozen, mixed_dtypes, unchained, [_OwnLinear(8, 4)] * 2,
                    [nn.Sequential()] * 2, []):
        assert not stackable(experts)
        with pytest.raises(ValueError, match="not copies of one"):
            StackedExperts.from_modules(experts)


def test_stacked_experts_keep_the_experts_parameters_and_the_rng() -> None:
    experts = _mlp_experts(3)
    torch.manual_seed(5)
    stacked = StackedExperts.from_modules(experts)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))  # stacking draws nothing from the global RNG
    assert [k for k, _ in stacked.named_parameters()] == [
        "layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"]
    assert stacked.layers[0].weight.shape == (3, 16, 8) and stacked.layers[2].bias.shape == (3, 8)
    for e, (expert, back) in enumerate(zip(experts, stacked.to_modules(), strict=True)):
        torch.testing.assert_close(stacked.layers[0].weight[e], expert[0].weight, rtol=0, atol=0)
        for p, q in zip(expert.parameters(), back.parameters(), strict=True):
            assert torch.equal(p, q) and p is not q
    assert isinstance(StackedExperts.from_modules([nn.Linear(4, 2)] * 2).to_modules()[0], nn.Linear)
    assert len(stacked) == 3 and "experts=3" in repr(stacked) and "in_features=8" in repr(stacked)


def test_stacked_linear_initialises_each_expert_as_linear() -> None:
    from dsl.blocks.nn.moe_experts import StackedLinear

    layer = StackedLinear(4, 25, 30)
    assert layer.weight.abs().max() <= 0.2 and layer.bias.abs().max() <= 0.2  # ±1/sqrt(25)
    assert layer.weight.abs().max() > 0.15 and not torch.equal(layer.weight[0], layer.weight[1])
    assert StackedLinear(2, 3, 5, bias=False).bias is None
    with pytest.raises(ValueError, match="stacks 4 experts, not 3"):
        StackedExperts(3, [layer])
    with pytest.raises(ValueError, match="cannot stack a Dropout"):
        StackedExperts(4, [layer, nn.Dropout()])


def test_a_state_dict_with_one_key_per_expert_loads_into_stacked_experts() -> None:
    separate = MixtureOfExperts(NoisyTopKGate(8, 3, k=2), _mlp_experts(3), 8)
    linear = MixtureOfExperts(NoisyTopKGate(8, 3, k=2), [nn.Linear(8, 8) for _ in range(3)], 8)
    for old in (separate, linear):
        _randomise_gate(old.gate)
        new = MixtureOfExperts(NoisyTopKGate(8, 3, k=2), _stacked(list(old.experts)), 8)
        with torch.no_grad():
            for p in new.parameters():
                p.zero_()
        assert any(key.startswith("experts.0.") for key in old.state_dict())
        new.load_state_dict(old.state_dict())
        old.eval(), new.eval()
        x = torch.randn(10, 8)
        torch.testing.assert_close(new(x)[0], old(x)[0])


@pytest.mark.parametrize("where", ["stack", "layer", "global"])
def test_hooks_on_stacked_experts_run(where: str) -> None:
    """A hook on the stacked experts runs (they are called as a module); one on a layer,
    or a global one, sends them layer by layer through the layers' own calls."""
    stacked = _stacked(_mlp_experts(3))
    fired: list[str] = []
    xs = torch.randn(6, 8, requires_grad=True)
    handles = []
    if where == "stack":
        handles.append(stacked.register_full_backward_pre_hook(lambda _m, _g: fired.append("backward")))
    elif where == "layer":
        handles.append(stacked.layers[0].register_full_backward_pre_hook(lambda _m, _g: fired.append("backward")))
        handles.append(stacked.layers[1].register_forward_hook(lambda _m, _i, _o: fired.append("forward")))
    else:
        handles.append(nn.modules.module.register_module_forward_hook(
            lambda m, _i, _o: fired.append(type(m).__name__)))
    try:
        ys = run_experts(xs, stacked, [2, 2, 2])
        ys.sum().backward()
    finally:
        for h in handles:
            h.remove()
    ref = stacked.to_modules()
    torch.testing.assert_close(ys, torch.cat([e(p) for e, p in zip(ref, xs.split(2), strict=True)]))
    expected = {"stack": ["backward"], "layer": ["forward", "backward"],
                "global": ["StackedLinear", "GELU", "StackedLinear", "StackedExperts"]}[where]
    assert fired == expected


def test_grouped_path_takes_a_broadcast_gradient() -> None:
    """The gradient of ``ys.sum()`` has strides 0, which torch._grouped_mm's backward refuses."""
    experts = _mlp_experts(3)
    stacked = _stacked(experts)
    xs = torch.randn(6, 8, requires_grad=True)
    run_experts(xs, stacked, [1, 2, 3]).sum().backward()
    run_experts(xs.detach(), experts, [1, 2, 3]).sum().backward()
    for p, expected in zip(stacked.parameters(), _expert_grads(experts), strict=True):
        torch.testing.assert_close(p.grad, expected)


def test_separate_expert_modules_are_each_called() -> None:
    """A list of expert modules: each is called on its rows, and its hooks run."""
    experts = _mlp_experts(3)
    fired: list[int] = []
    experts[1][0].register_full_backward_pre_hook(lambda _m, _g: fired.append(1))
    experts[2].register_forward_hook(lambda _m, inp, _o: fired.append(inp[0].shape[0]))
    xs = torch.randn(6, 8, requires_grad=True)
    run_experts(xs, experts, [1, 2, 3]).sum().backward()
    assert sorted(fired) == [1, 3]


def test_grouped_path_for_small_experts_with_few_rows_each() -> None:
    """Mean rows per expert times an expert's bytes: D=64 experts (65 KiB) up to ~1,200
    rows, D=128 (258 KiB) up to ~300, D=256 (1 MiB) up to ~80 (measured crossovers)."""
    from dsl.blocks.nn.moe_experts import _groupable

    def groupable(d: int, rows: int, dtype: torch.dtype = torch.float32) -> bool:
        layers = list(_stacked(_mlp_experts(2, d, 2 * d)).to(dtype).layers)
        return _groupable(layers, torch.empty(2 * rows, d, dtype=dtype), 2)

    assert groupable(64, 1024) and not groupable(64, 2048)
    assert groupable(128, 256) and not groupable(128, 512)
    assert groupable(256, 64) and not groupable(256, 128)
    assert not groupable(64, 8, torch.float64)  # the kernel's dtypes only
    assert not groupable(6, 8)  # rows of 16-byte multiples only


# --------------------------------------------------------------------------- expert by expert


_STACKS = {
    "gelu": lambda: nn.Sequential(nn.Linear(6, 12), nn.GELU(), nn.Linear(12, 5)),
    "gelu_tanh": lambda: nn.Sequential(nn.Linear(6, 12), nn.GELU("tanh"), nn.Linear(12, 5)),
    "relu_inplace": lambda: nn.Sequential(nn.Linear(6, 12), nn.ReLU(inplace=True), nn.Linear(12, 5)),
    "silu": lambda: nn.Sequential(nn.Linear(6, 12), nn.SiLU(), nn.Linear(12, 5)),
    "tanh_last": lambda: nn.Sequential(nn.Linear(6, 12), nn.Tanh()),
    "sigmoid": lambda: nn.Sequential(nn.Linear(6, 12), nn.Sigmoid(), nn.Linear(12, 5)),
    "elu": lambda: nn.Sequential(nn.Linear(6, 12), nn.ELU(0.5, inplace=True), nn.Linear(12, 5)),
    "leaky": lambda: nn.Sequential(nn.Linear(6, 12), nn.LeakyReLU(0.2), nn.Linear(12, 5)),
    "no_bias_three": lambda: nn.Sequential(nn.Linear(6, 12, bias=False), nn.GELU(), nn.Identity(),
                                           nn.Linear(12, 7), nn.ReLU(), nn.Linear(7, 5, bias=False)),
    "activation_first": lambda: nn.Sequential(nn.Tanh(), nn.Linear(6, 5)),
    "one_linear": lambda: nn.Linear(6, 5),
}


@pytest.mark.parametrize("path", ["_run_stacked", "layer by layer"])
@pytest.mark.parametrize("name", sorted(_STACKS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stacked_experts_equal_per_expert_calls(monkeypatch: pytest.MonkeyPatch, path: str, name: str,
                                                dtype: torch.dtype) -> None:
    import dsl.blocks.nn.moe_experts as mod

    taken = _count_calls(monkeypatch, "_run_stacked", "_run_grouped")
    monkeypatch.setattr(mod, "GROUPED_MAX_ROW_BYTES", 0)
    experts = [make().to(dtype) for make in [_STACKS[name]] * 4]
    stacked = _stacked(experts)
    if path == "layer by layer":
        stacked.layers[0].register_forward_pre_hook(lambda _m, _i: None)
    kept = [3, 0, 5, 2]  # expert 1 gets no rows
    xs = torch.randn(sum(kept), 6, dtype=dtype, requires_grad=True)
    ys = run_experts(xs, stacked, kept)
    assert taken == ([path] if path == "_run_stacked" else [])
    ys_ref = torch.cat([e(p) for e, p, n in zip(experts, xs.split(kept), kept, strict=True) if n])
    torch.testing.assert_close(ys, ys_ref)
    g = torch.randn_like(ys)
    ys.backward(g)
    grad_xs, xs.grad = xs.grad, None
    ys_ref.backward(g)
    torch.testing.assert_close(grad_xs, xs.grad)
    for p, expected in zip(stacked.parameters(), _expert_grads(experts), strict=True):
        torch.testing.assert_close(p.grad, expected)  # zeros for expert 1


def test_stacked_experts_gradcheck() -> None:
    from dsl.blocks.nn.moe_experts import _ExpertStack, stack_layout

    stacked = _stacked([nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2)).double() for _ in range(3)])
    layout, params = stack_layout(list(stacked.layers))
    for kept in ((2, 1, 3), (2, 0, 4)):
        xs = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
        flat = [p.detach().clone().requires_grad_() for p in params]
        assert torch.autograd.gradcheck(lambda xs, *ps, k=kept: _ExpertStack.apply(xs, layout, k, *ps), (xs, *flat))


def test_stacked_experts_frozen_layers_and_retain_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    import dsl.blocks.nn.moe_experts as mod

    monkeypatch.setattr(mod, "GROUPED_MAX_ROW_BYTES", 0)
    stacked = _stacked([_STACKS["gelu"]() for _ in range(3)])
    stacked.layers[0].requires_grad_(False)  # frozen first layer, and xs needs no gradient
    kept = [4, 2, 3]
    ys = run_experts(torch.randn(9, 6), stacked, kept)
    ys.sum().backward(retain_graph=True)
    first = stacked.layers[2].weight.grad.clone()
    assert stacked.layers[0].weight.grad is None
    ys.sum().backward()  # the saved tensors outlive a retained backward
    torch.testing.assert_close(stacked.layers[2].weight.grad, 2 * first)


def test_run_experts_picks_its_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import dsl.blocks.nn.moe_experts as mod

    taken = _count_calls(monkeypatch, "_run_stacked", "_run_grouped")
    stacked = _stacked(_mlp_experts(4))  # 8 -> 16 -> 8 (1,120 bytes), 16-byte rows: groupable
    monkeypatch.setattr(mod, "GROUPED_MAX_ROW_BYTES", 16 * 1120)  # grouped up to 16 rows per expert
    few = torch.randn(4 * 16, 8)
    run_experts(few, stacked, [16] * 4)
    many = torch.randn(4 * 17, 8)
    run_experts(many, stacked, [17] * 4)
    assert taken == ["_run_grouped", "_run_stacked"]
    taken.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # layer by layer: F.linear autocasts
        assert run_experts(few, stacked, [16] * 4).dtype == torch.bfloat16
    with pytest.raises(RuntimeError):  # another dtype: layer by layer, and nn.Linear's error
        run_experts(few.double(), stacked, [16] * 4)
    with pytest.raises(RuntimeError):  # another width: the same
        run_experts(torch.randn(8, 6), stacked, [2] * 4)
    assert run_experts(few[:0], stacked, [0] * 4).shape == (0, 8)  # no rows
    assert taken == []
    for kept in ([16] * 3, [16, 16, 16, 15], [16, 16, 16, 17]):  # counts that do not fit the rows
        with pytest.raises(ValueError, match="4 experts got row counts"):
            run_experts(few, stacked, kept)


@pytest.mark.parametrize("grouped", [True, False])
def test_moe_with_stacked_experts_equals_module_loop(monkeypatch: pytest.MonkeyPatch, grouped: bool) -> None:
    import dsl.blocks.nn.moe_experts as mod

    if not grouped:
        monkeypatch.setattr(mod, "GROUPED_MAX_ROW_BYTES", 0)  # every call goes expert by expert
    experts = _mlp_experts(4)
    moe = MixtureOfExperts(NoisyTopKGate(8, 4, k=2), _stacked(experts), 8)
    _randomise_gate(moe.gate)
    ref = copy.deepcopy(moe)
    ref.experts = nn.ModuleList(experts)  # same weights, called one by one
    x = torch.randn(40, 8, requires_grad=True)
    torch.manual_seed(1)
    y, balance = moe(x)
    torch.manual_seed(1)
    y_ref, balance_ref = ref(x)
    torch.testing.assert_close(y, y_ref)
    (y.pow(2).sum() + balance).backward()
    grad_x, x.grad = x.grad, None
    (y_ref.pow(2).sum() + balance_ref).backward()
    torch.testing.assert_close(grad_x, x.grad)
    for p, p_ref in zip(moe.gate.parameters(), ref.gate.parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad)
    for p, expected in zip(moe.experts.parameters(), _expert_grads(experts), strict=True):
        torch.testing.assert_close(p.grad, expected)
