"""Data sources: static declarations agree with loaded batches; splits, generators, files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import graph_classifier_spec, graph_list

from dsl.data import lookup_source, source_names
from dsl.data.base import collate_graphs
from dsl.language.shapes import Sym

SMALL = {
    "digits": {"batch": 32},
    "iris": {},
    "wine": {},
    "breast_cancer": {},
    "karate": {},
    "sbm": {"blocks": 3, "size": 10, "features": 4},
    "dictionary_lookup": {"k": 4, "graphs": 20, "eval_graphs": 5, "batch": 4},
    "mil_bags": {"bags": 20, "eval_bags": 10, "batch": 4},
    "episodes": {"ways": 3, "shots": 2, "queries": 3, "episodes": 4, "eval_episodes": 2},
    "chars": {"context": 16, "batch": 4, "chars": 2000},
}

TORCH_DTYPES = {"float": torch.float32, "long": torch.int64, "bool": torch.bool}


def test_declaring_sources_imports_no_torch() -> None:
    code = (
        "import sys, dsl.data, dsl.checking.train\n"
        "from dsl.data import lookup_source\n"
        "s = lookup_source('digits'); s.fields(s.params())\n"
        "assert 'torch' not in sys.modules and 'sklearn' not in sys.modules, 'heavy import'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_builtin_source_is_listed() -> None:
    assert set(SMALL) | {"file", "graphs", "table", "images", "pyg"} == set(source_names())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_declared_fields_match_loaded_batches(name: str) -> None:
    src = lookup_source(name)
    assert src is not None
    params = src.params(**SMALL[name])
    fields = src.fields(params)
    data = src.load(params, 0)
    for split in ("train",) + data.eval_splits:
        batch = next(iter(data.batches(split)))
        assert set(batch) == set(fields), split
        bound: dict[str, int] = {}
        for k, t in fields.items():
            v = batch[k]
            assert v.dtype == TORCH_DTYPES[t.dtype], k
            assert v.dim() == len(t.shape), k
            for d, size in zip(t.shape, v.shape, strict=True):
                if isinstance(d, int):
                    assert size == d, (k, d, size)
                else:  # one symbol, one size within a batch
                    assert bound.setdefault(str(d), size) == size, (k, d)


def test_table_split_is_seeded_disjoint_and_60_20_20() -> None:
    src = lookup_source("iris")
    p = src.params(standardize=False)
    a, b, c = src.load(p, 0), src.load(p, 0), src.load(p, 1)
    sizes = {s: a.num_items(s) for s in ("train", "val", "test")}
    assert sizes == {"train": 90, "val": 30, "test": 30}
    assert torch.equal(a.splits["test"]["x"], b.splits["test"]["x"])
    assert not torch.equal(a.splits["test"]["x"], c.splits["test"]["x"])
    rows = [tuple(r.tolist()) for s in ("train", "val", "test") for r in a.splits[s]["x"]]
    assert len(rows) == 150
    # stratified: every class equally represented in the test split
    assert a.splits["test"]["y"].bincount().tolist() == [10, 10, 10]


def test_table_standardised_with_training_statistics() -> None:
    src = lookup_source("wine")
    data = src.load(src.params(), 3)
    x = data.splits["train"]["x"]
    assert torch.allclose(x.mean(0), torch.zeros(13), atol=1e-5)
    assert torch.allclose(x.std(0), torch.ones(13), atol=1e-4)


def test_training_order_changes_per_epoch_but_is_reproducible() -> None:
    src = lookup_source("iris")
    data = src.load(src.params(batch=150), 0)
    e0 = next(iter(data.batches("train", 0)))["y"]
    e0b = next(iter(data.batches("train", 0)))["y"]
    e1 = next(iter(data.batches("train", 1)))["y"]
    assert torch.equal(e0, e0b) and not torch.equal(e0, e1)


def test_distributed_shards_cover_the_split_with_equal_lengths() -> None:
    src = lookup_source("iris")
    data = src.load(src.params(batch=7, standardize=False), 0)
    shards = [list(data.batches("train", 0, rank, 2)) for rank in range(2)]
    assert len(shards[0]) == len(shards[1])
    rows = {tuple(r.tolist()) for s in shards for b in s for r in b["x"]}
    assert len(rows) == len({tuple(r.tolist()) for r in data.splits["train"]["x"]})


def test_karate_masks() -> None:
    src = lookup_source("karate")
    g = src.load(src.params(per_class=2), 5).data
    assert g["x"].shape == (34, 34) and g["edge_index"].shape == (2, 156)
    assert g["y"][g["train_mask"]].bincount().tolist() == [2, 2, 2, 2]
    masks = torch.stack([g["train_mask"], g["val_mask"], g["test_mask"]]).long()
    assert (masks.sum(0) == 1).all()  # every node in exactly one split
    assert g["val_mask"].sum() == 13 and g["test_mask"].sum() == 13


def test_a_graph_evaluates_each_split_on_its_own_nodes() -> None:
    """Evaluating `val` (`test`) feeds every split mask as that split's, so a loss or metric written
    with `mask=train_mask` or `mask=test_mask` counts the nodes of the split evaluated."""
    data = lookup_source("karate").load(lookup_source("karate").params(), 0)
    assert data.eval_splits == ("val", "test")
    train = next(iter(data.batches("train")))
    for split in ("val", "test"):
        batch = next(iter(data.batches(split)))
        for mask in ("train_mask", "val_mask", "test_mask"):
            assert torch.equal(batch[mask], train[f"{split}_mask"]), (split, mask)


def test_dictionary_lookup_labels_follow_the_keys() -> None:
    from dsl.data.loaders import lookup_graph

    k = 5
    g = lookup_graph(k, torch.Generator().manual_seed(0))
    x, ei, y, mask = g["x"], g["edge_index"], g["y"], g["mask"]
    assert ei.shape == (2, k * k) and bool((ei[0] < k).all()) and bool((ei[1] >= k).all())
    for q in range(k, 2 * k):
        key = int(x[q, :k].argmax())
        value_of_key = int(x[key, k:].argmax())
        assert int(y[q]) == value_of_key and bool(mask[q])
    assert not mask[:k].any() and (x[k:, k:] == 0).all()


def test_collate_graphs_offsets_edges_and_adds_batch() -> None:
    from dsl.data.loaders import lookup_graph

    gen = torch.Generator().manual_seed(1)
    gs = [lookup_graph(3, gen) for _ in range(2)]
    b = collate_graphs(gs, node_fields=("x", "y", "mask"))
    assert b["x"].shape == (12, 6) and b["batch"].tolist() == [0] * 6 + [1] * 6
    assert torch.equal(b["edge_index"][:, 9:], gs[1]["edge_index"] + 6)


def test_mil_bags_padding_and_labels() -> None:
    src = lookup_source("mil_bags")
    data = src.load(src.params(bags=40, batch=40, mean=6, std=3), 0)
    b = next(iter(data.batches("train")))
    lengths = b["mask"].sum(1)
    assert bool((lengths >= 1).all()) and int(lengths.max()) == b["x"].shape[1]
    assert bool((b["x"][~b["mask"]] == 0).all())
    assert 0 < int(b["y"].sum()) < 40  # both classes present


def test_episodes_use_disjoint_classes_and_relabel() -> None:
    src = lookup_source("episodes")
    data = src.load(src.params(ways=5, shots=2, queries=3), 0)
    assert sorted(data.pools["train"]) == [0, 1, 2, 3, 4]
    assert sorted(data.pools["test"]) == [5, 6, 7, 8, 9]
    ep = next(iter(data.batches("test")))
    assert ep["support_y"].bincount().tolist() == [2] * 5 and ep["y"].bincount().tolist() == [3] * 5
    test_rows = torch.cat(list(data.pools["test"].values()))
    assert all(bool((test_rows == r).all(1).any()) for r in ep["query"])
    # evaluation episodes are fixed; training episodes change per epoch
    assert torch.equal(next(iter(data.batches("test", 0)))["query"], next(iter(data.batches("test", 3)))["query"])
    assert not torch.equal(next(iter(data.batches("train", 0)))["query"], next(iter(data.batches("train", 1)))["query"])


def test_npz_fields_read_statically_and_loaded(tmp_path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.random.rand(20, 3).astype(np.float32), y=np.arange(20) % 2, m=np.ones(20, bool))
    src = lookup_source("file")
    p = src.params(path=str(path), batch=5)
    fields = src.fields(p)
    assert {k: str(v) for k, v in fields.items()} == {"x": "[B, 3]", "y": "[B] long", "m": "[B] bool"}
    data = src.load(p, 0)
    batch = next(iter(data.batches("train")))
    assert batch["x"].shape == (5, 3) and batch["y"].dtype == torch.long and batch["m"].dtype == torch.bool
    assert data.num_items("train") + data.num_items("val") + data.num_items("test") == 20


def test_csv_and_pt_files(tmp_path) -> None:
    csv = tmp_path / "d.csv"
    csv.write_text("a,b,label\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(10)))
    src = lookup_source("file")
    p = src.params(path=str(csv), label="label", standardize=True)
    assert {k: str(v) for k, v in src.fields(p).items()} == {"x": "[B, 2]", "y": "[B] long"}
    assert next(iter(src.load(p, 0).batches("train")))["x"].shape[1] == 2
    pt = tmp_path / "d.pt"
    torch.save({"x": torch.randn(10, 4), "y": torch.arange(10) % 3}, pt)
    p = src.params(path=str(pt))
    assert src.fields(p) is None  # needs torch to read: checked at load time
    assert next(iter(src.load(p, 0).batches("test")))["x"].shape[1] == 4


def test_missing_file_is_reported(tmp_path) -> None:
    src = lookup_source("file")
    with pytest.raises(FileNotFoundError):
        src.fields(src.params(path=str(tmp_path / "nope.npz")))


def test_symbolic_batch_dim() -> None:
    src = lookup_source("digits")
    x = src.fields(src.params())["x"]
    assert x.shape == (Sym("B"), 64)


PREDICT_SPEC = """
model Digits(classes: int = 10) {
    input x: [B, 64]
    logits = Linear(x, out=classes)
    output logits: [B, classes]
}
train {
    data      = digits(batch=64)
    loss      = cross_entropy(logits, y)
    metrics   = [accuracy(logits, y)]
    optimizer = adam(lr=0.02)
    epochs    = 2
    seed      = 0
}
"""


def test_predict_standardises_like_training(tmp_path) -> None:
    """`dsl predict` on raw pixels scales them with the training split's mean and std, as
    `digits()` did in training: its logits equal the model's on independently scaled rows."""
    from conftest import run_cli
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    import dsl
    from dsl.training.rundir import RunDir

    spec = tmp_path / "d.dsl"
    spec.write_text(PREDICT_SPEC)
    run = tmp_path / "run"
    assert run_cli("train", str(spec), "--quiet", "--out", str(run))[0] == 0
    x, y = load_digits(return_X_y=True)
    raw = tmp_path / "raw.npz"
    np.savez(raw, x=x[:200].astype(np.float32))
    pred = tmp_path / "pred.npz"
    code, _, err = run_cli("predict", str(spec), "--ckpt", str(run), "--data", str(raw), "--out", str(pred))
    assert code == 0, err
    logits = torch.from_numpy(np.load(pred)["logits"])

    # The training split as documented (60/20/20, stratified, seeded), computed here directly.
    rest, _ = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0, stratify=y)
    train, _ = train_test_split(np.sort(rest), test_size=0.25, random_state=1, stratify=y[np.sort(rest)])
    xt = torch.tensor(x[np.sort(train)], dtype=torch.float32)
    std = xt.std(0)
    scaled = (torch.tensor(x[:200], dtype=torch.float32) - xt.mean(0)) / torch.where(std > 0, std, 1.0)
    model = dsl.compile(str(spec), dims={"B": 200})
    model.load_state_dict(RunDir(str(run)).load_weights()[0])
    with torch.no_grad():
        expected = model(x=scaled)
    assert torch.allclose(logits, expected, atol=1e-4)
    assert (logits.argmax(1).numpy() == y[:200]).mean() >= 0.85
    with torch.no_grad():  # and it matters: raw pixels (0..16) give other logits
        unscaled = model(x=torch.tensor(x[:200], dtype=torch.float32))
    assert (unscaled - logits).abs().max() > 1.0
    narrow = tmp_path / "narrow.npz"
    np.savez(narrow, x=x[:5, :10].astype(np.float32))
    code, _, err = run_cli("predict", str(spec), "--ckpt", str(run), "--data", str(narrow), "--out", str(pred))
    assert code == 1 and "standardised 64 features" in err and "Traceback" not in err


# --------------------------------------------------------------------------- PyG graph lists


def test_graph_list_fields_are_read_without_torch(tmp_path) -> None:
    path = tmp_path / "mols.pt"
    torch.save(graph_list(), path)
    code = (
        "import sys\n"
        "from dsl.data import lookup_source\n"
        "s = lookup_source('graphs')\n"
        f"f = s.fields(s.params(path={str(path)!r}))\n"
        "print({k: str(v) for k, v in f.items()})\n"
        "assert 'torch' not in sys.modules, 'heavy import'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert eval(out) == {  # noqa: S307 - our own subprocess's printed dict
        "x": "[N, 5]", "edge_index": "[2, E] long", "edge_attr": "[E, 3]", "y": "[G] long", "w": "[N]",
        "batch": "[N] long",
    }


def test_graph_list_batches_are_pyg_batches(tmp_path) -> None:
    from torch_geometric.data import Batch

    graphs = graph_list(20)
    path = tmp_path / "mols.pt"
    torch.save(graphs, path)
    src = lookup_source("graphs")
    p = src.params(path=str(path), batch=4)
    data = src.load(p, 0)
    assert data.kind == "graphs"
    assert {s: data.num_items(s) for s in ("train", "val", "test")} == {"train": 12, "val": 4, "test": 4}
    # stratified by the graph label: both classes in every split
    for s in ("train", "val", "test"):
        assert {int(g.y) for g in data.splits[s]} == {0, 1}
    batch = next(iter(data.batches("test")))
    ref = Batch.from_data_list(data.splits["test"][:4])
    assert set(batch) == set(src.fields(p))
    for k in ("x", "edge_index", "edge_attr", "y", "w", "batch"):
        assert torch.equal(batch[k], ref[k]), k
    assert batch["edge_index"].max() == batch["x"].shape[0] - 1  # offsets applied
    assert batch["y"].shape == (4,) and batch["batch"].max() == 3
    again = next(iter(src.load(p, 0).batches("train", 1)))
    assert torch.equal(again["x"], next(iter(data.batches("train", 1)))["x"])  # seeded


def test_graph_list_spec_binds_dims_and_trains(tmp_path) -> None:
    from conftest import run_cli

    torch.save(graph_list(20), tmp_path / "mols.pt")
    spec = tmp_path / "g.dsl"
    spec.write_text(graph_classifier_spec("mols.pt", batch=8))
    code, out, err = run_cli("compile", str(spec))  # F = 5 comes from the file, read statically
    assert code == 0, err
    assert "[N, 5]" in out
    code, _, err = run_cli("train", str(spec), "--quiet", "--out", str(tmp_path / "run"))
    assert code == 0, err


def test_graph_list_refuses_foreign_objects(tmp_path) -> None:
    import fractions

    from dsl.data.files import DataError
    from dsl.data.graphfiles import read_graph_metas

    src = lookup_source("graphs")
    foreign = tmp_path / "foreign.pt"
    torch.save([*graph_list(2), fractions.Fraction(1, 3)], foreign)
    assert read_graph_metas(str(foreign)) is None  # the inert static read gives up, runs nothing
    with pytest.raises(DataError, match="refused"):
        src.load(src.params(path=str(foreign)), 0)
    mixed = tmp_path / "mixed.pt"
    torch.save([*graph_list(2), {"x": torch.zeros(1)}], mixed)
    with pytest.raises(DataError, match="list of torch_geometric Data"):
        src.load(src.params(path=str(mixed)), 0)
    with pytest.raises(DataError, match="edge_index"):
        from dsl.data.graphfiles import Meta, plan_fields

        plan_fields([{"x": Meta((3, 2), "float")}], "f.pt")
