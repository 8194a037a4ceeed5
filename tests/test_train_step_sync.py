"""The training step's bookkeeping: the compiled loss, and reading the loss terms per window of steps.

``Trainer.sync_every`` > 1 (used on a GPU and under DDP) keeps each step's loss terms
on the device and reads them every few steps; these tests force it on the CPU and
check that the epoch records are the same numbers and a NaN stop names the same step.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dsl
from dsl.checking.train import train_config
from dsl.data import lookup_source
from dsl.training.evaluate import Evaluator
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


class AuxModel(nn.Module):
    """Logits plus an auxiliary loss, as a compiled MoE model returns them."""

    dsl_inputs = ["x"]
    dsl_aux_weights = {"aux:gate.balance": 0.5}

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.lin(x), "aux:gate.balance": self.lin.weight.pow(2).sum()}


def _trainer(sync_every: int, epochs: int = 2) -> Trainer:
    spec = dsl.loads(SPEC, file="c.dsl")
    cfg = train_config(spec, train_overrides={"epochs": epochs})
    src = lookup_source("iris")
    data = src.load(src.params(batch=16), 0)  # 8 steps per epoch: windows of 3 leave a partial one
    torch.manual_seed(0)
    trainer = Trainer(AuxModel(), cfg, data, {}, verbose=False)
    trainer.sync_every = sync_every
    return trainer


def _records(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "time"} | {"train": {k: v for k, v in r["train"].items()
            if k != "throughput"}} for r in history]


def test_reading_terms_per_window_gives_the_same_records_and_weights() -> None:
    every_step, windowed = _trainer(1), _trainer(3)
    a, b = every_step.fit(), windowed.fit()
    assert _records(a) == _records(b)
    assert set(a[0]["train"]) == {"loss", "aux:gate.balance", "throughput"}
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
                trainer.model.lin.weight[0, 0] = float("nan")


@pytest.mark.parametrize("sync_every", [1, 3, 32])
def test_a_nan_stop_names_the_first_bad_step_in_either_mode(sync_every: int) -> None:
    trainer = _trainer(sync_every)
    trainer.hooks.append(PoisonAfter(4))  # step 5's update poisons the model: step 6's loss is NaN
    with pytest.raises(NonFiniteLoss, match=r"^loss is nan at epoch 1, step 6: training stopped"):
        trainer.fit()
    assert trainer.history == []


def test_compiled_loss_computes_what_the_interpreter_does() -> None:
    spec = dsl.loads(SPEC.replace("cross_entropy(logits, y)",
                                  "-(0.5 * cross_entropy(logits, y, mask=m, label_smoothing=0.1)) "
                                  "+ lam * mse(p, q) / 2 - l1(p, q)"), file="c.dsl")
    ev = Evaluator({"lam": 0.25})
    torch.manual_seed(0)
    names = {"logits": torch.randn(6, 3), "y": torch.tensor([0, 1, 2, 0, 1, 2]),
             "m": torch.tensor([True, False, True, True, True, False]), "p": torch.randn(6), "q": torch.randn(6)}
    loss = spec.train.get("loss").value
    compiled, interpreted = ev.compile_loss(loss)(names), ev.interpret(loss, names)
    assert isinstance(compiled, torch.Tensor) and torch.equal(compiled, interpreted)
    assert torch.equal(ev.loss(loss, names), interpreted)  # loss() compiles once and reuses it
    assert len(ev._compiled) == 1 and torch.equal(ev.loss(loss, names), interpreted)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("target_dtype", [torch.int64, torch.int32])
def test_losses_convert_only_what_needs_converting(dtype: torch.dtype, target_dtype: torch.dtype) -> None:
    from dsl.training.functional import cross_entropy, mse

    torch.manual_seed(0)
    logits, y = torch.randn(5, 3).to(dtype), torch.tensor([0, 2, 1, 1, 0], dtype=target_dtype)
    value, count = cross_entropy(logits, y)
    assert count == 5 and value.dtype == torch.float32
    assert torch.equal(value, F.cross_entropy(logits.float(), y.long()))
    p, q = torch.randn(4).to(dtype), torch.randn(4)
    assert torch.equal(mse(p, q)[0], F.mse_loss(p.float(), q))
