"""Training loop: steps per second of the dsl Trainer against a hand-written loop.

One training epoch of ``specs/classifier.dsl`` (digits, batch 64) and
``specs/moe_digits.dsl`` through ``Trainer.train_epoch`` — the loop ``dsl train``
runs — against a plain PyTorch loop over the same compiled model, the same
batches and the same optimizer. Target ≤ 1.05×. A third contender only
iterates the batches: its time over the Trainer's is the data-loading share.
"""

from __future__ import annotations

import argparse
import copy
import os
from collections.abc import Callable
from typing import Any

from benchmarks.harness import Context, Row, Stats, interleave

NAME = "train"
TITLE = "Training loop: dsl Trainer vs a hand-written loop"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def setup(spec_name: str) -> tuple[Any, Any, Any, Any, str]:
    """(trainer, hand-written model copy, data, cfg, loss expression) for one spec."""
    import dsl
    from dsl.train.commands import _load_data, prepare
    from dsl.train.exprs import param_values
    from dsl.train.trainer import Trainer

    args = argparse.Namespace(file=os.path.join(ROOT, "specs", f"{spec_name}.dsl"), set=[], dim=[])
    p = prepare(args)
    model = dsl.compile(p.spec, p.dims, return_dict=True, with_aux=True, **p.overrides)
    data = _load_data(p.cfg)
    trainer = Trainer(model, p.cfg, data, param_values(p.spec, p.overrides), quiet=True,
                      verbose=False)
    return trainer, copy.deepcopy(model), data, p.cfg, spec_name


def hand_loop(model: Any, data: Any, cfg: Any) -> Callable[[], int]:
    """A plain loop: forward, cross-entropy (+ weighted aux losses), backward, step."""
    import torch
    import torch.nn.functional as F

    from dsl.train.trainer import input_names, make_optimizer

    opt = make_optimizer(cfg, model.parameters())
    names = input_names(model, data.example())
    aux = dict(getattr(model, "dsl_aux_weights", {}) or {})
    model.train()

    def epoch() -> int:
        steps = 0
        for batch in data.batches("train", 0, 0, 1):
            out = model(**{k: batch[k] for k in names})
            loss = F.cross_entropy(out["logits"], batch["y"])
            for key, w in aux.items():
                loss = loss + w * out[key]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            float(loss.detach())  # the Trainer reads the loss every step too
            steps += 1
        return steps

    del torch
    return epoch


def run(ctx: Context) -> list[Row]:
    ctx.init_torch()
    from dsl.train.trainer import Reporter

    rows: list[Row] = []
    for spec_name in ctx.pick(["classifier"], ["classifier", "moe_digits"]):
        trainer, model, data, cfg, _ = setup(spec_name)
        steps = data.num_batches("train", 1)
        report = Reporter(False, True, 1, steps)

        def dsl_epoch(t: Any = trainer, r: Any = report) -> object:
            return t.train_epoch(0, r)

        def data_only(d: Any = data) -> object:
            return sum(1 for _ in d.batches("train", 0, 0, 1))

        stats = interleave(
            {"hand-written loop": hand_loop(model, data, cfg), "dsl Trainer": dsl_epoch,
             "data loading only": data_only},
            repeats=ctx.repeats, warmup=ctx.warmup, sync=ctx.sync, number=1,
        )
        case = f"{spec_name}.dsl, one epoch = {steps} steps"

        def per_step(s: Stats, steps: int = steps) -> Stats:
            return Stats(tuple(v / steps for v in s.samples), s.number)

        share = stats["data loading only"].median / stats["dsl Trainer"].median
        rows += [
            Row(case, "hand-written loop", per_step(stats["hand-written loop"]), per_unit="step"),
            Row(case, "dsl Trainer", per_step(stats["dsl Trainer"]), per_unit="step",
                baselines=["hand-written loop"], target=1.05),
            Row(case, "data loading only", per_step(stats["data loading only"]), per_unit="step",
                note=f"{share:.1%} of the Trainer's step"),
        ]
        ctx.notes.append(
            f"{spec_name}: dsl Trainer {1 / (stats['dsl Trainer'].median / steps):.0f} steps/s, "
            f"hand-written {1 / (stats['hand-written loop'].median / steps):.0f} steps/s; "
            f"data loading is {share:.1%} of a Trainer step."
        )
    return rows
