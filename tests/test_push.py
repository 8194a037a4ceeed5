"""`push_every = n`: the ProtoPNet push as a training hook (dsl/train/hooks/push.py).

Small iris and karate runs: the static checks, prototypes landing exactly on
training embeddings of their own class, the record in metrics.jsonl and
prototypes.json, masks on graphs, early stop, and resume."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from helpers import command_args

import dsl
from dsl.cli.training import cmd_train
from dsl.training.hooks.push import LabelSource, capture, label_source, named_heads
from dsl.training.rundir import RunDir
from dsl.training.session import load_trained

SPEC = """
model P(classes: int = 3) {
    input x: [B, F]
    z = Linear(x, out=6)
    logits, dist = PrototypeHead(z, classes=classes, per_class=2)
    output logits: [B, classes]
    output dist
}
train {
    data       = iris(batch=32)
    loss       = cross_entropy(logits, y) + 0.8 * cluster_cost(dist, y, per_class=2)
    metrics    = [accuracy(logits, y)]
    optimizer  = adam(lr=0.05)
    epochs     = 3
    push_every = 2
    seed       = 0
}
"""


def ns(**kw: object) -> argparse.Namespace:
    return command_args("train", **kw)


def write(tmp_path, text: str = SPEC, name: str = "p.dsl") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def codes_at(text: str, tmp_path) -> list[tuple[str, int]]:
    return [(d.code, d.span.line) for d in dsl.check(write(tmp_path, text))]


# --------------------------------------------------------------------------- static checks


def test_push_every_must_be_a_positive_int(tmp_path) -> None:
    for bad in ("0", "-1", "1.5", "true"):
        got = codes_at(SPEC.replace("push_every = 2", f"push_every = {bad}"), tmp_path)
        assert got == [("E0501", line_of(SPEC, "push_every"))], (bad, got)
    assert codes_at(SPEC, tmp_path) == []


def test_push_every_needs_a_prototype_head(tmp_path) -> None:
    text = SPEC.replace("logits, dist = PrototypeHead(z, classes=classes, per_class=2)",
                        "logits = Linear(z, out=classes)\n    dist = z").replace(
        " + 0.8 * cluster_cost(dist, y, per_class=2)", "")
    diags = dsl.check(write(tmp_path, text))
    assert [(d.code, d.span.line, d.span.col) for d in diags] == [("E0501", line_of(text, "push_every"), 5)]
    assert "PrototypeHead" in diags[0].message


def test_a_prototype_head_inside_a_user_block_counts(tmp_path) -> None:
    text = SPEC.replace("model P", """block Head(classes: int) {
    input z: [B, D]
    logits, dist = PrototypeHead(z, classes=classes, per_class=2)
    output logits
    output dist
}
model P""").replace("logits, dist = PrototypeHead(z, classes=classes, per_class=2)\n    output logits: [B, classes]",
                    "logits, dist = Head(z, classes=classes)\n    output logits: [B, classes]")
    assert "Head(z, classes=classes)" in text
    assert dsl.check(write(tmp_path, text)) == []


def test_push_every_needs_class_labels(tmp_path) -> None:
    text = SPEC.replace("cross_entropy(logits, y) + 0.8 * cluster_cost(dist, y, per_class=2)",
                        "l1_last_layer()").replace("[accuracy(logits, y)]", "[]")
    diags = dsl.check(write(tmp_path, text))
    assert [d.code for d in diags] == ["E0501"] and "class labels" in diags[0].message


def test_labels_come_from_the_loss_with_its_mask() -> None:
    from dsl.api import analyse

    spec = dsl.loads(SPEC.replace("cross_entropy(logits, y)", "cross_entropy(logits, y, mask=m)"))
    assert label_source(analyse(spec).config) == LabelSource("y", "m", "cross_entropy")


# --------------------------------------------------------------------------- the push


def prototypes(run: str) -> dict:
    with open(RunDir(run).file("prototypes.json"), encoding="utf-8") as fh:
        return json.load(fh)


def _load(run: str, spec: str):
    p, model, _, _ = load_trained(run, spec)
    data = p.cfg.source.load(p.cfg.source_params, p.cfg.seed)
    return p, model, data


def _assert_on_own_class_embeddings(run: str, spec: str) -> dict:
    """Every prototype equals the embedding of the training example prototypes.json names,
    that example has the prototype's class, and no other own-class embedding is nearer."""
    p, model, data = _load(run, spec)
    doc = prototypes(run)
    labels = label_source(p.cfg)
    caps = capture(model, data, "train", labels)
    for name, head in named_heads(model).items():
        cap = caps[name]
        where = {int(i): k for k, i in enumerate(cap.index.tolist())}
        for entry in doc["heads"][name]["prototypes"]:
            j, cls, idx = entry["prototype"], entry["class"], entry["index"]
            assert cls == int(head.prototype_class[j])
            row = where[idx]
            assert int(cap.labels[row]) == cls
            assert torch.equal(head.prototypes[j].detach(), cap.z[row])  # exactly on it: distance 0
            own = cap.labels == cls
            assert float(cap.distances[own, j].min()) == pytest.approx(0.0, abs=1e-4)
    return doc


def test_push_lands_every_prototype_on_a_training_embedding_of_its_class(tmp_path) -> None:
    spec, run = write(tmp_path), str(tmp_path / "run")
    assert cmd_train(ns(file=spec, out=run)) == 0
    doc = _assert_on_own_class_embeddings(run, spec)
    assert doc["epoch"] == 3 and doc["label"] == "y" and doc["mask"] is None
    records = RunDir(run).read_metrics()
    pushed = [r["epoch"] for r in records if "push" in r]
    assert pushed == [2, 3]  # every 2 epochs, and after the last one
    last = records[-1]
    summary = last["push"]["heads"]["logits"]
    assert summary["moved_mean"] >= 0 and summary["moved_max"] >= summary["moved_mean"]
    assert summary["unpushed"] == 0
    assert last["push"]["after"]["val"] == last["val"]  # the record describes the saved weights
    assert set(last["push"]["before"]["val"]) == {"loss", "accuracy"}
    # the hook state keeps the same indices for resume
    state = RunDir(run).load_state()["hooks"]["push"]
    assert state["last_push"] == 3 and state["count"] == 2
    assert state["index"]["logits"].tolist() == [e["index"] for e in doc["heads"]["logits"]["prototypes"]]
    # the index names a row of the unshuffled training split
    _, model, data = _load(run, spec)
    head = named_heads(model)["logits"]
    x, y = data.splits["train"]["x"], data.splits["train"]["y"]
    with torch.no_grad():
        z = model.z(x)
    for entry in doc["heads"]["logits"]["prototypes"]:
        assert int(y[entry["index"]]) == entry["class"]
        assert torch.allclose(head.prototypes[entry["prototype"]], z[entry["index"]], atol=1e-6)


def test_the_best_epoch_is_a_push_epoch(tmp_path) -> None:
    """Between pushes the prototypes drift off the training embeddings: those weights are never the best."""
    text = SPEC.replace("epochs     = 3", "epochs     = 5")
    spec, run = write(tmp_path, text), str(tmp_path / "run")
    assert cmd_train(ns(file=spec, out=run)) == 0
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    pushed = [r["epoch"] for r in RunDir(run).read_metrics() if "push" in r]
    assert pushed == [2, 4, 5] and meta["best"]["epoch"] in pushed


def test_resume_matches_a_straight_run(tmp_path) -> None:
    spec = write(tmp_path, SPEC.replace("epochs     = 3", "epochs     = 4"))
    straight, split = str(tmp_path / "s"), str(tmp_path / "k")
    assert cmd_train(ns(file=spec, out=straight)) == 0
    assert cmd_train(ns(file=spec, out=split, epochs=2)) == 0
    assert cmd_train(ns(file=spec, out=split, resume=True)) == 0
    wa, wb = RunDir(straight).load_weights()[0], RunDir(split).load_weights()[0]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert prototypes(straight) == prototypes(split)
    pa = [r.get("push", {}).get("heads") for r in RunDir(straight).read_metrics()]
    pb = [r.get("push", {}).get("heads") for r in RunDir(split).read_metrics()]
    assert pa == pb and sum(p is not None for p in pa) == 2


def test_resume_after_an_interrupted_epoch_keeps_the_schedule(tmp_path) -> None:
    """fit(stop_after=3) is an interruption, not the end: no push until epoch 4."""
    from dsl.building.model import build_for_training
    from dsl.training.session import load_data, prepare
    from dsl.training.trainer import Trainer

    text = SPEC.replace("epochs     = 3", "epochs     = 4")
    p = prepare(dsl.loads(text, file=write(tmp_path, text)))
    data = load_data(p.cfg)

    def trainer(run: RunDir) -> Trainer:
        torch.manual_seed(0)
        model, step = build_for_training(p.analysis)
        return Trainer(model, step, p.cfg, p.analysis.objective.metrics, data, run=run,
                       meta={"run_dir": run.path}, verbose=False)

    a, b = RunDir(str(tmp_path / "a")), RunDir(str(tmp_path / "b"))
    a.start("x", {}), b.start("x", {})
    trainer(a).fit()
    first = trainer(b)
    first.fit(stop_after=3)
    assert [r["epoch"] for r in first.history if "push" in r] == [2]
    second = trainer(b)
    second.resume()
    second.fit()
    assert [r["epoch"] for r in b.read_metrics() if "push" in r] == [2, 4]
    wa, wb = a.load_weights()[0], b.load_weights()[0]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_early_stop_ends_on_a_push(tmp_path) -> None:
    text = SPEC.replace("adam(lr=0.05)", "sgd(lr=1e-12)").replace("epochs     = 3", "epochs = 10\n"
                        "    early_stop = early_stop(metric=accuracy, patience=1)").replace(
        "push_every = 2", "push_every = 5")
    spec, run = write(tmp_path, text), str(tmp_path / "es")
    assert cmd_train(ns(file=spec, out=run)) == 0
    meta = RunDir(run).read_meta()
    assert meta["stopped_early"] is True and meta["epoch"] < 5
    records = RunDir(run).read_metrics()
    assert [r["epoch"] for r in records if "push" in r] == [meta["epoch"]]
    doc = _assert_on_own_class_embeddings(run, spec)
    assert doc["epoch"] == meta["epoch"]
    # early stopping watched the epochs before the first scheduled push; the best weights wait for
    # a push: the one after the stop is offered, chosen and tested
    assert meta["best"]["epoch"] == meta["epoch"] and meta["test"]["weights"] == "best"


KARATE = """
model G(classes: int = 4) {
    input x: [N, F]
    z = Linear(x, out=8)
    logits, dist = PrototypeHead(z, classes=classes)
    output logits: [N, classes]
}
train {
    data       = karate(per_class=2)
    loss       = cross_entropy(logits, y, mask=train_mask)
    metrics    = [accuracy(logits, y, mask=test_mask)]
    optimizer  = adam(lr=0.01)
    epochs     = 2
    push_every = 1
    seed       = 0
}
"""


def test_on_a_graph_only_training_nodes_become_prototypes(tmp_path) -> None:
    spec, run = write(tmp_path, KARATE), str(tmp_path / "g")
    assert cmd_train(ns(file=spec, out=run)) == 0
    _, _, data = _load(run, spec)
    train_nodes = set(data.data["train_mask"].nonzero().flatten().tolist())
    doc = _assert_on_own_class_embeddings(run, spec)
    assert doc["mask"] == "train_mask"
    assert {e["index"] for e in doc["heads"]["logits"]["prototypes"]} <= train_nodes
