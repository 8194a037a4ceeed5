"""``dsl inspect RUN``: what a finished (or running) run recorded, without torch.

Reads the run directory's ``meta.json`` and ``metrics.jsonl`` and shows:

* the run summary: model, spec file, data, seed, overrides, epochs done of
  those planned, the best monitored metric and the last epoch's numbers;
* the expert usage of every MoE/Gate (``dsl.training.hooks.expert_usage``) at the
  last epoch, or ``--epoch N``, as tables with a bar chart of each expert's load;
* the sparsity per layer when the run pruned (``dsl.training.hooks.pruning``).

``--plot OUT.png`` draws the learning curves (the training and validation
loss, and each validation metric, over the epochs) and, below them, each
router's load fraction per expert (one panel per router); it needs
matplotlib: ``pip install 'dsl[plot]'``.
``--json`` prints the summary and the chosen epoch's record as JSON.

Exit codes: 0; 1 when RUN is not a run directory, records no such epoch, has
nothing to plot, or matplotlib is missing; 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

NAME = "inspect"
HELP = "show a run's summary, expert usage and pruning; plot learning curves and expert load"


class InspectProblem(Exception):
    """A run that cannot be inspected as asked: one line, exit 1."""


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory (written by dsl train)")
    parser.add_argument("--epoch", type=int, default=None, metavar="N", help="show this epoch (default: the last)")
    parser.add_argument("--plot", default=None, metavar="OUT.png",
                        help="plot the learning curves and each expert's load over epochs (needs matplotlib)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def run(args: argparse.Namespace) -> int:
    try:
        return _inspect(args)
    except InspectProblem as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


# --------------------------------------------------------------------------- reading


def read_run(path: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(meta, epoch records) of a run directory."""
    from dsl.training.rundir import META_FILE, METRICS_FILE

    meta_file = os.path.join(path, META_FILE)
    if not os.path.isfile(meta_file):
        raise InspectProblem(f"{path}: no {META_FILE} (not a run directory?)")
    try:
        with open(meta_file, encoding="utf-8") as fh:
            meta = json.load(fh)
        records: list[dict[str, Any]] = []
        metrics = os.path.join(path, METRICS_FILE)
        if os.path.isfile(metrics):
            with open(metrics, encoding="utf-8") as fh:
                records = [json.loads(line) for line in fh if line.strip()]
    except (OSError, ValueError) as exc:
        raise InspectProblem(f"{path}: cannot read the run: {exc}") from None
    if not isinstance(meta, dict) or not all(isinstance(r, dict) for r in records):
        raise InspectProblem(f"{path}: meta.json or metrics.jsonl is not a run's")
    return meta, records


def pick(records: list[dict[str, Any]], epoch: int | None) -> dict[str, Any] | None:
    """The record of ``epoch`` (the last one when None); None when the run has no records."""
    if not records:
        return None
    if epoch is None:
        return records[-1]
    for r in records:
        if r.get("epoch") == epoch:
            return r
    epochs = [r.get("epoch") for r in records]
    raise InspectProblem(f"the run records epochs {epochs[0]}..{epochs[-1]}, not {epoch}")


def summary(meta: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's identity and outcome, from meta.json and the last record."""
    last = records[-1] if records else {}
    return {
        "model": meta.get("model"),
        "spec_file": meta.get("spec_file"),
        "spec_hash": str(meta.get("spec_hash", ""))[:12],
        "data": meta.get("data"),
        "seed": meta.get("seed"),
        "overrides": meta.get("overrides") or {},
        "epochs": f"{meta.get('epoch', len(records))}/{meta.get('epochs', '?')}",
        "stopped_early": bool(meta.get("stopped_early", False)),
        "best": meta.get("best") or {},
        "test": meta.get("test") or {},
        "last": {k: v for k, v in last.items() if isinstance(v, dict) and k not in ("experts", "pruning")},
    }


# --------------------------------------------------------------------------- showing


def _inspect(args: argparse.Namespace) -> int:
    meta, records = read_run(args.run)
    record = pick(records, args.epoch)
    if args.plot:
        plot_run(records, args.plot)
    if args.json:
        print(json.dumps({"run": args.run, "summary": summary(meta, records), "record": record}, default=str))
        return 0
    from rich.console import Console

    console = Console(file=sys.stdout)
    console.print(_summary_table(args.run, summary(meta, records)))
    if record is None:
        console.print("no epoch recorded yet")
        return 0
    from dsl.training.hooks.expert_usage import usage_tables
    from dsl.training.hooks.pruning import sparsity_table

    epoch = record.get("epoch")
    for table in usage_tables(record.get("experts") or {}, title=f"expert usage, epoch {epoch}"):
        console.print(table)
    if record.get("pruning"):
        console.print(sparsity_table(record["pruning"]))
    if not record.get("experts") and not record.get("pruning"):
        console.print(f"epoch {epoch}: no expert usage or pruning recorded")
    if args.plot:
        console.print(f"wrote {args.plot}")
    return 0


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"
    return str(v)


def _summary_table(path: str, s: dict[str, Any]) -> Any:
    from rich.table import Table

    t = Table(title=f"run {path}", title_justify="left", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    for key in ("model", "spec_file", "spec_hash", "data", "seed", "epochs"):
        t.add_row(key, _fmt(s[key]))
    if s["overrides"]:
        t.add_row("overrides", ", ".join(f"{k}={v}" for k, v in s["overrides"].items()))
    if s["stopped_early"]:
        t.add_row("stopped", "early (early_stop)")
    best = s["best"]
    if best:
        t.add_row("best", f"{best.get('metric')} = {_fmt(best.get('value'))} at epoch {best.get('epoch')} "
                          f"({best.get('split')})")
    for split, values in s["last"].items():
        shown = ", ".join(f"{k} {_fmt(v)}" for k, v in values.items() if k != "throughput")
        t.add_row(f"last {split}", shown)
    if s["test"]:
        shown = ", ".join(f"{k} {_fmt(v)}" for k, v in s["test"].items() if k not in ("epoch", "weights"))
        t.add_row(f"test (epoch {s['test'].get('epoch')})", shown)
    return t


def curves(records: list[dict[str, Any]]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Per quantity (``loss``, then each metric), per split: (epoch, value) points."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for r in records:
        for split in ("train", "val", "graph"):
            for key, value in (r.get(split) or {}).items():
                if key != "throughput" and isinstance(value, (int, float)):
                    out.setdefault(key, {}).setdefault(split, []).append((int(r.get("epoch", 0)), float(value)))
    return out


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InspectProblem("--plot needs matplotlib: pip install 'dsl[plot]'") from None
    return plt


def plot_run(records: list[dict[str, Any]], out: str) -> None:
    """The learning curves, one panel per quantity, then each router's expert load."""
    lines = curves(records)
    loads = _load_series(records)
    if not lines and not loads:
        raise InspectProblem("the run recorded no epoch yet: nothing to plot")
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    panels = len(lines) + len(loads)
    fig, axes = plt.subplots(panels, 1, figsize=(8, 3.0 * panels), squeeze=False)
    for ax, (key, by_split) in zip(axes[:, 0], lines.items(), strict=False):
        for split, points in by_split.items():
            ax.plot([e for e, _ in points], [v for _, v in points], marker="o", markersize=3, label=split)
        ax.set_title(f"{key} per epoch")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize="small")
    for ax, (path, points) in zip(axes[len(lines):, 0], loads.items(), strict=True):
        _draw_load(ax, path, points)
    _save(fig, plt, out)


def _load_series(records: list[dict[str, Any]]) -> dict[str, list[tuple[int, list[float]]]]:
    series: dict[str, list[tuple[int, list[float]]]] = {}
    for r in records:
        for path, u in (r.get("experts") or {}).items():
            series.setdefault(path, []).append((int(r.get("epoch", 0)), list(u.get("load") or [])))
    return series


def _draw_load(ax: Any, path: str, points: list[tuple[int, list[float]]]) -> None:
    from matplotlib.ticker import MaxNLocator

    epochs = [e for e, _ in points]
    n = max(len(load) for _, load in points)
    for i in range(n):
        ax.plot(epochs, [load[i] if i < len(load) else float("nan") for _, load in points],
                marker="o", markersize=3, label=f"expert {i}")
    ax.axhline(1.0 / n, color="grey", linestyle="--", linewidth=1, label="uniform")
    ax.set_title(f"{path}: load fraction per expert")
    ax.set_xlabel("epoch")
    ax.set_ylabel("share of routed tokens")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))


def _save(fig: Any, plt: Any, out: str) -> None:
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        plt.close(fig)
        raise InspectProblem(f"--plot: no folder {folder}")
    fig.savefig(out, dpi=100)
    plt.close(fig)
