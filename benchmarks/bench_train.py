"""Training loop: steps per second of the dsl Trainer against a hand-written loop.

One training epoch of ``specs/classifier.dsl`` (digits), ``specs/moe_digits.dsl``
and ``specs/gat_karate.dsl`` (one full graph a step) through ``Trainer.train_epoch``
— the loop ``dsl train`` runs — against a plain PyTorch loop over the same
compiled model, the same batches, the same optimizer and learning-rate schedule.
Target ≤ 1.05×. A third contender only iterates the batches: its time over the
Trainer's is the data-loading share (target ≤ 5%).

The comparison is kept fair and the work identical:

* both contenders train their own copy of one compiled model, runtime input
  guards included, under the determinism setting ``dsl train`` uses on the CPU
  (``torch.use_deterministic_algorithms(True, warn_only=True)``);
* both add the model's weighted auxiliary losses (the MoE balance loss) and
  read the loss back every step, as the Trainer does (until this was checked,
  the hand-written copy had lost its ``dsl_aux_weights`` in ``deepcopy`` and
  trained moe_digits without the balance loss: less work, a 1.3–1.5× "gap");
* every epoch of either contender starts from the same RNG seed. A noisy MoE
  gate draws random noise each step, so without this the two copies routed
  differently, drifted apart, and their step times differed with the routing
  rather than with the loop (1.3–1.5× either way from run to run). Seeded
  alike, the two compute the same trajectory, which the benchmark checks:
  the weights of both copies must stay bit-identical.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import Any

from benchmarks.harness import Context, Row, Stats, interleave

NAME = "train"
TITLE = "Training loop: dsl Trainer vs a hand-written loop"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cross_entropy(out: Any, batch: Any) -> Any:
    import torch.nn.functional as F

    return F.cross_entropy(out["logits"], batch["y"])


def _masked_cross_entropy(out: Any, batch: Any) -> Any:
    import torch.nn.functional as F

    mask = batch["train_mask"]
    return F.cross_entropy(out["logits"][mask], batch["y"][mask])


# each spec's loss, written by hand for the hand-written loop
LOSSES: dict[str, Callable[[Any, Any], Any]] = {
    "classifier": _cross_entropy, "moe_digits": _cross_entropy, "gat_karate": _masked_cross_entropy,
}


def setup(spec_name: str) -> tuple[Any, Any, Any, Any, str]:
    """(trainer, hand-written model copy, data, cfg, loss expression) for one spec."""
    from dsl.building.model import build_for_training
    from dsl.training.session import load_data, prepare
    from dsl.training.trainer import Trainer

    p = prepare(os.path.join(ROOT, "specs", f"{spec_name}.dsl"))
    model, step = build_for_training(p.analysis)
    data = load_data(p.cfg)
    trainer = Trainer(model, step, p.cfg, p.analysis.objective.metrics, data, quiet=True, verbose=False)
    twin = copy.deepcopy(model)
    # A deep-copied GraphModule keeps its graph, weights and guard but not the
    # compiler's `dsl_*` attributes; the hand-written loop reads the aux weights
    # from them, so without these it silently left out the MoE balance loss.
    for attr in ("dsl_inputs", "dsl_outputs", "dsl_aux_weights"):
        if hasattr(model, attr) and not hasattr(twin, attr):
            setattr(twin, attr, copy.deepcopy(getattr(model, attr)))
    return trainer, twin, data, p.cfg, spec_name


def hand_loop(model: Any, data: Any, cfg: Any, loss_fn: Callable[[Any, Any], Any] = _cross_entropy) -> Callable[[], int]:
    """A plain loop: forward, the loss (+ weighted aux losses), backward, step, schedule step.

    Each call is one epoch that starts from ``cfg.seed`` (see the module docstring)."""
    import torch

    from dsl.training.trainer import input_names, make_optimizer, make_schedule

    opt = make_optimizer(cfg, model.parameters())
    sched = make_schedule(cfg, opt, data.num_batches("train", 1))
    names = input_names(model)
    aux = dict(model.dsl_aux_weights or {}) if hasattr(model, "dsl_aux_weights") else {}
    model.train()

    def epoch() -> int:
        torch.manual_seed(cfg.seed)
        steps = 0
        for batch in data.batches("train", 0, 0, 1):
            out = model(**{k: batch[k] for k in names})
            loss = loss_fn(out, batch)
            for key, w in aux.items():
                loss = loss + w * out[key]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.after_step()
            loss.item()  # the Trainer reads the loss every step too
            steps += 1
        return steps

    return epoch


def same_weights(a: Any, b: Any) -> bool:
    """Whether two models hold bit-identical weights."""
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def run(ctx: Context) -> list[Row]:
    torch = ctx.init_torch()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)  # as `dsl train` on the CPU
    try:
        return _run(ctx, torch)
    finally:
        torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)


def _run(ctx: Context, torch: Any) -> list[Row]:
    from dsl.training.trainer import Reporter

    rows: list[Row] = []
    for spec_name in ctx.pick(["classifier", "gat_karate"], ["classifier", "moe_digits", "gat_karate"]):
        trainer, model, data, cfg, _ = setup(spec_name)
        steps = data.num_batches("train", 1)
        report = Reporter(False, True, 1, steps)

        def dsl_epoch(t: Any = trainer, r: Any = report, seed: int = cfg.seed) -> object:
            torch.manual_seed(seed)
            return t.train_epoch(0, r)

        def data_only(d: Any = data) -> object:
            return sum(1 for _ in d.batches("train", 0, 0, 1))

        stats = interleave(
            {"hand-written loop": hand_loop(model, data, cfg, LOSSES[spec_name]), "dsl Trainer": dsl_epoch,
             "data loading only": data_only},
            # One sample is one short epoch (17 steps), easily hit by a neighbour's burst on a
            # shared machine: three times the usual samples steady the medians.
            # A one-step epoch (a full graph) is timed 20 epochs to a sample.
            repeats=3 * ctx.repeats, warmup=ctx.warmup, sync=ctx.sync, number=1 if steps > 1 else 20,
        )
        case = f"{spec_name}.dsl, one epoch = {steps} steps"
        identical = same_weights(trainer.model, model)

        def per_step(s: Stats, steps: int = steps) -> Stats:
            return Stats(tuple(v / steps for v in s.samples), s.number)

        share = stats["data loading only"].median / stats["dsl Trainer"].median
        rows += [
            Row(case, "hand-written loop", per_step(stats["hand-written loop"]), per_unit="step"),
            Row(case, "dsl Trainer", per_step(stats["dsl Trainer"]), per_unit="step",
                baselines=["hand-written loop"], target=1.05),
            Row(case, "data loading only", per_step(stats["data loading only"]), per_unit="step",
                note=f"{share:.1%} of the Trainer's step (target ≤ 5%: {'met' if share <= 0.05 else 'MISSED'})"),
        ]
        ctx.notes.append(
            f"{spec_name}: dsl Trainer {1 / (stats['dsl Trainer'].median / steps):.0f} steps/s, "
            f"hand-written {1 / (stats['hand-written loop'].median / steps):.0f} steps/s; "
            f"data loading is {share:.1%} of a Trainer step; after "
            f"{ctx.warmup + 3 * ctx.repeats} epochs each, the two copies' weights are "
            f"{'bit-identical' if identical else 'DIFFERENT (the loops did not do the same work)'}."
        )
    return rows
