"""The training step's bookkeeping: the loss, and reading the loss terms per window of steps.

``Trainer.sync_every`` > 1 (used on a GPU and under DDP) keeps each step's loss terms
on the device and reads them every few steps; these tests force it on the CPU and
check that the epoch records are the same numbers and a NaN stop names the same step.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers import prepared, trainer_for

from dsl.building.model import build_for_training
from dsl.training.hooks import Hook
from dsl.training.trainer import NonFiniteLoss, Trainer

SPEC = """
param hidden = 8
param lam = 0.25
model C(classes: int = 3) {
    input x: [B, F]
    h = relu(Linear(x, out=hidden))
    logits = Linear(h, out=classes)
    output logits: [B, classes]
}
train {
    data      = iris(batch=16)
    loss      = cross_entropy(logits, y)
    optimizer = adam(lr=0.05)
    epochs    = 2
    seed      = 0
}
"""


MOE = SPEC.replace("h = relu(Linear(x, out=hidden))", "h, balance = MoE(Linear(x, out=hidden), experts=4, k=2, balance=0.5)")


def _trainer(sync_every: int, epochs: int = 2) -> Trainer:
    """iris in batches of 16: 8 steps per epoch, so windows of 3 leave a partial one."""
    trainer = trainer_for(MOE, epochs=epochs)
    trainer.sync_every = sync_every
    return trainer


def _records(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "time"} | {"train": {k: v for k, v in r["train"].items()
            if k != "throughput"}} for r in history]


def test_reading_terms_per_window_gives_the_same_records_and_weights() -> None:
    every_step, windowed = _trainer(1), _trainer(3)
    torch.manual_seed(0)  # the gate's noise draws from the global generator
    a = every_step.fit()
    torch.manual_seed(0)
    b = windowed.fit()
    assert _records(a) == _records(b)
    assert set(a[0]["train"]) == {"loss", "aux:h.balance", "throughput"}
    for p, q in zip(every_step.model.parameters(), windowed.model.parameters(), strict=True):
        assert torch.equal(p, q)


class PoisonAfter(Hook):
    """Sets a weight to NaN after step ``step`` (0-based) of the first epoch."""

    name = "poison"

    def __init__(self, step: int):
        self.step = step

    def after_step(self, trainer: Any, epoch: int, step: int) -> None:
        if epoch == 0 and step == self.step:
            with torch.no_grad():
                next(trainer.model.parameters())[0, 0] = float("nan")


@pytest.mark.parametrize("sync_every", [1, 3, 32])
def test_a_nan_stop_names_the_first_bad_step_in_either_mode(sync_every: int) -> None:
    trainer = _trainer(sync_every)
    trainer.hooks.append(PoisonAfter(4))  # step 5's update poisons the model: step 6's loss is NaN
    with pytest.raises(NonFiniteLoss, match=r"^loss is nan at epoch 1, step 6: training stopped"):
        trainer.fit()
    assert trainer.history == []


def test_the_step_computes_the_loss_as_written() -> None:
    """A loss over values the model binds but does not output (p, q), against the same
    expression written by hand on the model's values."""
    spec = SPEC.replace("logits = Linear(h, out=classes)", "logits = Linear(h, out=classes)\n"
                        "    p = sum(logits, dim=-1)\n    q = mean(h, dim=-1)")
    spec = spec.replace("cross_entropy(logits, y)", "-(0.5 * cross_entropy(logits, y, label_smoothing=0.1)) "
                        "+ lam * mse(p, q) / 2 - l1(p, q)")
    model, step = build_for_training(prepared(spec).analysis)
    torch.manual_seed(0)
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    out = model(x=x)
    p, q = out["p"], out["q"]
    expected = (-(0.5 * F.cross_entropy(out["logits"], y, label_smoothing=0.1)) + 0.25 * F.mse_loss(p, q) / 2
                - F.l1_loss(p, q))
    torch.testing.assert_close(step(x=x, y=y)["loss"], expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("target_dtype", [torch.int64, torch.int32])
def test_losses_convert_only_what_needs_converting(dtype: torch.dtype, target_dtype: torch.dtype) -> None:
    from dsl.blocks.nn.losses import cross_entropy, mse

    torch.manual_seed(0)
    logits, y = torch.randn(5, 3).to(dtype), torch.tensor([0, 2, 1, 1, 0], dtype=target_dtype)
    value = cross_entropy(logits, y)
    assert value.dtype == torch.float32
    assert torch.equal(value, F.cross_entropy(logits.float(), y.long()))
    p, q = torch.randn(4).to(dtype), torch.randn(4)
    assert torch.equal(mse(p, q), F.mse_loss(p.float(), q))
