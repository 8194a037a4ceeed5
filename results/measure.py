"""In-process measurements: evaluating a split, expert usage, models without weights.

These import torch and the trainer's pieces; ``results.run`` calls them after
(or instead of) a ``dsl train`` subprocess.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch


def _namespace(spec: str, sets: list[str], ckpt: str | None = None, seed: int | None = None) -> argparse.Namespace:
    return argparse.Namespace(file=spec, set=list(sets), dim=[], ckpt=ckpt, max_params=None, seed=seed)


def evaluate(model: torch.nn.Module, prepared: Any, data: Any, split: str) -> dict[str, float]:
    """Every metric of the spec on ``split``, aggregated exactly over its batches."""
    from dsl.checking.train_exprs import param_values
    from dsl.training.evaluate import Evaluator
    from dsl.training.trainer import input_names

    ev = Evaluator(param_values(prepared.spec, prepared.overrides), model)
    inputs = input_names(model, data.example())
    sums = {m.name: [0.0, 0] for m in prepared.cfg.metrics}
    model.eval()
    with torch.no_grad():
        for batch in data.batches(split, 0):
            out = model(**{k: batch[k] for k in inputs})
            names = {**batch, **(out if isinstance(out, dict) else {})}
            for m in prepared.cfg.metrics:
                value, count = ev.call(m.expr, names)
                sums[m.name][0] += float(value) * count
                sums[m.name][1] += count
    return {k: s / n for k, (s, n) in sums.items() if n}


def load_run(spec: str, sets: list[str], ckpt: str) -> tuple[Any, torch.nn.Module, Any]:
    """The prepared spec, the trained model of run directory ``ckpt``, and its data."""
    from dsl.cli.run_commands import _from_checkpoint

    prepared, model, _ = _from_checkpoint(_namespace(spec, sets, ckpt))
    data = prepared.cfg.source.load(prepared.cfg.source_params, prepared.cfg.seed)
    return prepared, model, data


def eval_without_training(spec: str, sets: list[str], split: str = "test", seed: int | None = None) -> dict[str, float]:
    """Metrics of a model as built (it has no weights to learn, e.g. nearest-centroid)."""
    import dsl
    from dsl.cli.run_commands import _seed_everything, prepare

    prepared = prepare(_namespace(spec, sets, seed=seed))
    _seed_everything(prepared.cfg.seed)
    model = dsl.compile(prepared.spec, prepared.dims, return_dict=True, **prepared.overrides)
    data = prepared.cfg.source.load(prepared.cfg.source_params, prepared.cfg.seed)
    return evaluate(model, prepared, data, split)


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
    inputs = input_names(model, data.example())
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
