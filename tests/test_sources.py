"""Bring your own data: table() (CSV, Parquet), images(), pyg() and a Python Dataset of dicts.

Each source is tested on files the test writes: it declares its fields before any
tensor exists (so `dsl check` proves the model fits), trains to a floor, and refuses
a bad file with a diagnostic that has a code and a position.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

import dsl
from dsl.checking.analysis import analyse

# --------------------------------------------------------------------------- tables


def _frame(n: int = 240, seed: int = 0):
    """Two numbers and a colour; the class is the colour's, flipped when a + b > 0.
    No model reaches it without the colour: a string column the model must embed."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], n)
    y = ((color == "red").astype(int) + (a + b > 0).astype(int)) % 2
    return pd.DataFrame({"a": a.round(4), "color": color, "b": b.round(4), "label": y})


TABLE_SPEC = """
model Tab(hidden: int = 32) {
    input x: [B, F]
    input color: [B] long
    e = Embedding(color, num=N_color, dim=4)
    h = relu(Linear(cat(x, e, dim=-1), out=hidden))
    logits = Linear(h, out=N_y)
    output logits: [B, N_y]
}
train {
    data      = table("DATA", label="label", categorical=["color"], batch=32)
    loss      = cross_entropy(logits, y)
    metrics   = [accuracy(logits, y), f1(logits, y)]
    optimizer = adam(lr=0.02)
    epochs    = 12
}
"""


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tables")
    frame = _frame()
    frame.to_csv(folder / "rows.csv", index=False)
    frame.to_parquet(folder / "rows.parquet")
    return folder


def _spec(folder: Path, data: str, text: str = TABLE_SPEC, name: str = "spec.dsl") -> str:
    path = folder / name
    path.write_text(text.replace("DATA", data))
    return str(path)


@pytest.mark.parametrize("data", ["rows.csv", "rows.parquet"])
def test_a_table_declares_its_fields_and_category_sizes(tables, data) -> None:
    a = analyse(dsl.load(_spec(tables, data)))
    assert a.ok, a.diagnostics
    assert {k: (str(t.shape), t.dtype) for k, t in a.fields.items()} == {
        "x": ("(B, 2)", "float"), "color": ("(B,)", "long"), "y": ("(B,)", "long")}
    assert a.constants["N_color"] == 3 and a.constants["N_y"] == 2


@pytest.mark.parametrize("data", ["rows.csv", "rows.parquet"])
def test_a_table_with_a_string_column_trains(tables, data, tmp_path) -> None:
    out = tmp_path / "run"
    code, _, err = run_cli("train", _spec(tables, data), "--quiet", "--out", str(out))
    assert code == 0, err
    meta = json.loads((out / "meta.json").read_text())
    assert meta["test"]["accuracy"] >= 0.85, meta["test"]
    preprocess = json.loads((out / "preprocess.json").read_text())
    assert preprocess["vocabularies"] == {"color": ["blue", "green", "red"]}
    assert preprocess["columns"] == {"x": ["a", "b"]}  # x's features, in order, by column name
    # predictions from raw rows: text categories, no label
    import pandas as pd

    rows = _frame(6, seed=1).drop(columns=["label"])
    suffix = Path(data).suffix
    inputs = tmp_path / f"inputs{suffix}"
    rows.to_csv(inputs, index=False) if suffix == ".csv" else rows.to_parquet(inputs)
    code, _, err = run_cli("predict", str(out), "--data", str(inputs), "--out", str(tmp_path / "p.csv"))
    assert code == 0, err
    predicted = pd.read_csv(tmp_path / "p.csv")
    assert len(predicted) == 6
    # columns are matched by name: another order predicts the same; a renamed one is an error
    reordered = rows[["b", "color", "a"]]
    reordered.to_csv(inputs, index=False) if suffix == ".csv" else reordered.to_parquet(inputs)
    code, _, err = run_cli("predict", str(out), "--data", str(inputs), "--out", str(tmp_path / "r.csv"))
    assert code == 0, err
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "r.csv"), predicted)
    renamed = rows.rename(columns={"b": "zzz"})
    renamed.to_csv(inputs, index=False) if suffix == ".csv" else renamed.to_parquet(inputs)
    code, _, err = run_cli("predict", str(out), "--data", str(inputs), "--out", str(tmp_path / "s.csv"))
    assert code == 1 and "E0703" in err and "lacks the numeric column(s) `b`" in err and "`zzz`" in err, err
    rows.loc[2, "color"] = "purple"
    rows.to_csv(inputs, index=False) if suffix == ".csv" else rows.to_parquet(inputs)
    code, _, err = run_cli("predict", str(out), "--data", str(inputs), "--out", str(tmp_path / "q.csv"))
    assert code == 1 and "E0703" in err and "'purple', a category the training data did not have" in err


def test_a_trained_run_predicts_and_exports_without_its_training_data(tmp_path) -> None:
    """The run records its data's fields and sizes (N_color, N_y): a run shipped without the
    CSV it learnt from still rebuilds its model; evaluating it needs the data, and says so."""
    _frame(60).to_csv(tmp_path / "rows.csv", index=False)
    out = tmp_path / "run"
    code, _, err = run_cli("train", _spec(tmp_path, "rows.csv", TABLE_SPEC.replace("epochs    = 12", "epochs = 1")),
                           "--quiet", "--out", str(out))
    assert code == 0, err
    meta = json.loads((out / "meta.json").read_text())
    assert meta["data_sizes"] == {"N_color": 3, "N_y": 2} and meta["fields"]["x"]["shape"] == ["B", 2]
    _frame(5, seed=1).drop(columns=["label"]).to_csv(tmp_path / "new.csv", index=False)
    (tmp_path / "rows.csv").unlink()
    code, _, err = run_cli("predict", str(out), "--data", str(tmp_path / "new.csv"), "--out", str(tmp_path / "p.csv"))
    assert code == 0, err
    code, _, err = run_cli("export", str(out), "--to", "python", "-o", str(tmp_path / "m.py"))
    assert code == 0, err
    assert dsl.load_run(out)(x=torch.randn(3, 2), color=torch.tensor([0, 1, 2])).shape == (3, 2)
    code, _, err = run_cli("eval", str(out))
    assert code == 1 and "E0702" in err and "rows.csv" in err
    meta["data_sizes"] = {"N_color": "three"}
    (out / "meta.json").write_text(json.dumps(meta))
    code, _, err = run_cli("predict", str(out), "--data", str(tmp_path / "new.csv"), "--out", str(tmp_path / "q.csv"))
    assert code == 1 and "E0704" in err and "not a valid record of the data" in err


def test_predict_names_a_text_label(tmp_path) -> None:
    import pandas as pd

    frame = _frame(60)
    frame["label"] = frame["label"].map({0: "no", 1: "yes"})
    frame.to_csv(tmp_path / "rows.csv", index=False)
    text = TABLE_SPEC.replace('categorical=["color"]', 'categorical=["color", "label"]')
    out = tmp_path / "run"
    code, _, err = run_cli("train", _spec(tmp_path, "rows.csv", text.replace("epochs    = 12", "epochs = 1")),
                           "--quiet", "--out", str(out))
    assert code == 0, err
    frame.drop(columns=["label"]).head(8).to_csv(tmp_path / "new.csv", index=False)
    for suffix in (".csv", ".npz"):
        target = tmp_path / f"p{suffix}"
        code, _, err = run_cli("predict", str(out), "--data", str(tmp_path / "new.csv"), "--out", str(target))
        assert code == 0, err
        got = pd.read_csv(target) if suffix == ".csv" else dict(np.load(target))
        labels, classes = list(got["label"]), list(got["class"])
        assert len(labels) == 8 and labels == [["no", "yes"][c] for c in classes]


def _diagnostics(spec: str, *args: str) -> list[dict]:
    """``dsl check --json``'s diagnostics: a data problem is the only one (the sizes the data
    would declare, `N_color` and `N_y`, are not reported unknown besides it)."""
    code, out, _ = run_cli("check", "--json", spec, *args)
    assert code == 1
    return json.loads(out)


def test_a_string_column_not_declared_categorical_is_refused_at_its_cell(tables) -> None:
    spec = _spec(tables, "rows.csv", TABLE_SPEC.replace(', categorical=["color"]', ""), "plain.dsl")
    [d] = _diagnostics(spec)
    first = (tables / "rows.csv").read_text().splitlines()[1]
    assert d["code"] == "E0703" and d["file"].endswith("rows.csv") and d["line"] == 2
    assert d["col"] == first.index(first.split(",")[1]) + 1 and "categorical" in d["message"]


def test_a_parquet_string_column_not_declared_is_refused(tables) -> None:
    spec = _spec(tables, "rows.parquet", TABLE_SPEC.replace(', categorical=["color"]', ""), "plain.dsl")
    [d] = _diagnostics(spec)
    assert d["code"] == "E0703" and "`color`" in d["message"] and "categorical" in d["message"]
    data_line = next(i for i, line in enumerate(Path(spec).read_text().splitlines(), 1) if "table(" in line)
    assert d["file"] == spec and d["line"] == data_line  # the spec's `data = ...`


def test_a_label_outside_the_classes_is_refused_at_its_cell(tmp_path) -> None:
    frame = _frame(30)
    frame.loc[7, "label"] = 5
    frame.to_csv(tmp_path / "bad.csv", index=False)
    spec = _spec(tmp_path, "bad.csv", TABLE_SPEC.replace('label="label"', 'label="label", classes=2'))
    [d] = _diagnostics(spec)
    line = (tmp_path / "bad.csv").read_text().splitlines()[8]
    assert d["code"] == "E0703" and d["line"] == 9 and d["col"] == line.rindex(",") + 2
    assert "outside the classes 0..1" in d["message"]


def test_parquet_labels_and_missing_values_are_refused_by_row(tmp_path) -> None:
    frame = _frame(30)
    frame.loc[4, "label"] = -1
    frame.to_parquet(tmp_path / "bad.parquet")
    [d] = _diagnostics(_spec(tmp_path, "bad.parquet"))
    assert d["code"] == "E0703" and "row 4" in d["message"]
    frame = _frame(30)
    frame.loc[3, "a"] = None
    frame.to_parquet(tmp_path / "gap.parquet")
    [d] = _diagnostics(_spec(tmp_path, "gap.parquet", name="gap.dsl"))
    assert d["code"] == "E0703" and "missing" in d["message"] and "`a`" in d["message"]


def test_a_missing_categorical_column_is_named(tables) -> None:
    spec = _spec(tables, "rows.csv", TABLE_SPEC.replace('["color"]', '["colour"]'), "typo.dsl")
    [d] = _diagnostics(spec)
    assert d["code"] == "E0703" and "`colour`" in d["message"] and d["line"] == 1
    assert "did you mean `color`?" in d["message"]


def test_a_field_of_the_wrong_dtype_is_shown_as_the_data_declares_it(tables) -> None:
    spec = _spec(tables, "rows.csv", TABLE_SPEC.replace("input color: [B] long", "input color: [B]"), "float.dsl")
    mismatch = [d for d in _diagnostics(spec) if "the data gives long" in d["message"]]
    assert len(mismatch) == 1 and mismatch[0]["label"] == "the data's `color` is long"
    assert "data field `color` of table() is [B] long" in mismatch[0]["notes"]  # the data's own B, not a renamed one


@pytest.mark.parametrize("column", ["x", "class", "model"])
def test_a_categorical_column_must_be_able_to_name_a_model_input(tmp_path, column) -> None:
    _frame(30).rename(columns={"color": column}).to_csv(tmp_path / "rows.csv", index=False)
    text = TABLE_SPEC.replace('["color"]', f'["{column}"]')
    [d] = _diagnostics(_spec(tmp_path, "rows.csv", text))
    assert d["code"] == "E0703" and f"categorical column `{column}` becomes a field" in d["message"]


def test_splits_that_leave_no_rows_are_refused_by_check(tables, tmp_path) -> None:
    [d] = _diagnostics(_spec(tables, "rows.csv"), "--set", "val=0.9")
    assert d["code"] == "E0401" and "val=0.9 and test=0.2" in d["message"] and "below 1" in d["message"]
    _frame(2).to_csv(tmp_path / "two.csv", index=False)
    [d] = _diagnostics(_spec(tmp_path, "two.csv"))
    assert d["code"] == "E0703" and "has 2 rows: too few to split" in d["message"]
    [d] = _diagnostics(_spec(tables, "rows.csv", TABLE_SPEC.replace("batch=32", "batch=32, stratify=true")))
    assert d["code"] == "E0402" and "`stratify`" in d["message"]


# --------------------------------------------------------------------------- images


IMAGES_SPEC = """
model Pixels(hidden: int = 64) {
    input x: [B, C, H, W]
    h = relu(Linear(flatten(x, start=1), out=hidden))
    logits = Linear(h, out=N_y)
    output logits: [B, N_y]
}
train {
    data      = images("digits", batch=32)
    loss      = cross_entropy(logits, y)
    metrics   = [accuracy(logits, y)]
    optimizer = adam(lr=0.01)
    epochs    = 15
}
"""


@pytest.fixture(scope="module")
def digit_images(tmp_path_factory) -> Path:
    """PNGs of scikit-learn's 8x8 digits (the first 600), one folder per digit."""
    from PIL import Image
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("images")
    digits = load_digits()
    for i, (img, label) in enumerate(zip(digits.images[:600], digits.target[:600], strict=True)):
        target = folder / "digits" / str(label)
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img * 255 / 16).astype(np.uint8), mode="L").save(target / f"{i}.png")
    return folder


def test_images_declare_channels_and_size_from_the_headers(digit_images) -> None:
    path = digit_images / "spec.dsl"
    path.write_text(IMAGES_SPEC)
    a = analyse(dsl.load(str(path)))
    assert a.ok, a.diagnostics
    assert str(a.fields["x"].shape) == "(B, 1, 8, 8)" and a.constants["N_y"] == 10


def test_a_folder_of_pngs_trains(digit_images, tmp_path) -> None:
    path = digit_images / "spec.dsl"
    path.write_text(IMAGES_SPEC)
    out = tmp_path / "run"
    code, _, err = run_cli("train", str(path), "--quiet", "--out", str(out))
    assert code == 0, err
    assert json.loads((out / "meta.json").read_text())["test"]["accuracy"] >= 0.85


def test_a_folder_too_small_to_split_is_refused_by_check(tmp_path) -> None:
    from PIL import Image

    for label in ("0", "1"):  # one image per class: nothing left for validation or testing
        (tmp_path / "digits" / label).mkdir(parents=True)
        Image.new("L", (8, 8)).save(tmp_path / "digits" / label / "a.png")
    (tmp_path / "spec.dsl").write_text(IMAGES_SPEC)
    [d] = _diagnostics(str(tmp_path / "spec.dsl"))
    assert d["code"] == "E0703" and "has 2 images: too few to split" in d["message"]


def test_an_image_of_another_size_or_a_stray_file_is_refused(digit_images, tmp_path) -> None:
    import shutil

    from PIL import Image

    bad = tmp_path / "digits"
    shutil.copytree(digit_images / "digits", bad)
    Image.new("L", (9, 8)).save(bad / "3" / "wide.png")
    (tmp_path / "spec.dsl").write_text(IMAGES_SPEC)
    [d] = _diagnostics(str(tmp_path / "spec.dsl"))
    assert d["code"] == "E0703" and "wide.png is 9x8 pixels" in d["message"]
    os.remove(bad / "3" / "wide.png")
    (bad / "4" / "notes.txt").write_text("not an image")
    [d] = _diagnostics(str(tmp_path / "spec.dsl"))
    assert d["code"] == "E0703" and "notes.txt is not an image" in d["message"]
    (bad / "4" / "notes.txt").unlink()
    (bad / "4" / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 8)
    [d] = _diagnostics(str(tmp_path / "spec.dsl"))
    assert d["code"] == "E0703" and "fake.png is not a readable" in d["message"]


# --------------------------------------------------------------------------- pyg


PYG_SPEC = """
model Graphs(hidden: int = 32, classes: int = 2) {
    input x: [N, F]
    input edge_index: [2, E] long
    input batch: [N] long
    h = relu(GAT(x, edge_index, out=hidden))
    g = global_mean_pool(h, batch)
    logits = Linear(g, out=classes)
    output logits: [G, classes]
}
train {
    data      = pyg("TUDataset", root="tu", name="SYN", batch=16)
    loss      = cross_entropy(logits, y)
    metrics   = [accuracy(logits, y)]
    optimizer = adam(lr=0.01)
    epochs    = 10
}
"""


def _write_tu(root: Path, graphs: int = 120, seed: int = 0) -> None:
    """A TUDataset in its raw text format: class 1 graphs are rings, class 0 stars; node
    labels are noisy degrees."""
    rng = np.random.default_rng(seed)
    raw = root / "SYN" / "raw"
    raw.mkdir(parents=True)
    edges, indicator, labels, node_labels = [], [], [], []
    first = 1
    for g in range(graphs):
        n, label = int(rng.integers(5, 9)), g % 2
        pairs = [(i, (i + 1) % n) for i in range(n)] if label else [(0, i) for i in range(1, n)]
        for u, v in pairs:
            edges += [(first + u, first + v), (first + v, first + u)]
        degree = np.bincount([u for u, _ in pairs] + [v for _, v in pairs], minlength=n)
        node_labels += [int(min(d, 3)) for d in degree]
        indicator += [g + 1] * n
        labels.append(label)
        first += n
    (raw / "SYN_A.txt").write_text("".join(f"{u}, {v}\n" for u, v in edges))
    (raw / "SYN_graph_indicator.txt").write_text("".join(f"{i}\n" for i in indicator))
    (raw / "SYN_graph_labels.txt").write_text("".join(f"{y}\n" for y in labels))
    (raw / "SYN_node_labels.txt").write_text("".join(f"{v}\n" for v in node_labels))


@pytest.fixture(scope="module")
def tu_root(tmp_path_factory) -> Path:
    from torch_geometric.datasets import TUDataset

    folder = tmp_path_factory.mktemp("pyg")
    _write_tu(folder / "tu")
    TUDataset(str(folder / "tu"), name="SYN")  # materialise processed/ as PyG does
    (folder / "spec.dsl").write_text(PYG_SPEC)
    return folder


def test_a_pyg_dataset_on_disk_declares_its_fields_without_torch(tu_root) -> None:
    import subprocess
    import sys

    code = (
        "import sys, dsl\n"
        f"a = dsl.api.analyse(dsl.load({str(tu_root / 'spec.dsl')!r}))\n"
        "assert a.ok, a.diagnostics\n"
        "print({k: str(t) for k, t in a.fields.items()})\n"
        "assert 'torch' not in sys.modules and 'torch_geometric' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    fields = eval(out.stdout)  # noqa: S307 - our own subprocess's dict of strings
    assert fields["x"].startswith("[N, 3]") and fields["y"].startswith("[G]") and fields["batch"].startswith("[N]")


def test_a_pyg_graph_dataset_trains(tu_root, tmp_path) -> None:
    out = tmp_path / "run"
    code, _, err = run_cli("train", str(tu_root / "spec.dsl"), "--quiet", "--out", str(out))
    assert code == 0, err
    assert json.loads((out / "meta.json").read_text())["test"]["accuracy"] >= 0.9


def test_a_one_graph_pyg_dataset_gets_masks(tmp_path) -> None:
    spec = tmp_path / "karate.dsl"
    spec.write_text(PYG_SPEC.replace('pyg("TUDataset", root="tu", name="SYN", batch=16)', 'pyg("KarateClub")')
                    .replace("    input batch: [N] long\n", "").replace("g = global_mean_pool(h, batch)\n", "")
                    .replace("Linear(g, out=classes)", "Linear(h, out=classes)").replace("[G, classes]", "[N, classes]")
                    .replace("classes: int = 2", "classes: int = 4")
                    .replace("cross_entropy(logits, y)", "cross_entropy(logits, y, mask=train_mask)")
                    .replace("epochs    = 10", "epochs    = 30"))
    out = tmp_path / "run"
    code, _, err = run_cli("train", str(spec), "--quiet", "--out", str(out))
    assert code == 0, err
    meta = json.loads((out / "meta.json").read_text())
    assert meta["test"]["weights"] == "best" and meta["test"]["accuracy"] >= 0.5


def test_pyg_refuses_foreign_objects_and_downloads(tu_root, tmp_path) -> None:
    import shutil

    bad = tmp_path / "tu"
    shutil.copytree(tu_root / "tu", bad)
    torch.save({"f": os.getcwd}, bad / "SYN" / "processed" / "extra.pt")  # a pickled function
    (tmp_path / "spec.dsl").write_text(PYG_SPEC)
    code, _, err = run_cli("train", str(tmp_path / "spec.dsl"), "--quiet", "--out", str(tmp_path / "r"))
    assert code == 1 and "E0703" in err and "refused to load" in err and "extra.pt" in err
    (tmp_path / "gone.dsl").write_text(PYG_SPEC.replace('name="SYN"', 'name="MUTAG"'))
    (tmp_path / "tu" / "MUTAG").mkdir()
    os.remove(bad / "SYN" / "processed" / "extra.pt")
    code, _, err = run_cli("train", str(tmp_path / "gone.dsl"), "--quiet", "--out", str(tmp_path / "r2"))
    assert code == 1 and "never downloads" in err


def test_pyg_names_only_dataset_classes(tu_root) -> None:
    spec = tu_root / "typo.dsl"
    spec.write_text(PYG_SPEC.replace('"TUDataset"', '"TuDataset"'))
    [d] = _diagnostics(str(spec))
    assert d["code"] == "E0401" and "TUDataset" in (d["message"] + (d["help"] or ""))


# --------------------------------------------------------------------------- a Python dataset


def test_a_python_dataset_of_dicts_trains_through_a_dataloader(tmp_path) -> None:
    """`dsl.train(spec, data=dataset)` (dsl.training.pydata) batches through a DataLoader."""
    from test_runs import NO_DATA, Rows

    from dsl.data.loading import LoaderDataset
    from dsl.training.pydata import adapt

    assert isinstance(adapt(Rows(), 16, 0), LoaderDataset)
    spec = dsl.loads(NO_DATA.replace("epochs = 2", "epochs = 30\n    optimizer = adam(lr=0.05)\n"
                                     "    metrics = [accuracy(logits, y)]"), file=str(tmp_path / "rows.dsl"))
    run = dsl.train(spec, data=Rows(), out=str(tmp_path / "run"), quiet=True)
    assert run.meta["test"]["accuracy"] >= 0.9
    code, _, err = run_cli("predict", str(tmp_path / "run"), "--out", str(tmp_path / "p.csv"))
    assert code == 1 and "E0501" in err and "trained on a Python Dataset" in err and "--data FILE" in err
