"""Untrusted run directories (issue 27): FIFOs, device links, files outside the run, wrong JSON
types, deep nesting, hostile checkpoints; one writer per directory; the commit window.

Every reader (`eval`, `predict`, `explain`, `inspect`, `--resume`) answers at once with a
diagnostic (E0704, E0705) naming the file, never hangs, never reads outside the directory and
never reports an internal error.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from safetensors.torch import save_file

from dsl.language.errors import RunError
from dsl.training.rundir import META_FILE, METRICS_FILE, MODEL_FILE, SPEC_FILE, STATE_FILE, RunDir

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="needs POSIX signals")

SPEC = """
model M {
    input x: [B, 4]
    logits = Linear(relu(Linear(x, out=8)), out=3)
    output logits: [B, 3]
}
train {
    data      = iris(batch=32)
    loss      = cross_entropy(logits, y)
    metrics   = [accuracy(logits, y)]
    optimizer = adam(lr=0.01)
    epochs    = 2
    seed      = 1
}
"""


@contextmanager
def deadline(seconds: int = 20) -> Iterator[None]:
    """Fail (instead of hanging the suite) when the block blocks for longer than ``seconds``."""
    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"blocked for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def cli(*args: str) -> tuple[int, str, str]:
    with deadline():
        code, out, err = run_cli(*args)
    assert "Traceback" not in err and "internal error" not in err and "--debug" not in err, err  # no bare exception
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("hostile_run")
    spec = folder / "m.dsl"
    spec.write_text(SPEC)
    run = folder / "run"
    code, _, err = run_cli("train", str(spec), "--quiet", "--out", str(run))
    assert code == 0, err
    return str(spec), str(run)


@pytest.fixture()
def run_copy(trained, tmp_path: Path) -> tuple[str, Path]:
    spec, run = trained
    work = tmp_path / "run"
    shutil.copytree(run, work)
    return spec, work


def readers(spec: str, run: Path, tmp: Path) -> list[list[str]]:
    """Every command that reads a run directory."""
    rows = tmp / "rows.npz"
    np.savez(rows, x=np.zeros((4, 4), np.float32))
    return [
        ["eval", spec, "--ckpt", str(run)],
        ["predict", spec, "--ckpt", str(run), "--data", str(rows), "--out", str(tmp / "pred.pt")],
        ["explain", str(run), "--input", "0"],
        ["inspect", str(run)],
        ["train", spec, "--out", str(run), "--resume", "--quiet"],
        ["export", str(run), "--to", "python", "-o", str(tmp / "exported.py")],
    ]


# --------------------------------------------------------------------------- files that are not files


@pytest.mark.parametrize("name", [META_FILE, MODEL_FILE, STATE_FILE])
def test_a_fifo_in_the_run_directory_is_refused_at_once(run_copy, tmp_path: Path, name: str) -> None:
    spec, run = run_copy
    os.unlink(run / name)
    os.mkfifo(run / name)
    reads = {META_FILE: "eval predict explain inspect train export", MODEL_FILE: "eval predict explain train export",
             STATE_FILE: "train"}[name]  # inspect reads no weights; only --resume reads the optimizer state
    for argv in readers(spec, run, tmp_path):
        code, out, err = cli(*argv)
        if argv[0] not in reads.split():
            assert "E0704" not in err, (argv, err)  # (explain then finds no PrototypeHead in this model)
            continue
        assert code == 1, (argv, err)
        assert "error[E0704]" in err and name in err and "not a regular file" in err, (argv, err)
    assert stat.S_ISFIFO(os.lstat(run / name).st_mode)  # left as it was: readers write nothing


def test_meta_linked_to_dev_zero_is_refused_at_once(run_copy, tmp_path: Path) -> None:
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    spec, run = run_copy
    os.unlink(run / META_FILE)
    os.symlink("/dev/zero", run / META_FILE)
    for argv in readers(spec, run, tmp_path):
        code, _, err = cli(*argv)
        assert code == 1 and "error[E0704]" in err, (argv, err)


def test_a_file_linked_outside_the_run_directory_is_not_read(run_copy, tmp_path: Path) -> None:
    spec, run = run_copy
    outside = tmp_path / "elsewhere.safetensors"
    shutil.copy(run / MODEL_FILE, outside)  # a perfectly good file, but not the run's
    os.unlink(run / MODEL_FILE)
    os.symlink(outside, run / MODEL_FILE)
    code, _, err = cli("eval", spec, "--ckpt", str(run))
    assert code == 1 and "error[E0704]" in err and "links outside the run directory" in err


def test_preprocessing_linked_outside_the_run_is_not_read(run_copy, tmp_path: Path) -> None:
    _, run = run_copy
    outside = tmp_path / "elsewhere.json"
    shutil.copy(run / "preprocess.json", outside)
    os.unlink(run / "preprocess.json")
    os.symlink(outside, run / "preprocess.json")
    code, _, err = cli("predict", str(run), "--out", str(tmp_path / "p.npz"))
    assert code == 1 and "error[E0704]" in err and "links outside the run directory" in err


def test_explain_never_opens_the_spec_file_meta_names(run_copy, tmp_path: Path) -> None:
    _, run = run_copy
    secret = tmp_path / "secret.dsl"
    secret.write_text("root:x:0:0:SECRET-LINE:/root:/bin/bash\n")
    meta = json.loads((run / META_FILE).read_text())
    meta["spec_file"] = str(secret)
    (run / META_FILE).write_text(json.dumps(meta))
    code, out, err = cli("explain", str(run), "--input", "0", "--json")
    assert code == 1 and "SECRET-LINE" not in out + err  # no PrototypeHead here, but nothing leaked
    assert "no PrototypeHead" in err or "PrototypeHead" in err
    (run / SPEC_FILE).unlink()
    code, out, err = cli("explain", str(run), "--input", "0")
    assert code == 1 and "error[E0704]" in err and "spec.dsl" in err and "SECRET-LINE" not in out + err
    (run / SPEC_FILE).write_text(f'use "{secret}"\n' + SPEC)  # nor a file the run's copy names
    code, out, err = cli("explain", str(run), "--input", "0")
    assert code == 1 and "error[E0704]" in err and "SECRET-LINE" not in out + err


# --------------------------------------------------------------------------- inspect


@pytest.mark.parametrize("key, value", [("best", [1, 2]), ("overrides", [1, 2]), ("epoch", "three"),
                                        ("epoch", -2), ("model", {"a": 1})])
def test_inspect_refuses_meta_of_the_wrong_types(run_copy, key: str, value: object) -> None:
    _, run = run_copy
    meta = json.loads((run / META_FILE).read_text())
    meta[key] = value
    (run / META_FILE).write_text(json.dumps(meta))
    for extra in ([], ["--json"]):
        code, out, err = cli("inspect", str(run), *extra)
        assert code == 1, (out, err)
        shown = json.loads(out)[0] if extra else None
        assert (shown["code"] if shown else err) in ("E0704",) or "error[E0704]" in err
        assert META_FILE in (shown["file"] if shown else err)


@pytest.mark.parametrize("key, value", [("overrides", [1, 2]), ("dims", {"B": "many"}), ("seed", "zero")])
def test_readers_refuse_meta_settings_of_the_wrong_types(run_copy, tmp_path: Path, key: str, value: object) -> None:
    spec, run = run_copy
    meta = json.loads((run / META_FILE).read_text())
    meta[key] = value
    (run / META_FILE).write_text(json.dumps(meta))
    for argv in (["eval", spec, "--ckpt", str(run)], ["predict", str(run), "--out", str(tmp_path / "p.npz")],
                 ["export", str(run), "--to", "python", "-o", str(tmp_path / "e.py")]):
        code, _, err = cli(*argv)
        assert code == 1 and "error[E0704]" in err and f"`{key}`" in err, (argv, err)


def test_resume_refuses_tampered_metrics(run_copy) -> None:
    spec, run = run_copy
    with open(run / METRICS_FILE, "a", encoding="utf-8") as fh:
        fh.write('{"epoch": "1", "train": {"loss": "low"}}\n')
    code, _, err = cli("train", spec, "--out", str(run), "--resume", "--quiet", "--epochs", "3")
    assert code == 1 and "error[E0704]" in err and METRICS_FILE in err


@pytest.mark.parametrize("line", ["[" * 100_000, '{"epoch": 2, "experts": {"moe": "many"}}',
                                  '{"epoch": 2, "val": {"loss": "low"}}', '{"epoch": 2, "pruning": [1]}',
                                  '[1, 2]', '{"epoch": [2]}'])
def test_inspect_refuses_metrics_of_the_wrong_shape(run_copy, line: str) -> None:
    _, run = run_copy
    with open(run / METRICS_FILE, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
    code, _, err = cli("inspect", str(run))
    assert code == 1 and "error[E0704]" in err and METRICS_FILE in err


def test_inspect_shows_markup_from_the_run_as_text(run_copy) -> None:
    _, run = run_copy
    meta = json.loads((run / META_FILE).read_text())
    meta["model"] = "[/] [bold]not markup"
    (run / META_FILE).write_text(json.dumps(meta))
    code, out, _ = cli("inspect", str(run))
    assert code == 0 and "[/] [bold]not markup" in out


# --------------------------------------------------------------------------- hostile checkpoints


def test_a_negative_epoch_in_the_state_is_refused_and_keeps_the_history(run_copy) -> None:
    spec, run = run_copy
    state = torch.load(run / STATE_FILE, weights_only=True)
    state["epoch"] = -2
    torch.save(state, run / STATE_FILE)
    before = (run / METRICS_FILE).read_text()
    code, _, err = cli("train", spec, "--out", str(run), "--resume", "--quiet", "--epochs", "3")
    assert code == 1 and "error[E0704]" in err and "epoch -2" in err
    assert (run / METRICS_FILE).read_text() == before


@pytest.mark.parametrize("state", [{"epoch": 2}, {"epoch": 2, "optimizer": [], "rng": torch.zeros(3)}, [1, 2],
                                   {"epoch": 2, "optimizer": {}, "rng": torch.get_rng_state(), "best": {"x": 1}},
                                   {"epoch": 2, "optimizer": {}, "rng": torch.get_rng_state(), "watched": "0.5"}])
def test_a_state_of_the_wrong_shape_is_refused(run_copy, state: object) -> None:
    spec, run = run_copy
    torch.save(state, run / STATE_FILE)
    code, _, err = cli("train", spec, "--out", str(run), "--resume", "--quiet", "--epochs", "3")
    assert code == 1 and "error[E0704]" in err and STATE_FILE in err


def test_weights_of_another_model_are_a_diagnostic(run_copy) -> None:
    spec, run = run_copy
    save_file({"w": torch.zeros(2)}, str(run / MODEL_FILE), metadata={"epoch": "2"})
    code, _, err = cli("train", spec, "--out", str(run), "--resume", "--quiet", "--epochs", "3")
    assert code == 1 and "error[E0704]" in err and "does not fit" in err
    (run / MODEL_FILE).write_bytes(b"\xff" * 64)
    code, _, err = cli("eval", spec, "--ckpt", str(run))
    assert code == 1 and "error[E0704]" in err and "not a readable safetensors file" in err


def test_a_huge_meta_is_refused_without_reading_it(run_copy) -> None:
    from dsl.training.rundir import MAX_META_BYTES

    _, run = run_copy
    with open(run / META_FILE, "r+b") as fh:  # a sparse file: a size, no data
        fh.truncate(MAX_META_BYTES * 1024)
    code, _, err = cli("inspect", str(run))
    assert code == 1 and "error[E0704]" in err and "the limit is" in err


# --------------------------------------------------------------------------- one writer per directory


def test_a_second_writer_is_refused_at_once_naming_the_first(trained, tmp_path: Path) -> None:
    spec, _ = trained
    out = tmp_path / "busy"
    holder = RunDir(str(out))
    holder.lock()  # as a running `dsl train --out busy` holds it
    try:
        code, _, err = cli("train", spec, "--out", str(out), "--quiet")
        assert code == 1 and "error[E0705]" in err and f"process {os.getpid()}" in err
        assert os.listdir(out) == [".lock"]  # the refused run wrote nothing
    finally:
        holder.unlock()
    assert not out.exists()  # nothing was ever written: the directory goes with the lock
    code, _, err = cli("train", spec, "--out", str(out), "--quiet")
    assert code == 0, err
    assert ".lock" not in os.listdir(out)


@pytest.mark.skipif(not hasattr(os, "pread"), reason="POSIX locks")
def test_a_writer_refused_between_the_holders_lock_and_its_pid_still_names_it(tmp_path: Path) -> None:
    """The holder writes its pid just after taking the lock; a contender arriving in between
    waits for the line instead of saying "another process" (seen in a two-writer race)."""
    import fcntl
    import threading

    from dsl.training.rundir import LOCK_FILE, RunInUse

    run = tmp_path / "busy"
    run.mkdir()
    fd = os.open(run / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the holder has the lock, its pid not yet written
        threading.Timer(0.05, os.write, (fd, b"4242\n")).start()
        with pytest.raises(RunInUse, match="process 4242"):
            RunDir(str(run)).lock()
    finally:
        os.close(fd)


def test_a_second_resume_is_refused(run_copy) -> None:
    spec, run = run_copy
    holder = RunDir(str(run))
    holder.lock()
    before = (run / METRICS_FILE).read_text()
    try:
        code, _, err = cli("train", spec, "--out", str(run), "--resume", "--quiet", "--epochs", "3")
        assert code == 1 and "error[E0705]" in err and str(os.getpid()) in err
    finally:
        holder.unlock()
    assert (run / METRICS_FILE).read_text() == before
    code, _, err = cli("train", spec, "--out", str(run), "--resume", "--quiet", "--epochs", "3")
    assert code == 0, err
    assert [r["epoch"] for r in RunDir(str(run)).read_metrics()] == [1, 2, 3]


def test_a_stale_lock_file_does_not_block(run_copy) -> None:
    spec, run = run_copy
    (run / ".lock").write_text("99999999\n")  # left by a run killed with -9: nobody holds it
    code, _, err = cli("train", spec, "--out", str(run), "--resume", "--quiet", "--epochs", "3")
    assert code == 0, err
    assert not (run / ".lock").exists()


def test_a_lock_file_that_is_a_link_is_not_followed(run_copy, tmp_path: Path) -> None:
    spec, run = run_copy
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    os.symlink(victim, run / ".lock")
    code, _, err = cli("train", spec, "--out", str(run), "--resume", "--quiet", "--epochs", "3")
    assert code == 1 and victim.read_text() == "keep me\n"


# --------------------------------------------------------------------------- the commit window


def _killed_after_commit(run: Path) -> dict[str, torch.Tensor]:
    """Make ``run`` look killed between writing meta.json (epoch 2) and moving in its files: the
    committed weights wait as a pending file, the previous epoch's are in place."""
    weights, epoch = RunDir(str(run)).load_weights()
    assert epoch == 2
    os.replace(run / MODEL_FILE, run / f".pending-2-{MODEL_FILE}")
    save_file({k: torch.zeros_like(v) for k, v in weights.items()}, str(run / MODEL_FILE), metadata={"epoch": "1"})
    with open(run / METRICS_FILE, "a", encoding="utf-8") as fh:  # an epoch logged but never committed
        fh.write(json.dumps({"epoch": 3, "lr": 0.01, "train": {"loss": 9.0}}) + "\n")
    return weights


def test_readers_take_the_committed_checkpoint(trained, run_copy, tmp_path: Path) -> None:
    spec, clean = trained
    _, run = run_copy
    weights = _killed_after_commit(run)
    got, epoch = RunDir(str(run)).load_weights()
    assert epoch == 2 and all(torch.equal(got[k], weights[k]) for k in weights)
    code, out, err = cli("eval", spec, "--ckpt", str(run), "--json")
    assert code == 0, err
    assert json.loads(out) == json.loads(cli("eval", spec, "--ckpt", clean, "--json")[1])
    code, out, err = cli("inspect", str(run), "--json")
    assert code == 0 and json.loads(out)["record"]["epoch"] == 2  # not the uncommitted epoch 3
    assert os.path.exists(run / f".pending-2-{MODEL_FILE}")  # readers settle nothing on disk
    code, _, err = cli("train", spec, "--out", str(run), "--resume", "--quiet")
    assert code == 0, err  # --resume settles it (nothing left to train: 2 of 2 epochs)
    assert not [f for f in os.listdir(run) if f.startswith(".")]
    assert [r["epoch"] for r in RunDir(str(run)).read_metrics()] == [1, 2]


def test_run_errors_have_a_code() -> None:
    err = RunError("x", "E0704", "/r/meta.json")
    assert err.diagnostic() is not None and err.diagnostic().span.file == "/r/meta.json"
    assert RunError("plain").diagnostic() is None
