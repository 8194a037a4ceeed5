"""Run one row for one seed: the ``dsl train`` command (or an in-process evaluation)."""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import shutil
import time
from pathlib import Path
from typing import Any

from results.rows import Row

REPO = Path(__file__).resolve().parent.parent
RUNS = "runs/results"  # relative to the repository root (ignored by git)
QUICK_RUNS = "runs/results-quick"  # --quick never overwrites the runs behind the table


def out_dir(row: Row, seed: int | str, root: str = RUNS) -> str:
    return f"{root}/{row.id}/{seed}"


def train_args(row: Row, seed: int | str, epochs: int | None = None, root: str = RUNS) -> list[str]:
    """The arguments of ``dsl`` for one seed of a training row."""
    args = ["train", row.spec, "--seed", str(seed)]
    for s in row.sets:
        args += ["--set", s]
    epochs = epochs if epochs is not None else row.epochs
    if epochs is not None and "stages" not in row.extras:  # a run with stages lasts their sum: --epochs is refused
        args += ["--epochs", str(epochs)]
    return args + ["--quiet", "--out", out_dir(row, seed, root)]


def display_command(row: Row) -> str:
    """The command of a row as the docs show it, ``S`` standing for the seed."""
    if row.mode == "eval":
        return f"python -m results --only {row.id} --seeds S"
    return "dsl " + " ".join(shlex.quote(a) for a in train_args(row, "S"))


def run_row(row: Row, seed: int, epochs: int | None = None, root: str = RUNS) -> dict[str, Any]:
    """Run ``row`` with ``seed``; return its record (metric, wall time, extras, or error)."""
    t0 = time.perf_counter()
    try:
        if row.mode == "eval":
            record = _eval_row(row, seed)
        else:
            record = _train_row(row, seed, epochs, root)
    except Exception as exc:  # one failed run must not stop the table; the record says why
        record = {"error": f"{type(exc).__name__}: {exc}"}
    record["wall"] = time.perf_counter() - t0
    record["seed"] = seed
    return record


def _dsl(args: list[str]) -> tuple[int, str]:
    """Run ``dsl ARGS`` in this process (the CLI's own code path, without paying the
    start-up of a fresh interpreter for every seed); return the exit code and stderr."""
    from dsl.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(REPO), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
    return code, err.getvalue()


def _eval_row(row: Row, seed: int) -> dict[str, Any]:
    from results.measure import eval_without_training

    metrics = eval_without_training(row.spec, list(row.sets), row.split, seed)
    return {"value": metrics[row.metric]}


def _train_row(row: Row, seed: int, epochs: int | None, root: str) -> dict[str, Any]:
    out = REPO / out_dir(row, seed, root)
    if out.exists():  # a fresh run each time: never resume a stale one
        shutil.rmtree(out)
    code, err = _dsl(train_args(row, seed, epochs, root))
    if code != 0:
        return {"error": f"exit {code}: {err.strip()[-500:]}"}
    lines = (out / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    meta = json.loads((out / "meta.json").read_text())
    record: dict[str, Any] = {
        "value": meta["test"][row.metric] if row.split == "test" else last[row.split][row.metric],
        "epochs": last["epoch"],
        "train_loss": last["train"]["loss"],
    }
    record.update(_extras(row, seed, last, str(out)))
    return record


def _stage_numbers(row: Row, run_dir: str) -> dict[str, Any]:
    """ProtoPNet's stages: validation accuracy before and after the joint stage's last push, and
    after the last-layer stage (the run's last epoch)."""
    records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    pushes = [r["push"] for r in records if r.get("stage") == "joint" and "push" in r]
    if not pushes:
        raise RuntimeError("the joint stage recorded no push")
    return {"before_push": pushes[-1]["before"]["val"][row.metric], "after_push": pushes[-1]["after"]["val"][row.metric],
            "after_last_layer": records[-1]["val"][row.metric]}


def _extras(row: Row, seed: int, last: dict[str, Any], run_dir: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "stages" in row.extras:
        out.update(_stage_numbers(row, run_dir))
    if "entropy" in row.extras:
        meta = json.loads((Path(run_dir) / "meta.json").read_text())
        out["entropy"] = meta["data_info"]["entropy_test"]
    if "nonzero" in row.extras:
        from dsl.training.rundir import RunDir

        weights, _ = RunDir(run_dir).load_weights()
        out["nonzero"] = int(sum(int((w != 0).sum()) for k, w in weights.items() if w.dim() >= 2 and "weight" in k))
    if "push" in row.extras:
        push = last.get("push")
        if push is None:
            raise RuntimeError("the last epoch has no `push` record (is push_every wired?)")
        out["before_push"] = push["before"]["val"][row.metric]  # pushes are measured on the validation split
        out["after_push"] = push["after"]["val"][row.metric]
    needs_model = [e for e in row.extras if e in ("train_acc", "experts")]
    if needs_model:
        from results.measure import evaluate, expert_usage, load_run

        prepared, model, step, data = load_run(row.spec, list(row.sets), run_dir)
        if "train_acc" in row.extras:
            out["train_acc"] = evaluate(model, step, prepared, data, "train")[row.metric]
        if "experts" in row.extras:
            out["experts"] = expert_usage(model, data, row.split)
    return out
