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
