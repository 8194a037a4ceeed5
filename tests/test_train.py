"""The trainer and the train/eval/predict commands: determinism, resume, run directory, DDP."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest
import torch
from conftest import SPECS, run_cli
from helpers import command_args, prepared
from torch import nn

from dsl.blocks.nn import losses as L
from dsl.checking.train.metrics import METRICS
from dsl.checking.train.objective import MetricUse
from dsl.cli.training import cmd_eval, cmd_predict, cmd_train
from dsl.language.diagnostics import NO_SPAN
from dsl.training import metrics as M
from dsl.training.rundir import RunDir

SPEC = """
param hidden = 8
model C(classes: int = 3) {
    input x: [B, F]
    h = relu(Linear(x, out=hidden))
    logits = Linear(h, out=classes)
    output logits: [B, classes]
}
train {
    data      = iris(batch=16)
    loss      = cross_entropy(logits, y)
    metrics   = [accuracy(logits, y)]
    optimizer = adam(lr=0.05)
    schedule  = step(step_size=1, gamma=0.7)
    epochs    = 4
    seed      = 0
}
"""


def ns(**kw: object) -> argparse.Namespace:
    return command_args("train", **kw)


@pytest.fixture()
def spec_file(tmp_path):
    p = tmp_path / "c.dsl"
    p.write_text(SPEC)
    return str(p)


def strip(records):
    return [{k: v for k, v in r.items() if k != "time"} | {"train": {k: v for k, v in r["train"].items()
            if k != "throughput"}} for r in records]


def weights(path: str) -> dict[str, torch.Tensor]:
    return RunDir(path).load_weights()[0]


def test_run_directory_and_same_seed_same_metrics(spec_file, tmp_path) -> None:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert cmd_train(ns(file=spec_file, out=a)) == 0
    assert cmd_train(ns(file=spec_file, out=b)) == 0
    for name in ("spec.dsl", "model.safetensors", "state.pt", "metrics.jsonl", "meta.json"):
        assert os.path.exists(os.path.join(a, name)), name
    ra, rb = RunDir(a).read_metrics(), RunDir(b).read_metrics()
    assert len(ra) == 4 and "accuracy" in ra[-1]["val"] and "test" not in ra[-1]  # test: once, at the end
    assert strip(ra) == strip(rb)
    meta = RunDir(a).read_meta()
    assert meta["epoch"] == 4 and meta["seed"] == 0 and len(meta["spec_hash"]) == 64 and meta["dims"] == {"F": 4}
    assert "torch" in meta["versions"] and meta["best"]["metric"] == "accuracy"
    assert meta["test"]["epoch"] == meta["best"]["epoch"] and meta["test"]["weights"] == "best"
    assert meta["test"] == RunDir(b).read_meta()["test"]
    assert ra[-1]["val"]["accuracy"] > 0.6  # it learns


def test_resume_matches_straight_run(spec_file, tmp_path) -> None:
    straight, split = str(tmp_path / "s"), str(tmp_path / "k")
    assert cmd_train(ns(file=spec_file, out=straight)) == 0
    assert cmd_train(ns(file=spec_file, out=split, epochs=2)) == 0
    assert RunDir(split).read_meta()["epoch"] == 2
    assert cmd_train(ns(file=spec_file, out=split, resume=True)) == 0
    wa, wb = weights(straight), weights(split)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert strip(RunDir(straight).read_metrics()) == strip(RunDir(split).read_metrics())


def test_resume_refuses_changed_spec(spec_file, tmp_path, capsys) -> None:
    out = str(tmp_path / "r")
    assert cmd_train(ns(file=spec_file, out=out, epochs=1)) == 0
    assert cmd_train(ns(file=spec_file, out=out, resume=True, set=["hidden=4"])) == 1
    assert "spec hash differs" in capsys.readouterr().err
    # and a fresh run into an existing directory is refused too
    assert cmd_train(ns(file=spec_file, out=out)) == 1


def test_spec_errors_exit_1_without_traceback(tmp_path, capsys) -> None:
    p = tmp_path / "bad.dsl"
    p.write_text(SPEC.replace("iris(batch=16)", "irs()"))
    assert cmd_train(ns(file=str(p), out=str(tmp_path / "x"))) == 1
    err = capsys.readouterr().err
    assert "E0502" in err and "Traceback" not in err


def test_eval_and_predict(spec_file, tmp_path, capsys) -> None:
    import numpy as np

    out = str(tmp_path / "e")
    assert cmd_train(ns(file=spec_file, out=out, epochs=1)) == 0  # one epoch: the best is the last
    capsys.readouterr()
    assert cmd_eval(argparse.Namespace(file=spec_file, ckpt=out, set=[], dim=[], device="cpu", json=True,
                                       debug=False)) == 0
    res = json.loads(capsys.readouterr().out)
    tested = RunDir(out).read_meta()["test"]
    assert res["test"]["accuracy"] == pytest.approx(tested["accuracy"])
    data = tmp_path / "in.npz"
    np.savez(data, x=np.random.rand(7, 4).astype(np.float32))
    pred = str(tmp_path / "pred.npz")
    assert cmd_predict(argparse.Namespace(file=spec_file, ckpt=out, data=str(data), out=pred, set=[], dim=[],
                                          device="cpu", json=False, debug=False)) == 0
    assert np.load(pred)["logits"].shape == (7, 3)


def test_seed_flag_overrides_the_train_section_and_eval_reads_it_back(spec_file, tmp_path, capsys) -> None:
    a, b = str(tmp_path / "s0"), str(tmp_path / "s1")
    assert cmd_train(ns(file=spec_file, out=a, epochs=1)) == 0
    assert cmd_train(ns(file=spec_file, out=b, epochs=1, seed=1)) == 0
    assert RunDir(b).read_meta()["seed"] == 1
    last = RunDir(b).read_metrics()[-1]
    assert strip([last]) != strip(RunDir(a).read_metrics()[-1:])  # another split and init
    capsys.readouterr()
    assert cmd_eval(argparse.Namespace(file=spec_file, ckpt=b, set=[], dim=[], device="cpu", json=True,
                                       debug=False)) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["test"]["accuracy"] == pytest.approx(RunDir(b).read_meta()["test"]["accuracy"])


def test_early_stop_stops(spec_file, tmp_path) -> None:
    p = tmp_path / "es.dsl"
    p.write_text(SPEC.replace("adam(lr=0.05)", "sgd(lr=1e-12)").replace("epochs    = 4", "epochs = 10\n"
                 "early_stop = early_stop(metric=accuracy, patience=2)"))
    out = str(tmp_path / "es")
    assert cmd_train(ns(file=str(p), out=out)) == 0
    meta = RunDir(out).read_meta()
    assert meta["epoch"] == 3 and meta["stopped_early"] is True


class AuxModel(nn.Module):
    """Hand-written stand-in for a compiled model with an auxiliary loss."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.dsl_aux_weights = {"aux:gate.balance": 0.5}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.lin(x)
        return {"logits": logits, "aux:gate.balance": self.lin.weight.pow(2).sum()}


class AuxStep(nn.Module):
    """The training step of ``AuxModel``: its loss and auxiliary loss, as the compiled step returns them."""

    def __init__(self, model: AuxModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(x)
        return {"loss": torch.nn.functional.cross_entropy(out["logits"], y), "aux:gate.balance": out["aux:gate.balance"]}


def test_aux_losses_added_and_reported() -> None:
    from dsl.data import lookup_source
    from dsl.training.trainer import Trainer

    cfg = prepared(SPEC, epochs=1).cfg
    src = lookup_source("iris")
    data = src.load(src.params(batch=200), 0)  # one batch: one step
    torch.manual_seed(0)
    model = AuxModel()
    before = model.lin.weight.detach().clone()
    trainer = Trainer(model, AuxStep(model), cfg, [], data, verbose=False)
    hist = trainer.fit()
    assert "aux:gate.balance" in hist[0]["train"]
    # the gradient step included d(0.5 * |W|^2)/dW = W: compare with a manual step
    torch.manual_seed(0)
    ref = AuxModel()
    assert torch.equal(ref.lin.weight, before)
    opt = torch.optim.Adam(ref.parameters(), lr=0.05)
    batch = next(iter(data.batches("train", 0)))
    out = ref(x=batch["x"])
    loss = torch.nn.functional.cross_entropy(out["logits"], batch["y"]) + 0.5 * out["aux:gate.balance"]
    loss.backward()
    opt.step()
    assert torch.allclose(ref.lin.weight, model.lin.weight)


def test_masked_losses_and_metrics() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    y = torch.tensor([0, 0, 1])
    mask = torch.tensor([True, True, False])
    use = MetricUse("accuracy", METRICS["accuracy"], ["m.logits", "m.target", "m.mask"], {}, True, NO_SPAN)
    split = M.SplitMetrics([use], torch.device("cpu"))
    split.update({"loss": torch.tensor(1.0), "m.logits": logits, "m.target": y, "m.mask": mask}, 3)
    assert split.compute()["accuracy"] == 0.5  # the masked-out third row does not count
    ce = L.cross_entropy(logits, y, mask=mask)
    assert torch.allclose(ce, torch.nn.functional.cross_entropy(logits[:2], y[:2]))
    empty = L.cross_entropy(logits, y, mask=torch.zeros(3, dtype=torch.bool))
    assert float(empty) == 0.0
    d = torch.tensor([[1.0, 5.0, 2.0, 0.5]])  # per_class=2: protos 0,1 class 0; 2,3 class 1
    assert float(L.cluster_cost(d, torch.tensor([0]), per_class=2)) == 1.0
    assert float(L.separation_cost(d, torch.tensor([0]), per_class=2)) == 0.5


def test_training_a_model_without_weights_is_a_clear_error(tmp_path, capsys) -> None:
    p = tmp_path / "w.dsl"
    p.write_text(SPEC.replace("h = relu(Linear(x, out=hidden))\n    logits = Linear(h, out=classes)",
                              "logits = relu(x)").replace("param hidden = 8\n", "").replace("classes: int = 3", "classes: int = 4"))
    assert cmd_train(ns(file=str(p), out=str(tmp_path / "w"), epochs=1)) == 1
    err = capsys.readouterr().err
    assert "no trainable parameters" in err and "Traceback" not in err


def test_labels_past_the_classes_of_a_built_in_source_are_a_diagnostic(tmp_path: Path) -> None:
    """digits() has ten classes; the classifier made to score five gets a warning from the
    check and E0703 from `dsl train` when the data loads, before anything trains (it was
    torch's IndexError from inside the loss)."""
    spec, five = str(SPECS / "classifier.dsl"), ("--set", "classes=5")
    code, out, _ = run_cli("check", "--json", spec, *five)
    assert code == 0 and [(d["code"], d["severity"]) for d in json.loads(out)] == [("E0703", "warning")]
    code, _, err = run_cli("train", spec, *five, "--epochs", "1", "--quiet", "--out", str(tmp_path / "run"))
    assert code == 1 and "error[E0703]" in err and "of digits() is outside the 5 classes" in err, err


def test_ids_past_an_embedding_are_a_warning_at_check(tmp_path: Path) -> None:
    """chars() ids run to 95: an Embedding of 64 rows is named at its call by `dsl check`
    (the runtime guard refuses the first batch that reaches a row past it)."""
    spec = tmp_path / "lm.dsl"
    spec.write_text("""model LM {
    input tokens: [B, T] long
    h = Embedding(tokens, num=64, dim=32)
    logits = Linear(h, out=96)
    output logits
}
train {
    data = chars(context=32, batch=16, chars=5000)
    loss = cross_entropy(logits, next)
}
""")
    code, out, _ = run_cli("check", "--json", str(spec))
    [d] = json.loads(out)
    assert code == 0 and (d["code"], d["severity"], d["line"]) == ("E0703", "warning", 3)
    assert "`tokens` of chars() holds values up to 95, but `Embedding` takes indices below 64" in d["message"]
