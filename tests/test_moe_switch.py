"""Switch routing as Fedus et al. 2021 and mesh-tensorflow do it (``router="switch"``):
random router weights, multiplicative input jitter, capacity by position with
separate training and evaluation factors and a minimum, the router z-loss, and
dropped tokens that contribute zero."""

from __future__ import annotations

import math

import pytest
import torch

import dsl


def moe(**kw: object) -> torch.nn.Module:
    args = ", ".join(f"{k}={v}" for k, v in kw.items())
    text = f"model M {{\n    input x: [T, 16]\n    y, balance = MoE(x, experts=8, {args})\n    output y\n}}\n"
    return dsl.compile(dsl.loads(text), with_aux=True).y


def mesh_tensorflow_kept(expert_index: torch.Tensor, experts: int, capacity: int) -> torch.Tensor:
    """The tokens mesh-tensorflow's ``_switch_gating`` (mesh_tensorflow/transformer/moe.py) keeps:
    ``position_in_expert = cumsum(expert_mask, exclusive=True) * expert_mask``, kept where
    ``position_in_expert < expert_capacity`` — the first tokens of each expert by position."""
    mask = torch.nn.functional.one_hot(expert_index, experts).float()  # [T, E]
    position = (torch.cumsum(mask, 0) - mask) * mask
    return ((position < capacity).float() * mask).sum(-1).bool()


def test_fresh_switch_router_spreads_tokens() -> None:
    """With zero weights and no noise every token tied and went to expert 0 (512 of 512)."""
    torch.manual_seed(0)
    m = moe(k=1, router='"switch"').eval()
    idx, _, _ = m.gate.route(torch.randn(512, 16))
    counts = torch.bincount(idx.flatten(), minlength=8)
    assert int(counts.max()) < 512 and int((counts > 0).sum()) >= 4
    std = float(m.gate.w_gate.std())
    assert 0.5 * math.sqrt(0.1 / 16) < std < 1.5 * math.sqrt(0.1 / 16)


@pytest.mark.parametrize("tokens,factor", [(64, 1.0), (64, 1.25), (80, 2.0), (32, 0.5)])
def test_capacity_keeps_the_tokens_mesh_tensorflow_keeps(tokens: int, factor: float) -> None:
    torch.manual_seed(1)
    m = moe(k=1, router='"switch"', capacity=factor, min_capacity=0).train()
    m.gate.noisy = False
    x = torch.randn(tokens, 16) * 3
    idx, _, _ = m.gate.route(x)
    capacity = tokens * factor / 8
    assert capacity == int(capacity)  # where mesh-tensorflow's floor and our ceil agree
    want = mesh_tensorflow_kept(idx.flatten(), 8, int(capacity))
    with torch.no_grad():
        y, _ = m(x)
    kept = y.abs().sum(-1) > 0
    assert torch.equal(kept, want)
    assert float(m.dropped_fraction) == pytest.approx(1 - float(want.float().mean()))


def test_training_and_evaluation_capacities_and_the_minimum() -> None:
    torch.manual_seed(2)
    m = moe(k=1, router='"switch"', capacity=0.5)  # eval_capacity 2.0, min_capacity 4 by default
    m.gate.noisy = False
    with torch.no_grad():
        m.gate.w_gate.zero_()
        m.gate.w_gate[:, 0] = 1.0  # all tokens prefer expert 0 (x > 0 below)
    x = torch.rand(16, 16) + 0.1
    with torch.no_grad():
        m.train()
        y_train, _ = m(x)
        m.eval()
        y_eval, _ = m(x)
    # training: max(4, ceil(0.5 * 16 / 8)) = 4 kept; evaluation: max(4, ceil(2.0 * 16 / 8)) = 4 as well
    assert int((y_train.abs().sum(-1) > 0).sum()) == 4
    assert int((y_eval.abs().sum(-1) > 0).sum()) == 4
    x = torch.rand(64, 16) + 0.1
    with torch.no_grad():
        m.train()
        y_train, _ = m(x)
        m.eval()
        y_eval, _ = m(x)
    assert int((y_train.abs().sum(-1) > 0).sum()) == 4  # ceil(0.5 * 64 / 8) = 4
    assert int((y_eval.abs().sum(-1) > 0).sum()) == 16  # ceil(2.0 * 64 / 8) = 16
    assert torch.equal((y_eval.abs().sum(-1) > 0).nonzero().flatten(), torch.arange(16))  # the first by position


def test_input_jitter_only_while_training_a_noisy_router() -> None:
    torch.manual_seed(3)
    m = moe(k=1, router='"switch"')
    x = torch.randn(32, 16)
    m.train()
    a, b = m.gate.logits(x)[0], m.gate.logits(x)[0]
    assert not torch.equal(a, b)
    torch.testing.assert_close(a, x @ m.gate.w_gate, atol=0.05, rtol=0.02)  # within the 1% jitter
    assert m.gate.w_noise is None
    m.eval()
    assert torch.equal(m.gate.logits(x)[0], m.gate.logits(x)[0])
    quiet = moe(k=1, router='"switch"', noisy="false").train()
    assert torch.equal(quiet.gate.logits(x)[0], quiet.gate.logits(x)[0])


def test_z_loss_adds_the_squared_log_partition() -> None:
    torch.manual_seed(4)
    plain = moe(k=1, router='"switch"').eval()
    with_z = moe(k=1, router='"switch"', z_loss=0.001).eval()
    with_z.load_state_dict(plain.state_dict())
    x = torch.randn(40, 16)
    with torch.no_grad():
        _, b0 = plain(x)
        _, b1 = with_z(x)
        z = torch.logsumexp(x @ plain.gate.w_gate, -1).square().mean()
    torch.testing.assert_close(b1 - b0, 0.001 * z)


def test_dropped_tokens_are_counted_in_expert_usage() -> None:
    from dsl.blocks.nn.moe import RoutingStats

    torch.manual_seed(5)
    m = moe(k=1, router='"switch"', capacity=0.25, min_capacity=1).train()
    m.gate.usage = RoutingStats(8)
    x = torch.randn(64, 16)
    y, _ = m(x)
    dropped = int((y.abs().sum(-1) == 0).sum())
    assert dropped > 0
    assert m.gate.usage.sums is not None and int(m.gate.usage.sums[-1]) == dropped
