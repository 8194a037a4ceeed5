"""Expert usage: how every ``MoE`` and ``Gate`` of a run routes its tokens, per epoch.

For each router the hook turns on :class:`dsl.blocks.nn.moe.RoutingStats`
(sums kept on the device during training forwards; see that module) and, at
the end of each epoch, writes under ``record["experts"][<module path>]``:

* ``load``: each expert's share of the routed (token, expert) assignments;
* ``importance``: each expert's share of the gate mass (the sum of its gate weights);
* ``entropy``: the mean per-token entropy, in nats, of the router's learned
  distribution softmax(x W_g) over all experts (before noise and top-k);
  ``entropy_max`` = log E is the uniform router's;
* ``unused``: the share of experts no token selected during the epoch;
* ``dropped``: the share of assignments a capacity limit dropped (``null`` without a capacity);
* ``tokens``, ``experts``, ``k``, ``kind`` (``MoE`` or ``Gate``).

Statistics cover the training forwards of the epoch (with the routing noise of
a noisy gate), not the evaluation passes. Under DDP the sums are added across
ranks before the shares are taken, so every rank records the global view.
Under ``--compile`` nothing is collected (the update is skipped while
tracing), and the record has no ``experts`` key.

The module imports no torch at import time: ``dsl inspect`` reuses the
rendering helpers below on a finished run's ``metrics.jsonl``.
"""

from __future__ import annotations

import math
from typing import Any

from dsl.training.hooks import Hook

BAR_WIDTH = 24
_EIGHTHS = " ▏▎▍▌▋▊▉█"


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """A unicode bar of ``fraction`` (0..1) of ``width`` cells, to an eighth of a cell."""
    cells = max(0.0, min(1.0, fraction)) * width
    full = int(cells)
    part = int(round((cells - full) * 8))
    if part == 8:
        full, part = full + 1, 0
    return ("█" * full + (_EIGHTHS[part] if part else "")).ljust(width)


def summarise(sums: list[float], experts: int, kind: str, k: int, capacity: float | None) -> dict[str, Any] | None:
    """The record entry of one router from its summed statistics (None when it saw no token)."""
    counts, mass = sums[:experts], sums[experts : 2 * experts]
    entropy_sum, tokens, dropped = sums[2 * experts], sums[2 * experts + 1], sums[2 * experts + 2]
    if tokens <= 0:
        return None
    routed, total_mass = sum(counts), sum(mass)
    return {
        "kind": kind,
        "experts": experts,
        "k": k,
        "tokens": int(round(tokens)),
        "load": [round(c / routed, 6) if routed else 0.0 for c in counts],
        "importance": [round(m / total_mass, 6) if total_mass else 0.0 for m in mass],
        "entropy": round(entropy_sum / tokens, 6),
        "entropy_max": round(math.log(experts), 6),
        "unused": round(sum(1 for c in counts if c == 0) / experts, 6),
        "dropped": round(dropped / routed, 6) if capacity is not None and routed else None,
    }


def usage_tables(experts: dict[str, Any], title: str = "expert usage") -> list[Any]:
    """Rich tables (one per router) with a bar chart of each expert's load."""
    from rich.table import Table

    tables = []
    for path, u in experts.items():
        n = int(u["experts"])
        top = max(u["load"]) if u["load"] else 0.0
        t = Table(title=f"{title} · {path} ({u['kind']}, {n} experts, k={u['k']})", title_justify="left")
        t.add_column("expert", justify="right")
        t.add_column("load", justify="right")
        t.add_column(f"load (bar: max {100 * top:.1f}%)")
        t.add_column("importance", justify="right")
        for i in range(n):
            load, imp = u["load"][i], u["importance"][i]
            t.add_row(str(i), f"{100 * load:.1f}%", bar(load / top if top > 0 else 0.0), f"{100 * imp:.1f}%")
        parts = [
            f"uniform {100 / n:.1f}% each",
            f"gate entropy {u['entropy']:.3f} of max {u['entropy_max']:.3f} nats",
            f"never selected {100 * u['unused']:.0f}% of experts",
        ]
        if u.get("dropped") is not None:
            parts.append(f"dropped {100 * u['dropped']:.2f}% of assignments")
        parts.append(f"{u['tokens']} tokens")
        t.caption = " · ".join(parts)
        tables.append(t)
    return tables


def routers(model: Any) -> list[tuple[str, str, Any, float | None]]:
    """(module path, "MoE"|"Gate", gate module, capacity) for every router of ``model``.

    A gate inside an MoE is reported once, as the MoE (which adds dropped tokens)."""
    from dsl.blocks.nn.moe import MixtureOfExperts, NoisyTopKGate

    found: list[tuple[str, str, Any, float | None]] = []
    inner: set[int] = set()
    modules = list(model.named_modules())
    for path, m in modules:
        if isinstance(m, MixtureOfExperts):
            found.append((path or "<model>", "MoE", m.gate, m.capacity))
            inner.add(id(m.gate))
    for path, m in modules:
        if isinstance(m, NoisyTopKGate) and id(m) not in inner:
            found.append((path or "<model>", "Gate", m, None))
    return found


class ExpertUsage(Hook):
    """Collects routing statistics per epoch and writes them to the epoch record."""

    name = "expert_usage"

    def __init__(self, found: list[tuple[str, str, Any, float | None]]):
        self.routers = found

    def on_fit_start(self, trainer: Any) -> None:
        from dsl.blocks.nn.moe import RoutingStats

        for _, _, gate, _ in self.routers:
            gate.usage = RoutingStats(gate.experts)

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        import torch

        sizes = [2 * gate.experts + 3 for _, _, gate, _ in self.routers]
        parts = []
        for (_, _, gate, _), size in zip(self.routers, sizes, strict=True):
            sums = gate.usage.sums if gate.usage is not None else None
            parts.append(sums.to(trainer.device) if sums is not None else
                         torch.zeros(size, dtype=torch.float64, device=trainer.device))
            if gate.usage is not None:
                gate.usage.reset()
        flat = torch.cat(parts)
        if trainer.world > 1:
            import torch.distributed as dist

            dist.all_reduce(flat)  # sums over ranks: every rank records the global view
        values = flat.cpu().tolist()
        out: dict[str, Any] = {}
        start = 0
        for (path, kind, gate, capacity), size in zip(self.routers, sizes, strict=True):
            entry = summarise(values[start : start + size], gate.experts, kind, gate.k, capacity)
            start += size
            if entry is not None:
                out[path] = entry
        if out:
            record["experts"] = out

    def on_fit_end(self, trainer: Any) -> None:
        for _, _, gate, _ in self.routers:
            gate.usage = None

    def summary(self, trainer: Any) -> list[Any]:
        """Renderables for the end of ``dsl train``: the last epoch's usage tables."""
        last = trainer.history[-1] if trainer.history else {}
        experts = last.get("experts")
        if not experts:
            return []
        return usage_tables(experts, title=f"expert usage, epoch {last.get('epoch')}")


def make(trainer: Any) -> ExpertUsage | None:
    found = routers(trainer.model)
    return ExpertUsage(found) if found else None
