"""``dsl train SPEC --set lr=1e-3,1e-2 --set hidden=16,64``: a grid of runs and one table.

The runs go one after another in this process (the grid: :mod:`dsl.training.sweep`)
into one folder (``--out``, default ``runs/<Model>-sweep-<time>``); a run that
fails (a value the checker refuses) is a row with its error, and the others
go on. The table is printed and written as ``sweep.csv``; the best run by the
validation split is named. Exit 1 when any run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from dsl.cli.main import UsageError, parse_assignments, parse_dims
from dsl.language.errors import DslError, RunError, SpecError


def run_sweep(args: argparse.Namespace) -> int:
    from dsl.cli.training import _options, _spec_file
    from dsl.language.resolve import parse_override
    from dsl.language.source import load
    from dsl.training import session
    from dsl.training.rundir import default_dir
    from dsl.training.sweep import (
        MAX_RUNS,
        best_run,
        grid,
        outcome,
        run_name,
        split_values,
        write_csv,
    )

    if int(getattr(args, "nproc", 1) or 1) > 1 or "RANK" in os.environ:
        raise UsageError("a sweep trains its runs one after another in one process: drop --nproc")
    if getattr(args, "resume", False):
        raise UsageError("--resume continues one run: pass that run's folder with --out, without a sweep")
    pairs = list(parse_assignments(args.set or [], "--set", dotted=True).items())
    for key, text in pairs:
        if "" in split_values(text):
            raise UsageError(f"--set {key}={text} has an empty value (a stray comma?)")
    combos = grid(pairs)
    if len(combos) > MAX_RUNS:
        raise UsageError(f"the sweep has {len(combos):,} runs; at most {MAX_RUNS:,}")
    swept = [k for k, text in pairs if len(split_values(text)) > 1]
    path = _spec_file(args)
    spec = load(path)
    folder = args.out or default_dir(f"{spec.model.name if spec.model else 'model'}-sweep")
    if os.path.isdir(folder) and os.listdir(folder):
        raise RunError(f"{folder} is not empty: give the sweep a new --out", "E0706", folder)
    train_overrides = {"epochs": getattr(args, "epochs", None), "seed": getattr(args, "seed", None)}

    def prepare(combo: list[tuple[str, str]]) -> Any:
        try:
            return session.prepare(path, {k: parse_override(v) for k, v in combo}, parse_dims(args.dim or []),
                                   train_overrides, getattr(args, "max_params", None))
        except SpecError as err:
            return err

    # Every combination is checked before any trains: a mistake that spoils them all (a
    # misspelt key) is one error now, not a failed run per combination after the others trained.
    prepared = [prepare(combo) for combo in combos]
    if all(isinstance(p, SpecError) for p in prepared):
        raise prepared[0]
    os.makedirs(folder, exist_ok=True)
    rows: list[dict[str, Any]] = []
    mode = "max"
    for i, (combo, p) in enumerate(zip(combos, prepared, strict=True), start=1):
        name = run_name(i, combo, swept)
        print(f"[{i}/{len(combos)}] {' '.join(f'{k}={v}' for k, v in combo if k in swept)}", file=sys.stderr)
        row: dict[str, Any] = {"run": name, **{k: v for k, v in combo if k in swept}}
        try:
            if isinstance(p, SpecError):
                raise p
            opts = _options(args)
            opts.out, opts.resume = os.path.join(folder, name), False
            trainer = session.train(p, opts)
            mon = trainer.monitor()
            mode = mon[1] if mon else mode
            row.update(outcome(trainer))
        except SpecError as err:
            print(err.render(limit=5), file=sys.stderr)
            row["error"] = err.diagnostics[0].message if err.diagnostics else "spec error"
        except DslError as err:
            print(f"error: {err}", file=sys.stderr)
            row["error"] = str(err)
        rows.append(row)
    csv_path = write_csv(folder, rows)
    best = best_run(rows, mode)
    _show(args, rows, best, folder, csv_path)
    return 1 if any("error" in r for r in rows) else 0


def _show(args: argparse.Namespace, rows: list[dict[str, Any]], best: int | None, folder: str, csv_path: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps({"folder": folder, "runs": rows, "best": rows[best]["run"] if best is not None else None},
                         default=str))
        return
    from rich.console import Console
    from rich.table import Table

    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns and k not in ("run", "epochs_done")]
    table = Table(title=f"sweep: {len(rows)} runs", title_justify="left")
    table.add_column("#", justify="right")
    for c in columns:
        table.add_column(c.replace("_", " "), justify="right" if c != "error" else "left", overflow="fold")
    for i, r in enumerate(rows):
        mark = "*" if i == best else ""
        table.add_row(f"{i + 1}{mark}", *[_fmt(r.get(c, "")) for c in columns])
    console = Console(file=sys.stdout)
    console.print(table)
    if best is not None:
        console.print(f"* best by validation: {os.path.join(folder, rows[best]['run'])}", highlight=False)
    console.print(f"table: {csv_path}", highlight=False)


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)
