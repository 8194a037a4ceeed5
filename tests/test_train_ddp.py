"""A 2-process DistributedDataParallel job on CPU (gloo), through `dsl train --nproc 2`."""

from __future__ import annotations

import argparse

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
    # metrics are reduced over both ranks: the whole test split (30 rows) is counted
    acc = records[-1]["test"]["accuracy(logits, y)"]
    assert abs(acc * 30 - round(acc * 30)) < 1e-6
