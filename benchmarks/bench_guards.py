"""Runtime input guards (dsl/building/guards.py): the cost of checking every call's inputs.

The same compiled model with guards on (the default) and off
(``dsl.compile(..., guards=False)``), forward in inference mode:

* the classifier (``specs/classifier.dsl``, x [B, 64]) at batch 8, where the
  per-call cost of the check shows, and at batch 256;
* the karate GAT (``specs/gat_karate.dsl``), whose guard also reads the
  minimum and maximum of ``edge_index`` (one ``aminmax`` per call).

The guard is the first statement of the generated ``forward``
(``check_inputs(self.dsl_guard, <a weight>, x, ...)``; not a forward pre-hook,
which would put every call on ``nn.Module``'s slow path), so its cost is a
constant per call, whatever the batch: the notes give it in microseconds. The
case "the guard alone" times the checks without the model: ``InputGuard.check``
as every call runs it (the shape/dtype checks cached on the inputs'
signature) and ``check_shapes`` as the first call with a new signature runs it
(every check). The issue's bound: at most 10 µs per call.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from benchmarks.harness import Context, Row, Stats, interleave

NAME = "guards"
TITLE = "Runtime input guards: guards on vs off (forward, inference)"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _spec(name: str) -> str:
    return os.path.join(ROOT, "specs", f"{name}.dsl")


def _models(name: str, device: str) -> tuple[Any, Any]:
    """The spec compiled twice with the same weights: guards on, guards off."""
    import torch

    import dsl

    torch.manual_seed(0)
    on = dsl.compile(_spec(name)).to(device).eval()
    off = dsl.compile(_spec(name), guards=False).to(device).eval()
    off.load_state_dict(on.state_dict())
    return on, off


def _call(model: Any, inputs: dict[str, Any]) -> Callable[[], object]:
    import torch

    def run() -> object:
        with torch.inference_mode():
            return model(**inputs)

    return run


def _pair(ctx: Context, case: str, on: Any, off: Any, inputs: dict[str, Any]) -> list[Row]:
    stats = interleave({"guards off": _call(off, inputs), "guards on": _call(on, inputs)},
                       repeats=ctx.repeats, warmup=ctx.warmup, sync=ctx.sync)
    _note_overhead(ctx, case, stats)
    return [
        Row(case, "guards off", stats["guards off"]),
        Row(case, "guards on", stats["guards on"], baselines=["guards off"]),
    ]


def _guard_alone(ctx: Context, model: Any, inputs: dict[str, Any]) -> list[Row]:
    guard = model.dsl_guard
    weight = next(p for p in model.parameters() if p.is_floating_point())
    args = tuple(inputs[name] for name in guard.names)
    stats = interleave({"check (signature seen)": lambda: guard.check(weight, args),
                        "check_shapes (a new signature)": lambda: guard.check_shapes(weight, args)},
                       repeats=ctx.repeats, warmup=ctx.warmup)
    seen, new = stats["check (signature seen)"].median, stats["check_shapes (a new signature)"].median
    ctx.notes.append(f"the guard alone (the checks, no forward): {seen * 1e6:.1f} µs per call with a signature "
                     f"seen before, {new * 1e6:.1f} µs with a new one (bound: 10 µs per call: "
                     f"{'met' if max(seen, new) <= 10e-6 else 'MISSED'}).")
    return [Row("the guard alone, classifier", name, s) for name, s in stats.items()]


def _note_overhead(ctx: Context, case: str, stats: dict[str, Stats]) -> None:
    extra = stats["guards on"].median - stats["guards off"].median
    ctx.notes.append(f"{case}: the guard adds {extra * 1e6:.1f} µs per call "
                     f"({stats['guards off'].median * 1e6:.1f} → {stats['guards on'].median * 1e6:.1f} µs).")


def run(ctx: Context) -> list[Row]:
    torch = ctx.init_torch()
    rows: list[Row] = []
    on, off = _models("classifier", ctx.device)
    g = torch.Generator().manual_seed(0)
    for batch in (8, 256):
        x = torch.randn(batch, 64, generator=g).to(ctx.device)
        rows += _pair(ctx, f"classifier, batch {batch}", on, off, {"x": x})
    rows += _guard_alone(ctx, on, {"x": x})
    if not ctx.quick:
        on, off = _models("gat_karate", ctx.device)
        x = torch.randn(34, 34, generator=g).to(ctx.device)
        edges = torch.randint(0, 34, (2, 156), generator=g).to(ctx.device)
        rows += _pair(ctx, "GAT karate (N=34, E=156)", on, off, {"x": x, "edge_index": edges})
    ctx.notes.append("`--no-guards` / `dsl.compile(..., guards=False)` removes the cost entirely.")
    return rows
