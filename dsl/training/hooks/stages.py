"""ProtoPNet's training stages as a hook: ``stages = [warm(...), joint(...), last_layer(...)]``.

What each stage trains, with which learning rates, and how the parts of the
model are found is in :mod:`dsl.checking.train.stages`. Entering a stage sets
``requires_grad`` on each part (the parts a stage does not train get no
gradient at all), gives the trainer that stage's Adam over its parameter groups
(and, for the joint stage, its step schedule), and in the last-layer stage adds
the L1 norm of the wrong-class connections to the loss. The pushes of the joint
stage are the push hook's (:mod:`dsl.training.hooks.push`).

A resumed run enters the stage of the last finished epoch before the saved
optimizer state is loaded, so the state matches the optimizer it came from;
the next epoch then moves on to its own stage as an uninterrupted run would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dsl.checking.train.stages import Joint, LastLayer, Stage, Warm
from dsl.training.hooks import Hook

if TYPE_CHECKING:
    from torch import nn


class StagesHook(Hook):
    name = "stages"

    def __init__(self, trainer: Any, stages: list[Stage]):
        self.trainer = trainer
        self.stages = stages
        parts = trainer.cfg.stage_parts
        model = trainer.model
        self.heads: list[nn.Module] = [model.get_submodule(k) for k in parts.heads]
        self.add_on: list[nn.Module] = [model.get_submodule(k) for k in parts.add_on]
        self.current: Stage | None = None
        self.enter(self.stage_of(1))

    def stage_of(self, epoch: int) -> Stage:
        """The stage the run's (1-based) ``epoch`` belongs to."""
        return next((s for s in self.stages if epoch <= s.last_epoch), self.stages[-1])

    def _groups(self) -> dict[str, list[Any]]:
        """The parameters of each part: backbone, add_on, prototypes, last_layer."""
        prototypes = [h.prototypes for h in self.heads]
        last = [p for h in self.heads for p in h.last_layer.parameters()]
        add_on = [p for m in self.add_on for p in m.parameters()]
        taken = {id(p) for p in prototypes + last + add_on}
        backbone = [p for p in self.trainer.model.parameters() if id(p) not in taken]
        return {"backbone": backbone, "add_on": add_on, "prototypes": prototypes, "last_layer": last}

    def enter(self, stage: Stage) -> None:
        import torch

        from dsl.blocks.nn.prototype import last_layer_l1
        from dsl.training.schedules import EpochSchedule

        p = stage.params
        parts = self._groups()
        if isinstance(p, Warm):
            rates = {"add_on": (p.add_on_lr, 0.0), "prototypes": (p.prototype_lr, 0.0)}
        elif isinstance(p, Joint):
            rates = {"backbone": (p.backbone_lr, p.weight_decay), "add_on": (p.add_on_lr, p.weight_decay),
                     "prototypes": (p.prototype_lr, 0.0)}
        else:
            assert isinstance(p, LastLayer)
            rates = {"last_layer": (p.lr, 0.0)}
        for part, params in parts.items():
            for w in params:
                w.requires_grad_(part in rates)
        groups = [{"params": parts[part], "lr": lr, "weight_decay": wd, "name": part}
                  for part, (lr, wd) in rates.items() if parts[part]]
        trainer = self.trainer
        trainer.opt = torch.optim.Adam(groups)
        trainer.sched = (EpochSchedule(torch.optim.lr_scheduler.StepLR(trainer.opt, step_size=p.lr_step, gamma=0.1))
                         if isinstance(p, Joint) and p.lr_step else None)
        trainer.extra_losses = ([lambda: p.l1 * torch.stack([last_layer_l1(h) for h in self.heads]).sum()]
                                if isinstance(p, LastLayer) and p.l1 > 0 else [])
        self.current = stage

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        stage = self.stage_of(epoch + 1)
        if stage is not self.current:
            self.enter(stage)

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        if self.current is not None:
            record["stage"] = self.current.name

    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stages.index(self.current) if self.current is not None else 0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.enter(self.stage_of(max(self.trainer.epoch, 1)))


def make(trainer: Any) -> StagesHook | None:
    stages = getattr(trainer.cfg, "stages", None)
    if not stages or trainer.cfg.stage_parts is None:
        return None
    return StagesHook(trainer, stages)
