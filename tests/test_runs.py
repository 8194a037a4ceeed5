"""Trained runs from Python and the command line: dsl.train / dsl.load_run / Run, `dsl predict`
(no label, class and probabilities, every format, every kind of source) and `dsl eval RUN`."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from helpers import graph_classifier_spec, graph_list
from test_train import SPEC

import dsl
from dsl.training.rundir import RunDir

IRIS = SPEC  # iris, hidden=8, accuracy, 4 epochs

MOE = """
model M(classes: int = 3) {
    input x: [B, 4]
    z, balance = MoE(x, experts=4, k=2, expert=MLP(hidden=8, out=8))
    logits = Linear(z, out=classes)
    output logits: [B, classes]
    output balance
}
train {
    data   = iris(batch=32)
    loss   = cross_entropy(logits, y)
    epochs = 1
}
"""

NO_DATA = """
model R {
    input x: [B, 4]
    logits = Linear(x, out=3)
    output logits: [B, 3]
}
train {
    loss   = cross_entropy(logits, y)
    epochs = 2
    batch  = 16
}
"""


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("iris")
    spec = root / "c.dsl"
    spec.write_text(IRIS)
    return spec, Path(dsl.train(spec, out=root / "run", quiet=True).dir)


@pytest.fixture(scope="module")
def iris_rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Raw iris rows in a CSV without the label column."""
    from sklearn.datasets import load_iris

    path = tmp_path_factory.mktemp("rows") / "rows.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["a", "b", "c", "d"])
        w.writerows(load_iris().data[:12].tolist())
    return path


def weights(run: str | Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return RunDir(str(run)).load_weights(name)[0]


# --------------------------------------------------------------------------- dsl.train, Run, dsl.load_run


def test_dsl_train_writes_the_same_weights_as_dsl_train_bit_for_bit(tmp_path: Path) -> None:
    spec = tmp_path / "c.dsl"
    spec.write_text(IRIS)
    code, _, err = run_cli("train", str(spec), "--seed", "3", "--epochs", "2", "--quiet", "--out", str(tmp_path / "cli"))
    assert code == 0, err
    run = dsl.train(str(spec), out=tmp_path / "api", seed=3, epochs=2, quiet=True)
    a, b = weights(tmp_path / "cli"), weights(run.dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert RunDir(run.dir).read_meta()["seed"] == 3


def test_run_holds_its_metrics_best_epoch_and_model(iris_run, capsys) -> None:
    _, path = iris_run
    run = dsl.Run(str(path))
    assert run.dir == str(path) and len(run.metrics) == 4
    assert run.best["metric"] == "accuracy" and run.best["split"] == "val"
    model = run.model()
    assert not model.training
    x = torch.tensor([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])  # raw rows: standardised inside
    assert model(x=x).argmax(1).tolist() == [0, 2]
    with pytest.raises(dsl.InputError, match="statistics of shape"):
        model(x=torch.zeros(2, 3))
    best = run.model(best=True)
    assert torch.equal(best.model.logits.weight, weights(path, "best.safetensors")["logits.weight"])


def test_train_prints_progress_and_the_final_table(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "c.dsl"
    spec.write_text(IRIS)
    dsl.train(spec, out=tmp_path / "run", epochs=1)
    out = capsys.readouterr().out
    assert "epoch 1/1" in out and "results" in out and f"run directory: {tmp_path / 'run'}" in out


def test_train_data_as_a_source_expression_is_kept_by_the_run(tmp_path: Path) -> None:
    spec = tmp_path / "c.dsl"
    spec.write_text(IRIS)
    run = dsl.train(spec, data="wine(batch=32)", out=tmp_path / "run", epochs=1, quiet=True)
    assert RunDir(run.dir).read_meta()["data"].startswith("wine(")
    assert run.model()(x=torch.randn(5, 13)).shape == (5, 3)  # wine has 13 features: F=13
    with pytest.raises(dsl.SpecError) as info:
        dsl.train(spec, data="wine(batch=", out=tmp_path / "bad", quiet=True)
    assert "<data>" in str(info.value)


class Rows(torch.utils.data.Dataset):
    """A Dataset of dicts, as a user writes one."""

    def __init__(self) -> None:
        from sklearn.datasets import load_iris

        self.x, self.y = load_iris(return_X_y=True)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, object]:
        return {"x": torch.tensor(self.x[i], dtype=torch.float32), "y": int(self.y[i])}


def test_train_on_a_torch_dataset_of_dicts(tmp_path: Path) -> None:
    spec = tmp_path / "r.dsl"
    spec.write_text(NO_DATA)
    run = dsl.train(spec, data=Rows(), out=tmp_path / "run", quiet=True)
    assert len(run.metrics) == 2 and set(run.metrics[-1]) >= {"train", "val"} and "loss" in run.meta["test"]
    assert run.model()(x=torch.randn(4, 4)).shape == (4, 3)
    again = dsl.train(spec, data={"train": Rows(), "val": Rows()}, out=tmp_path / "two", quiet=True)
    assert "test" not in again.meta
    with pytest.raises(dsl.DslError, match="dicts of tensors"):
        dsl.train(spec, data=[(1, 2)], out=tmp_path / "bad", quiet=True)
    # the spec is checked against the dataset's fields before anything trains
    wrong = tmp_path / "w.dsl"
    wrong.write_text(NO_DATA.replace("[B, 4]", "[B, 5]"))
    with pytest.raises(dsl.SpecError, match="E0301"):
        dsl.train(wrong, data=Rows(), out=tmp_path / "w", quiet=True)


def test_import_dsl_stays_torch_free() -> None:
    import subprocess
    import sys

    code = "import sys, dsl; dsl.train; dsl.load_run; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- dsl predict


def test_predict_needs_no_label_and_writes_class_and_probabilities(iris_run, iris_rows, tmp_path: Path) -> None:
    _, run = iris_run
    code, out, err = run_cli("predict", str(run), "--data", str(iris_rows), "--out", str(tmp_path / "p.npz"))
    assert code == 0, err
    z = np.load(tmp_path / "p.npz")
    assert z["logits"].shape == (12, 3) and z["class"].tolist() == z["logits"].argmax(1).tolist()
    np.testing.assert_allclose(z["probabilities"].sum(1), 1, atol=1e-6)
    assert (z["class"] == 0).all()  # the first rows of iris are setosa

    code, _, err = run_cli("predict", str(run), "--data", str(iris_rows), "--out", str(tmp_path / "p.csv"))
    assert code == 0, err
    with open(tmp_path / "p.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["class", "prob_0", "prob_1", "prob_2", "logits_0", "logits_1", "logits_2"]
    assert len(rows) == 12 and float(rows[0]["logits_2"]) == pytest.approx(float(z["logits"][0, 2]), abs=1e-6)

    pq = pytest.importorskip("pyarrow.parquet")
    code, _, err = run_cli("predict", str(run), "--data", str(iris_rows), "--out", str(tmp_path / "p.parquet"))
    assert code == 0, err
    table = pq.read_table(tmp_path / "p.parquet").to_pydict()
    assert table["class"] == z["class"].tolist()


def test_predict_without_data_uses_the_test_split_and_best_weights(iris_run, tmp_path: Path) -> None:
    _, run = iris_run
    code, out, err = run_cli("predict", str(run), "--best", "--out", str(tmp_path / "p.npz"))
    assert code == 0, err
    assert np.load(tmp_path / "p.npz")["logits"].shape == (30, 3)  # 20% of 150 rows
    code, _, err = run_cli("predict", str(run), "--out", str(tmp_path / "p.txt"))
    assert code == 1 and ".npz, .csv, .parquet or .pt" in err
    (tmp_path / "pictures").mkdir()
    (tmp_path / "pictures" / "a.png").write_bytes(b"\x89PNG")
    for data, words in (("pictures", "is a folder"), ("pictures/a.png", "predict reads .npz, .csv"),
                        ("nothing.npz", "E0702")):
        code, _, err = run_cli("predict", str(run), "--data", str(tmp_path / data), "--out", str(tmp_path / "q.npz"))
        assert code == 1 and words in err and "E07" in err, err


def test_predict_csv_of_a_model_with_a_scalar_output(tmp_path: Path, iris_rows) -> None:
    """Regression: CSV for a model with a scalar output (the MoE balance loss) was an IndexError."""
    spec = tmp_path / "m.dsl"
    spec.write_text(MOE)
    run = dsl.train(spec, out=tmp_path / "run", quiet=True)
    code, out, err = run_cli("predict", run.dir, "--data", str(iris_rows), "--out", str(tmp_path / "p.csv"))
    assert code == 0, err
    assert "`balance` is a scalar" in err and "Traceback" not in err
    header = (tmp_path / "p.csv").read_text().splitlines()[0].split(",")
    assert header[0] == "class" and "balance" not in header and len(header) == 1 + 3 + 3
    code, _, err = run_cli("predict", run.dir, "--data", str(iris_rows), "--out", str(tmp_path / "p.npz"))
    assert np.load(tmp_path / "p.npz")["balance"].shape == ()


def test_a_checkpoint_that_does_not_fit_the_spec_says_what_differs(iris_run, tmp_path: Path, iris_rows) -> None:
    """Regression: the message stopped after "Error(s) in loading state_dict for C:"."""
    spec, run = iris_run
    other = tmp_path / "wide.dsl"
    other.write_text(IRIS.replace("param hidden = 8", "param hidden = 12").replace(
        "logits = Linear(h, out=classes)", "g = Linear(h, out=classes)\n    logits = g"))
    code, _, err = run_cli("predict", str(run), "--spec", str(other), "--data", str(iris_rows),
                           "--out", str(tmp_path / "p.npz"))
    assert code == 1 and "does not fit this spec" in err
    assert "`linear.weight` is [8, 4] in the checkpoint, [12, 4] in the model" in err
    assert "not in the checkpoint (`g.weight`, `g.bias`)" in err
    assert "not in the model (`logits.bias`, `logits.weight`)" in err


def test_predict_on_a_file_of_graphs(tmp_path: Path) -> None:
    torch.save(graph_list(12), tmp_path / "mols.pt")
    spec = tmp_path / "g.dsl"
    spec.write_text(graph_classifier_spec("mols.pt", batch=4))
    run = dsl.train(spec, out=tmp_path / "run", quiet=True)
    new = tmp_path / "new.pt"
    torch.save(graph_list(8, seed=5), new)
    code, _, err = run_cli("predict", run.dir, "--data", str(new), "--out", str(tmp_path / "p.npz"))
    assert code == 0, err
    z = np.load(tmp_path / "p.npz")
    assert z["logits"].shape == (8, 2) and z["class"].shape == (8,)  # one row per graph, over two batches


# --------------------------------------------------------------------------- dsl eval


def test_eval_reads_the_spec_from_the_run_and_reports_every_split(iris_run, capsys) -> None:
    spec, run = iris_run
    code, out, err = run_cli("eval", str(run), "--json")
    assert code == 0, err
    res = json.loads(out)
    last = RunDir(str(run)).read_metrics()[-1]
    assert set(res) == {"val", "test"}
    assert res["val"]["accuracy"] == pytest.approx(last["val"]["accuracy"])
    assert res["val"]["loss"] == pytest.approx(last["val"]["loss"])
    # the best checkpoint: by flag, or by its path; the older --ckpt form still works
    best = RunDir(str(run)).read_meta()["best"]
    for args in (("eval", str(run), "--best"), ("eval", str(run / "best.safetensors")),
                 ("eval", str(spec), "--ckpt", str(run / "best.safetensors"))):
        code, out, err = run_cli(*args, "--json")
        assert code == 0, err
        assert json.loads(out)["val"]["accuracy"] == pytest.approx(best["value"])
        # the test split training evaluated once, on the same weights
        assert json.loads(out)["test"]["accuracy"] == pytest.approx(RunDir(str(run)).read_meta()["test"]["accuracy"])
    code, _, err = run_cli("eval", str(run), "--spec", str(spec), "--set", "hidden=8", "--json")
    assert code == 0, err
    code, _, err = run_cli("eval", str(spec))
    assert code == 2 and "is a spec" in err


# --------------------------------------------------------------------------- preprocess.json


def test_preprocessing_is_saved_recomputed_for_older_runs_and_validated(iris_run, iris_rows, tmp_path) -> None:
    import shutil

    _, run = iris_run
    saved = json.loads((run / "preprocess.json").read_text())
    assert list(saved["standardize"]) == ["x"] and saved["standardize"]["x"]["shape"] == [1, 4]
    code, _, err = run_cli("predict", str(run), "--data", str(iris_rows), "--out", str(tmp_path / "a.npz"))
    assert code == 0, err
    older = tmp_path / "older"
    shutil.copytree(run, older)
    (older / "preprocess.json").unlink()  # a run from before the file: statistics from the source
    meta = json.loads((older / "meta.json").read_text())
    (older / "meta.json").write_text(json.dumps({**meta, "spec_file": str(tmp_path / "moved.dsl")}))  # its spec.dsl
    code, _, err = run_cli("predict", str(older), "--data", str(iris_rows), "--out", str(tmp_path / "b.npz"))
    assert code == 0, err
    assert np.array_equal(np.load(tmp_path / "a.npz")["logits"], np.load(tmp_path / "b.npz")["logits"])
    for bad, why in (({**saved, "standardize": {"x": {**saved["standardize"]["x"], "std": [1, 0, 1, 1]}}}, "std"),
                     ({**saved, "standardize": {"x": {**saved["standardize"]["x"], "shape": [1, 5]}}}, "needs 5"),
                     ({**saved, "standardize": {"x y": saved["standardize"]["x"]}}, "identifier"),
                     ([1, 2], "valid")):
        (older / "preprocess.json").write_text(json.dumps(bad))
        code, _, err = run_cli("predict", str(older), "--data", str(iris_rows), "--out", str(tmp_path / "c.npz"))
        assert code == 1 and "not a valid preprocessing file" in err and why in err and "Traceback" not in err
    (older / "preprocess.json").unlink()
    os.mkfifo(older / "preprocess.json")  # never read: it would block
    code, _, err = run_cli("predict", str(older), "--data", str(iris_rows), "--out", str(tmp_path / "c.npz"))
    assert code == 1 and "not a regular file" in err
