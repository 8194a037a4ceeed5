"""Learning-rate schedules: torch's schedulers, advanced per optimizer step or per epoch.

``warmup``, ``cosine`` and ``onecycle`` move the learning rate after every
optimizer step (their lengths are given in epochs and turned into steps, with
``accumulate`` batches to a step); ``step`` moves it per epoch and ``plateau``
per epoch on the monitored validation value. The declarations and their
checks are :mod:`dsl.checking.train.config`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from dsl.checking.train.config import PER_EPOCH_SCHEDULES, TrainConfig


def _cosine(p: Any, base_lr: float, steps_per_epoch: int, epochs: int) -> Any:
    warm = round(p.warmup * steps_per_epoch)
    length = max(1, (p.t_max * steps_per_epoch) if p.t_max else epochs * steps_per_epoch - warm)
    floor = p.eta_min / base_lr if base_lr > 0 else 0.0

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        progress = min(1.0, (step - warm) / length)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _warmup(p: Any, steps_per_epoch: int) -> Any:
    length = max(1, round(p.epochs * steps_per_epoch))

    def factor(step: int) -> float:
        return p.start_factor + (1.0 - p.start_factor) * min(1.0, step / length)

    return factor


class Schedule:
    """The run's schedule: ``after_step`` after each optimizer step, ``after_epoch`` after each epoch."""

    def __init__(self, cfg: TrainConfig, opt: torch.optim.Optimizer, steps_per_epoch: int, mode: str = "min"):
        assert cfg.schedule is not None
        self.name, p = cfg.schedule
        self.per_step = self.name not in PER_EPOCH_SCHEDULES
        self.total = max(1, cfg.epochs * steps_per_epoch)
        lr = float(opt.param_groups[0]["lr"])
        sched = torch.optim.lr_scheduler
        if self.name == "cosine":
            self.sched: Any = sched.LambdaLR(opt, _cosine(p, lr, steps_per_epoch, cfg.epochs))
        elif self.name == "warmup":
            self.sched = sched.LambdaLR(opt, _warmup(p, steps_per_epoch))
        elif self.name == "onecycle":
            cycle = "betas" in opt.defaults or bool(opt.defaults.get("momentum"))
            self.sched = sched.OneCycleLR(opt, max_lr=p.max_lr or lr, total_steps=self.total, pct_start=p.pct_start,
                                          anneal_strategy=p.anneal, div_factor=p.div_factor,
                                          final_div_factor=p.final_div_factor, cycle_momentum=cycle)
        elif self.name == "plateau":
            self.sched = sched.ReduceLROnPlateau(opt, mode=mode, factor=p.factor, patience=p.patience,
                                                 threshold=p.threshold, min_lr=p.min_lr)
        else:
            self.sched = sched.StepLR(opt, step_size=p.step_size, gamma=p.gamma)

    def after_step(self) -> None:
        # OneCycleLR refuses a step past its planned total (a run extended by --resume --epochs).
        if self.per_step and (self.name != "onecycle" or self.sched.last_epoch + 1 < self.total):
            self.sched.step()

    def after_epoch(self, monitored: float) -> None:
        if self.name == "plateau":
            if not math.isnan(monitored):
                self.sched.step(monitored)
        elif not self.per_step:
            self.sched.step()

    def state_dict(self) -> dict[str, Any]:
        return self.sched.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sched.load_state_dict(state)


class EpochSchedule:
    """A torch scheduler a hook sets up (the ProtoPNet joint stage's), stepped once an epoch."""

    per_step = False

    def __init__(self, sched: Any):
        self.sched = sched

    def after_step(self) -> None:
        """Nothing: it moves per epoch."""

    def after_epoch(self, monitored: float) -> None:
        self.sched.step()

    def state_dict(self) -> dict[str, Any]:
        return self.sched.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sched.load_state_dict(state)
