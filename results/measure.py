"""In-process measurements: evaluating a split, expert usage, models without weights.

These import torch and the trainer's pieces; ``results.run`` calls them after
(or instead of) a ``dsl train`` subprocess.
"""

from __future__ import annotations

from typing import Any

import torch


def _overrides(sets: list[str]) -> dict[str, Any]:
    from dsl.cli.main import parse_overrides

    return parse_overrides(sets)


def evaluate(model: torch.nn.Module, step: torch.nn.Module, prepared: Any, data: Any, split: str) -> dict[str, float]:
    """Every metric of the spec on ``split``, aggregated exactly over its batches (the trainer's evaluation)."""
    from dsl.training.trainer import Trainer

    trainer = Trainer(model, step, prepared.cfg, prepared.analysis.objective.metrics, data, verbose=False)
    return {k: v for k, v in trainer.evaluate(split).items() if k != "loss"}


def load_run(spec: str, sets: list[str], ckpt: str) -> tuple[Any, torch.nn.Module, torch.nn.Module, Any]:
    """The prepared spec, the trained model of run directory ``ckpt`` and its training step, and its data."""
    from dsl.training.session import load_data, load_trained

    prepared, model, step, _ = load_trained(ckpt, spec, _overrides(sets))
    return prepared, model, step, load_data(prepared.cfg)


def eval_without_training(spec: str, sets: list[str], split: str = "test", seed: int | None = None) -> dict[str, float]:
    """Metrics of a model as built (it has no weights to learn, e.g. nearest-centroid)."""
    from dsl.building.model import build_for_training
    from dsl.training.session import load_data, prepare, seed_everything

    prepared = prepare(spec, _overrides(sets), train_overrides={"seed": seed})
    seed_everything(prepared.cfg.seed)
    model, step = build_for_training(prepared.analysis)
    return evaluate(model, step, prepared, load_data(prepared.cfg), split)


def expert_usage(model: torch.nn.Module, data: Any, split: str = "test") -> dict[str, float]:
    """How evenly the gate of each MoE layer spreads the tokens of ``split`` over its experts.

    The gate routes in eval mode (clean logits, no noise) exactly as the layer
    does; we count (token, expert) assignments. ``cv`` is the coefficient of
    variation of the per-expert counts (0 = perfectly even), ``max_share`` the
    busiest expert's share of all assignments, ``idle`` the experts that get
    none. With several MoE layers the numbers are averaged.
    """
    from dsl.blocks.nn.moe import MixtureOfExperts
    from dsl.training.trainer import input_names

    layers = [m for m in model.modules() if isinstance(m, MixtureOfExperts)]
    counts = {id(m): torch.zeros(m.gate.experts, dtype=torch.float64) for m in layers}

    def hook(module: MixtureOfExperts, args: tuple) -> None:
        flat = args[0].reshape(-1, args[0].shape[-1])
        idx, _, _ = module.gate.route(flat)
        counts[id(module)] += torch.bincount(idx.reshape(-1), minlength=module.gate.experts).double()

    handles = [m.register_forward_pre_hook(hook) for m in layers]
    inputs = input_names(model)
    model.eval()
    try:
        with torch.no_grad():
            for batch in data.batches(split, 0):
                model(**{k: batch[k] for k in inputs})
    finally:
        for h in handles:
            h.remove()
    stats = [_spread(c) for c in counts.values()]
    return {k: sum(s[k] for s in stats) / len(stats) for k in stats[0]} if stats else {}


def _spread(c: torch.Tensor) -> dict[str, float]:
    share = c / c.sum()
    return {
        "cv": float(c.std(unbiased=False) / c.mean()),
        "max_share": float(share.max()),
        "idle": float((c == 0).sum()),
    }
