"""A 2-process DistributedDataParallel job on CPU (gloo), through `dsl train --nproc 2`."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import command_args

from dsl.cli.training import cmd_train
from dsl.training.rundir import RunDir

SPEC = """
model C(classes: int = 3) {
    input x: [B, F]
    logits = Linear(relu(Linear(x, out=8)), out=classes)
    output logits: [B, classes]
}
train {
    data = iris(batch=16)
    loss = cross_entropy(logits, y)
    metrics = [accuracy(logits, y)]
    optimizer = adam(lr=0.05)
    epochs = 4
}
"""


ROOT = Path(__file__).resolve().parent.parent


def ns(**kw: object) -> argparse.Namespace:
    return command_args("train", **kw)


def test_two_process_ddp_cpu(tmp_path) -> None:
    spec_file = tmp_path / "c.dsl"
    spec_file.write_text(SPEC)
    spec_file = str(spec_file)
    out = str(tmp_path / "ddp")
    assert cmd_train(ns(file=spec_file, out=out, nproc=2, epochs=2)) == 0
    meta = RunDir(out).read_meta()
    assert meta["world_size"] == 2 and meta["epoch"] == 2
    records = RunDir(out).read_metrics()
    assert len(records) == 2
    # torchmetrics synchronises the ranks: the whole val and test splits (30 rows each) are counted
    for acc in (records[-1]["val"]["accuracy"], meta["test"]["accuracy"]):
        assert abs(acc * 30 - round(acc * 30)) < 1e-6
    # and the two ranks' test equals one process's, on the weights validation chose
    import torch

    from dsl.training.session import load_data, load_trained
    from dsl.training.trainer import Trainer

    p, model, step, run = load_trained(out)
    model.load_state_dict(run.load_weights("best.safetensors")[0])
    single = Trainer(model, step, p.cfg, p.analysis.objective.metrics, load_data(p.cfg), verbose=False)
    tested = single.evaluate("test")
    assert tested["accuracy"] == meta["test"]["accuracy"]
    assert torch.isclose(torch.tensor(tested["loss"]), torch.tensor(meta["test"]["loss"]), atol=1e-5)


# --------------------------------------------------------------------------- the launcher (issue 27)

LONG = SPEC.replace("iris(batch=16)", "iris(batch=4)").replace("epochs = 4", "epochs = 500")


def _group(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry))
    return alive


def _launch(tmp_path) -> tuple[subprocess.Popen, str]:
    spec = tmp_path / "long.dsl"
    spec.write_text(LONG)
    out = str(tmp_path / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "dsl.cli", "train", str(spec), "--nproc", "2", "--out", out,
                             "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 180
    while not os.path.exists(os.path.join(out, ".lock")):  # both ranks met; rank 0 holds the run directory
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "the ranks did not start"
        time.sleep(0.1)
    return proc, out


def _wait_empty(pgid: int, seconds: float = 20) -> list[int]:
    deadline = time.monotonic() + seconds
    while _group(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return _group(pgid)


@pytest.mark.skipif(not os.path.isdir("/proc") or not hasattr(signal, "SIGKILL"), reason="needs Linux /proc")
def test_sigterm_stops_every_rank_without_a_traceback(tmp_path) -> None:
    proc, out = _launch(tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert b"Traceback" not in err and b"stopped by SIGTERM" in err, err
        assert _wait_empty(proc.pid) == []  # no rank, manager or resource tracker left behind
    finally:
        _kill_group(proc.pid)


@pytest.mark.skipif(not os.path.isdir("/proc") or not hasattr(signal, "SIGKILL"), reason="needs Linux /proc")
def test_kill_9_of_the_launcher_ends_every_rank(tmp_path) -> None:
    proc, out = _launch(tmp_path)
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        assert _wait_empty(proc.pid) == []
    finally:
        _kill_group(proc.pid)


def _kill_group(pgid: int) -> None:
    """Clean up after a failed test: the group this test started, and only it."""
    for pid in _group(pgid):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
