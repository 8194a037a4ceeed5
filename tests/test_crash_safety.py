"""Crash safety of `dsl train`: kill -9 then --resume, atomic run-directory writes, bad output
directories, NaN/inf losses."""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import command_args

from dsl.cli.training import cmd_train
from dsl.training import rundir as rundir_module
from dsl.training.rundir import BEST_FILE, MODEL_FILE, STATE_FILE, RunDir, atomic_text

ROOT = Path(__file__).resolve().parent.parent

# Dropout draws from the global RNG, so resuming must restore it for the weights to match bit for bit.
SPEC = """
model Net {
    input x: [B, F]
    h = Dropout(relu(Linear(x, out=12)), p=0.2)
    logits = Linear(h, out=3)
    output logits: [B, 3]
}
train {
    data      = file("rows.npz", batch=16)
    loss      = cross_entropy(logits, y)
    metrics   = [accuracy(logits, y)]
    optimizer = adam(lr=0.02)
    schedule  = step(step_size=5, gamma=0.8)
    epochs    = EPOCHS
    seed      = 7
}
"""
EPOCHS = 30


def ns(**kw: object) -> argparse.Namespace:
    return command_args("train", **kw)


def _write_rows(folder: Path) -> None:
    """120 rows of 4 features in 3 separable classes: a data file keeps scikit-learn's loaders out of
    the subprocesses, which start faster."""
    import numpy as np

    g = np.random.default_rng(0)
    y = np.arange(120) % 3
    x = g.normal(size=(120, 4)).astype(np.float32) + 2.0 * np.eye(3, 4, dtype=np.float32)[y]
    np.savez(folder / "rows.npz", x=x, y=y.astype(np.int64))


@pytest.fixture()
def spec_file(tmp_path: Path) -> str:
    _write_rows(tmp_path)
    p = tmp_path / "net.dsl"
    p.write_text(SPEC.replace("EPOCHS", str(EPOCHS)))
    return str(p)


def _env() -> dict[str, str]:
    # One thread in every process, so float reductions run in the same order everywhere.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _train_cmd(spec: str, out: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dsl.cli", "train", spec, "--out", out, "--quiet", *extra]


def _meta_epoch(out: str) -> int:
    try:
        with open(os.path.join(out, "meta.json"), encoding="utf-8") as fh:
            return int(json.load(fh)["epoch"])
    except (OSError, ValueError, KeyError):  # not written yet
        return -1


def _weights(out: str) -> dict[str, torch.Tensor]:
    return RunDir(out).load_weights()[0]


def _train_here(spec_file: str, out: str, resume: bool = False) -> None:
    """`dsl train` in this process (no second torch import), on one thread like the subprocess."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cmd_train(ns(file=spec_file, out=out, resume=resume)) == 0
    finally:
        torch.set_num_threads(threads)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_kill_9_then_resume_gives_the_same_weights(spec_file: str, tmp_path: Path) -> None:
    rng = random.Random(1234)  # the "random moment" is seeded: a failure reproduces
    kill_after_epoch = rng.randint(1, EPOCHS // 3)
    delay = rng.uniform(0.0, 0.05)
    out = str(tmp_path / "killed")
    proc = subprocess.Popen(_train_cmd(spec_file, out), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _meta_epoch(out) < kill_after_epoch:  # the first checkpoints exist
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "training made no progress"
            time.sleep(0.002)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before the kill: make it longer"
    killed_at = _meta_epoch(out)
    assert kill_after_epoch <= killed_at < EPOCHS

    _train_here(spec_file, out, resume=True)  # `dsl train --resume`, without a second torch start-up
    assert _meta_epoch(out) == EPOCHS
    assert not [f for f in os.listdir(out) if f.startswith(".")], "temp or pending files left behind"

    straight = str(tmp_path / "straight")
    _train_here(spec_file, straight)
    wa, wb = _weights(straight), _weights(out)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs after kill at epoch {killed_at} + resume"
    epochs = [r["epoch"] for r in RunDir(out).read_metrics()]
    assert epochs == list(range(1, EPOCHS + 1))  # the interrupted epoch was not logged twice


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_two_writers_race_one_is_refused_and_kill_9_then_resume_gives_the_same_weights(
        spec_file: str, tmp_path: Path) -> None:
    out = str(tmp_path / "raced")
    procs = [subprocess.Popen(_train_cmd(spec_file, out), env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for _ in range(2)]
    try:
        deadline = time.monotonic() + 120
        while all(p.poll() is None for p in procs):  # the second writer is refused at once
            assert time.monotonic() < deadline, "neither writer was refused"
            time.sleep(0.01)
        loser = next(p for p in procs if p.poll() is not None)
        winner = next(p for p in procs if p is not loser)
        err = loser.stderr.read().decode() if loser.stderr else ""
        assert loser.returncode == 1 and "error[E0705]" in err and f"process {winner.pid}" in err, err
        while _meta_epoch(out) < 2:
            assert winner.poll() is None, winner.stderr.read().decode() if winner.stderr else ""
            assert time.monotonic() < deadline, "training made no progress"
            time.sleep(0.002)
        winner.send_signal(signal.SIGKILL)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=60)
    assert winner.returncode == -signal.SIGKILL, "the run finished before the kill: make it longer"
    _train_here(spec_file, out, resume=True)
    straight = str(tmp_path / "straight")
    _train_here(spec_file, straight)
    wa, wb = _weights(straight), _weights(out)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [r["epoch"] for r in RunDir(out).read_metrics()] == list(range(1, EPOCHS + 1))  # one writer's records
    assert not [f for f in os.listdir(out) if f.startswith(".")]


# --------------------------------------------------------------------------- atomic writes

_KILL_MID_WRITE = """
import os, signal, sys
from dsl.training.rundir import atomic_write

def write(tmp):
    with open(tmp, "w") as fh:
        fh.write("half of the new")
        fh.flush()
        os.kill(os.getpid(), signal.SIGKILL)  # killed in the middle of the write

atomic_write(sys.argv[1], write)
"""


def test_a_kill_during_a_write_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "meta.json"
    target.write_text('{"epoch": 3}\n')
    proc = subprocess.run([sys.executable, "-c", _KILL_MID_WRITE, str(target)], env=_env(), timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_text() == '{"epoch": 3}\n'
    leftovers = [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    assert len(leftovers) == 1
    RunDir(str(tmp_path)).recover()
    assert [f for f in os.listdir(tmp_path)] == ["meta.json"]


def _checkpoint(run: RunDir, epoch: int, value: float, commit: bool = True) -> None:
    run.save_weights({"w": torch.full((3,), value)}, epoch)
    run.save_weights({"w": torch.full((3,), value)}, epoch, BEST_FILE)
    run.save_state({"epoch": epoch, "value": value})
    if commit:
        run.write_meta({"epoch": epoch})


def test_an_uncommitted_checkpoint_is_discarded(tmp_path: Path) -> None:
    run = RunDir(str(tmp_path / "run"))
    _checkpoint(run, 1, 1.0)
    _checkpoint(run, 2, 2.0, commit=False)  # killed before meta.json of epoch 2
    w, epoch = run.load_weights()
    assert epoch == 1 and torch.equal(w["w"], torch.ones(3))
    run.recover()
    assert run.load_state()["epoch"] == 1 and run.load_weights()[1] == 1 and run.load_weights(BEST_FILE)[1] == 1
    assert sorted(os.listdir(run.path)) == [BEST_FILE, "meta.json", MODEL_FILE, STATE_FILE]


def test_a_committed_checkpoint_is_completed(tmp_path: Path) -> None:
    run = RunDir(str(tmp_path / "run"))
    _checkpoint(run, 1, 1.0)
    _checkpoint(run, 2, 2.0, commit=False)
    # killed after meta.json of epoch 2 was written, before the pending files were moved in
    atomic_text(run.file("meta.json"), json.dumps({"epoch": 2}))
    run.recover()
    assert run.load_state()["epoch"] == 2 and run.load_weights()[1] == 2 and run.load_weights(BEST_FILE)[1] == 2
    assert not [f for f in os.listdir(run.path) if f.startswith(".")]


def test_resume_before_the_first_checkpoint_starts_over(spec_file: str, tmp_path: Path) -> None:
    out = str(tmp_path / "early")
    run = RunDir(out)
    run.start("spec", {"epoch": 0, "spec_hash": None})  # as if killed right after the run started
    straight = str(tmp_path / "straight")
    assert cmd_train(ns(file=spec_file, out=straight, epochs=2)) == 0
    meta = RunDir(straight).read_meta()
    run.write_meta({**meta, "epoch": 0})
    assert cmd_train(ns(file=spec_file, out=out, epochs=2, resume=True)) == 0
    wa, wb = _weights(straight), _weights(out)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# --------------------------------------------------------------------------- output directory


def test_an_output_path_under_a_file_fails_before_training(spec_file: str, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    out = str(blocker / "run")
    assert cmd_train(ns(file=spec_file, out=out)) == 1
    err = capsys.readouterr().err
    assert "cannot write to the output directory" in err and out in err and "Traceback" not in err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only directories; the path-under-a-file test covers this")
def test_a_read_only_output_directory_fails_before_training(spec_file: str, tmp_path: Path, capsys) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert cmd_train(ns(file=spec_file, out=str(ro / "run"))) == 1
        assert str(ro / "run") in capsys.readouterr().err
    finally:
        ro.chmod(0o700)


def test_a_full_disk_fails_before_training(spec_file: str, tmp_path: Path, capsys, monkeypatch) -> None:
    class Usage:
        total, used, free = 10**9, 10**9 - 1000, 1000

    monkeypatch.setattr(rundir_module.shutil, "disk_usage", lambda path: Usage())
    out = str(tmp_path / "full")
    assert cmd_train(ns(file=spec_file, out=out)) == 1
    err = capsys.readouterr().err
    assert "not enough space" in err and out in err
    assert not RunDir(out).exists()  # nothing was trained or checkpointed


# --------------------------------------------------------------------------- NaN / inf


def test_a_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path, capsys) -> None:
    # The learning rate explodes after epoch 1 (gamma=1e30): epoch 2's loss becomes NaN.
    _write_rows(tmp_path)
    p = tmp_path / "nan.dsl"
    p.write_text(SPEC.replace("EPOCHS", "4").replace("adam(lr=0.02)", "sgd(lr=0.1)")
                 .replace("step(step_size=5, gamma=0.8)", "step(step_size=1, gamma=1e30)"))
    out = str(tmp_path / "nan")
    assert cmd_train(ns(file=str(p), out=out)) == 1
    err = capsys.readouterr().err
    assert "is nan at epoch 2, step" in err or "is inf at epoch 2, step" in err, err
    assert "last good checkpoint (epoch 1)" in err and out in err and "Traceback" not in err
    run = RunDir(out)
    assert run.read_meta()["epoch"] == 1 and run.load_state()["epoch"] == 1
    weights, epoch = run.load_weights()
    assert epoch == 1 and all(torch.isfinite(w).all() for w in weights.values())
    assert [r["epoch"] for r in run.read_metrics()] == [1]
    assert not [f for f in os.listdir(out) if f.startswith(".")]
