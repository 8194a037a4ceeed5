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
        print(f"dsl: error: {err}", file=sys.stderr)
        return 1


# --------------------------------------------------------------------------- reading


def read_run(path: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(meta, epoch records) of a run directory, checked: the directory is untrusted, so a file of the
    wrong shape is a RunError (E0704) naming it. Records past the epoch meta.json commits (a run
    killed between the two writes) are left out, as ``--resume`` drops them."""
    from dsl.training.rundir import META_FILE, RunDir

    run = RunDir(path)
    if not os.path.isdir(path) or not os.path.lexists(run.file(META_FILE)):
        raise InspectProblem(f"{path}: no {META_FILE} (not a run directory?)")
    meta = run.read_meta()
    check_meta(meta, run.file(META_FILE))
    committed = run.committed_epoch(meta)
    return meta, [r for r in run.read_metrics() if r.get("epoch", 0) <= committed]


_META_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str, type(None)), "spec_file": (str, type(None)), "spec_hash": (str, type(None)),
    "data": (str, type(None)), "seed": (int, type(None)), "epochs": (int, type(None)), "overrides": (dict,),
    "best": (dict,), "stopped_early": (bool,),
}


def check_meta(meta: dict[str, Any], path: str) -> None:
    """The entries of meta.json that inspect shows have the types ``dsl train`` writes."""
    for key, types in _META_TYPES.items():
        if key in meta and not isinstance(meta[key], types):
            _invalid(path, f"`{key}` is a JSON {type(meta[key]).__name__}")
    best = meta.get("best") or {}
    if "epoch" in best and type(best["epoch"]) is not int:
        _invalid(path, "`best.epoch` is not an integer")


def _invalid(path: str, what: str) -> None:
    from dsl.language.errors import RunError

    raise RunError(f"{path}: {what}, not what `dsl train` writes", "E0704", path)


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
        "test": meta.get("test") if isinstance(meta.get("test"), dict) else {},
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
    experts, pruning = _escaped(record)
    for table in usage_tables(experts, title=f"expert usage, epoch {epoch}"):
        console.print(table)
    if pruning:
        console.print(sparsity_table(pruning))
    if not record.get("experts") and not record.get("pruning"):
        console.print(f"epoch {epoch}: no expert usage or pruning recorded")
    if args.plot:
        console.print(f"wrote {args.plot}")
    return 0


def _fmt(v: Any) -> str:
    """A value for a table cell; text from the run is escaped (rich would read `[...]` as markup)."""
    from rich.markup import escape

    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"
    return escape(str(v))


def _escaped(record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The record's expert usage and pruning with their names escaped for rich."""
    from rich.markup import escape

    experts = {escape(k): {**u, "kind": escape(u["kind"])} for k, u in (record.get("experts") or {}).items()}
    pruning = record.get("pruning")
    if pruning:
        pruning = {**pruning, "layers": {escape(k): v for k, v in pruning["layers"].items()}}
    return experts, pruning


def _summary_table(path: str, s: dict[str, Any]) -> Any:
    from rich.table import Table

    t = Table(title=f"run {_fmt(path)}", title_justify="left", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    for key in ("model", "spec_file", "spec_hash", "data", "seed", "epochs"):
        t.add_row(key, _fmt(s[key]))
    if s["overrides"]:
        t.add_row("overrides", ", ".join(f"{_fmt(k)}={_fmt(v)}" for k, v in s["overrides"].items()))
    if s["stopped_early"]:
        t.add_row("stopped", "early (early_stop)")
    best = s["best"]
    if best:
        t.add_row("best", f"{_fmt(best.get('metric'))} = {_fmt(best.get('value'))} at epoch {best.get('epoch')} "
                          f"({_fmt(best.get('split'))})")
    for split, values in s["last"].items():
        shown = ", ".join(f"{_fmt(k)} {_fmt(v)}" for k, v in values.items() if k != "throughput")
        t.add_row(f"last {_fmt(split)}", shown)
    if s["test"]:
        shown = ", ".join(f"{_fmt(k)} {_fmt(v)}" for k, v in s["test"].items() if k not in ("epoch", "weights"))
        t.add_row(f"test (epoch {_fmt(s['test'].get('epoch'))})", shown)
    return t


def curves(records: list[dict[str, Any]]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Per quantity (``loss``, then each metric), per split: (epoch, value) points."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for r in records:
        for split in ("train", "val", "graph"):
            values = r.get(split)
            for key, value in (values.items() if isinstance(values, dict) else ()):
                if key != "throughput" and isinstance(value, (int, float)) and not isinstance(value, bool):
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


def _title(text: str) -> str:
    return text.replace("$", r"\$")  # no mathtext from the run


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
        ax.set_title(_title(f"{key} per epoch"))
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
    ax.set_title(_title(f"{path}: load fraction per expert"))
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
