"""Sweeps: ``--set lr=1e-3,1e-2 --set hidden=16,64`` trains every combination into one folder.

A ``--set`` value with a comma outside brackets, parentheses and quotes is a
list of values to sweep (``--set 'loggers=[csv, tensorboard]'`` is one value).
The grid is the product of the lists, in the order the ``--set`` options
were given; each combination is one run, ``<folder>/<NN>-<key>=<value>...``,
whose ``meta.json`` records its overrides. :func:`results_table` gathers the
runs' outcomes (the best validation epoch, the test split on its weights),
written as ``sweep.csv`` in the folder.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
import re
from collections.abc import Sequence
from typing import Any

from dsl.language.files import atomic_text

SWEEP_CSV = "sweep.csv"
MAX_RUNS = 1000
_OPEN, _CLOSE = "([{", ")]}"


def split_values(text: str) -> list[str]:
    """The comma-separated values of ``text`` at the top level (not inside brackets or quotes)."""
    values, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            values.append(text[start:i].strip())
            start = i + 1
    values.append(text[start:].strip())
    return values


def grid(assignments: Sequence[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Every combination of the assignments' values, the first key varying slowest."""
    axes = [[(key, v) for v in split_values(text)] for key, text in assignments]
    return [list(combo) for combo in itertools.product(*axes)]


def is_sweep(assignments: Sequence[tuple[str, str]]) -> bool:
    return any(len(split_values(text)) > 1 for _, text in assignments)


def run_name(index: int, combo: Sequence[tuple[str, str]], swept: Sequence[str]) -> str:
    """``03-lr=0.01-hidden=64``: the run's number and the values that vary, safe as a folder name."""
    parts = [f"{k}={v}" for k, v in combo if k in swept]
    name = f"{index:02d}-" + "-".join(parts)
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", name)[:120]


def outcome(trainer: Any) -> dict[str, Any]:
    """The numbers a sweep's table shows for one finished run."""
    best = trainer.best or {}
    row: dict[str, Any] = {"epochs_done": trainer.epoch, "best_epoch": best.get("epoch", "")}
    if best:
        row[f"val_{best['metric']}"] = best["value"]
    for k, v in (trainer.test or {}).items():
        if k not in ("epoch", "weights"):
            row[f"test_{k}"] = v
    return row


def best_run(rows: list[dict[str, Any]], mode: str) -> int | None:
    """The index of the row with the best validation value (``mode``: max or min), if any."""
    scored = [(i, v) for i, r in enumerate(rows) for k, v in r.items()
              if k.startswith("val_") and isinstance(v, float) and not math.isnan(v)]
    if not scored:
        return None
    pick = max if mode == "max" else min
    return pick(scored, key=lambda iv: iv[1])[0]


def write_csv(folder: str, rows: list[dict[str, Any]]) -> str:
    """``sweep.csv``: one row per run, every column any run has."""
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    path = os.path.join(folder, SWEEP_CSV)
    lines = [columns] + [[_cell(r.get(c, "")) for c in columns] for r in rows]
    atomic_text(path, "".join(_csv_line(line) for line in lines))
    return path


def _cell(v: Any) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def _csv_line(cells: list[str]) -> str:
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(cells)
    return buf.getvalue()
