"""ProtoPNet's training stages (``stages = [warm(...), joint(...), last_layer(...)]``), as
cfchen-duke/ProtoPNet's ``train_and_test.py`` (warm_only, joint, last_only) and
``main.py`` run them: which part of the model each stage trains, the push at the
end of the joint stage, the last layer's L1 term, resuming across a stage boundary,
and the diagnostics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import dsl
from dsl.training.rundir import RunDir

SPEC = """model ProtoPNet(classes: int = 10, per_class: int = 2) {
    input x: [B, 1, 8, 8]
    f = max_pool2d(relu(Conv2d(x, out=8, kernel=3, padding=1)), 2)
    z = sigmoid(Conv2d(f, out=6, kernel=1))
    logits, dist = PrototypeHead(z, classes=classes, per_class=per_class)
    output logits: [B, classes]
}

train {
    data    = digits(images=true, batch=128)
    loss    = cross_entropy(logits, y) + 0.8 * cluster_cost(dist, y) - 0.08 * separation_cost(dist, y)
    metrics = [accuracy(logits, y)]
    STAGES
    seed    = 0
}
"""
STAGES = "stages  = [warm(epochs=1), joint(epochs=2, push_every=1, lr_step=0), last_layer(epochs=1)]"


def spec(stages: str = STAGES, extra: str = "") -> str:
    return SPEC.replace("STAGES", stages + ("\n    " + extra if extra else ""))


def trainer(text: str, tmp: Path, run: RunDir | None = None, verbose: bool = False):
    from dsl.building.model import build_for_training
    from dsl.training.session import load_data, prepare
    from dsl.training.trainer import Trainer

    path = tmp / "spec.dsl"
    path.write_text(text)
    p = prepare(dsl.loads(text, file=str(path)))
    torch.manual_seed(0)
    model, step = build_for_training(p.analysis)
    return Trainer(model, step, p.cfg, p.analysis.objective.metrics, load_data(p.cfg), run=run,
                   meta={"run_dir": run.path} if run else None, verbose=verbose)


def parts(model) -> dict[str, list[torch.Tensor]]:
    """The model's weights by part: the first convolution is the backbone, the 1x1 one the add-on layer."""
    head = model.logits
    return {
        "backbone": [p.detach().clone() for p in model.conv2d.parameters()],
        "add_on": [p.detach().clone() for p in model.conv2d_1.parameters()],
        "prototypes": [head.prototypes.detach().clone()],
        "last_layer": [head.last_layer.weight.detach().clone()],
    }


def changed(before: dict[str, list[torch.Tensor]], after: dict[str, list[torch.Tensor]]) -> set[str]:
    return {k for k in before if any(not torch.equal(a, b) for a, b in zip(before[k], after[k], strict=True))}


def test_each_stage_trains_its_part(tmp_path: Path) -> None:
    t = trainer(spec(), tmp_path)
    assert t.cfg.epochs == 4
    assert t.cfg.stage_parts.heads == ["logits"] and t.cfg.stage_parts.add_on == ["conv2d_1"]
    seen = []
    for _ in range(4):
        before = parts(t.model)
        t.fit(stop_after=t.epoch + 1)
        seen.append((t.history[-1]["stage"], changed(before, parts(t.model))))
    warm, joint1, joint2, last = seen
    assert warm == ("warm", {"add_on", "prototypes"})
    assert joint1[0] == joint2[0] == "joint" and joint1[1] == {"backbone", "add_on", "prototypes"}
    assert last == ("last_layer", {"last_layer"})
    assert [r["epoch"] for r in t.history if "push" in r] == [2, 3]  # every epoch of the joint stage


def test_learning_rates_are_the_papers_by_default(tmp_path: Path) -> None:
    t = trainer(spec("stages = [warm(epochs=1), joint(epochs=1), last_layer(epochs=1)]"), tmp_path)
    rates = {g["name"]: g["lr"] for g in t.opt.param_groups}
    assert rates == {"add_on": 3e-3, "prototypes": 3e-3}
    t.fit(stop_after=2)
    rates = {g["name"]: (g["lr"], g["weight_decay"]) for g in t.opt.param_groups}
    assert rates == {"backbone": (1e-4, 1e-3), "add_on": (3e-3, 1e-3), "prototypes": (3e-3, 0.0)}
    t.fit()
    assert {g["name"]: g["lr"] for g in t.opt.param_groups} == {"last_layer": 1e-4}


def test_last_layer_stage_adds_the_l1_of_wrong_class_connections(tmp_path: Path) -> None:
    """ProtoPNet's last_only stage: the wrong-class weights (-0.5 at the start) shrink towards 0."""
    # the joint stage leaves the last layer alone (ProtoPNet's joint trains everything but it)
    t = trainer(spec("stages = [joint(epochs=1, lr_step=0), last_layer(epochs=3, lr=0.01, l1=0.1)]"), tmp_path)
    head = t.model.logits
    wrong = ~head.own_class_mask()
    before = head.last_layer.weight.detach()[wrong].abs().sum()
    t.fit()
    after = head.last_layer.weight.detach()[wrong].abs().sum()
    assert after < 0.8 * before


def test_each_epoch_line_names_its_stage_and_marks_a_push(tmp_path: Path, capsys) -> None:
    trainer(spec(), tmp_path, verbose=True).fit()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert [line.split()[2] for line in lines] == ["[warm]", "[joint]", "[joint]", "[last_layer]"]
    assert ["(pushed)" in line for line in lines] == [False, True, True, False]  # push_every=1 in the joint stage


def test_resume_across_a_stage_boundary_matches_a_straight_run(tmp_path: Path) -> None:
    a, b = RunDir(str(tmp_path / "a")), RunDir(str(tmp_path / "b"))
    a.start("x", {}), b.start("x", {})
    trainer(spec(), tmp_path, a).fit()
    first = trainer(spec(), tmp_path, b)
    first.fit(stop_after=1)  # ends on the warm stage's last epoch
    second = trainer(spec(), tmp_path, b)
    second.resume()
    second.fit()
    wa, wb = a.load_weights()[0], b.load_weights()[0]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [r["stage"] for r in b.read_metrics()] == ["warm", "joint", "joint", "last_layer"]


@pytest.mark.parametrize("stages,extra,words,marker", [
    (STAGES, "epochs  = 3", "`epochs` cannot be combined with `stages`", "epochs  = 3"),
    (STAGES, "optimizer = adam(lr=0.1)", "`optimizer` cannot be combined with `stages`", "optimizer"),
    (STAGES, "push_every = 2", "give it to the joint stage", "push_every"),
    ("stages  = [warmup(epochs=1)]", "", "unknown stage `warmup`", "warmup"),
    ("stages  = [warm()]", "", "`warm` needs argument `epochs`", "warm()"),
    ("stages  = [joint(epochs=2, push=1)]", "", "`joint` has no argument `push`", "push=1"),
    ("stages  = [warm(epochs=2), last_layer(epochs=2)]", "", "the prototypes are never pushed", "stages"),
])
def test_stage_diagnostics(stages: str, extra: str, words: str, marker: str) -> None:
    text = spec(stages, extra)
    diags = dsl.check(dsl.loads(text, file="spec.dsl"))
    assert [d.code for d in diags if d.severity == "error"] != []
    d = next(d for d in diags if words in d.message + (d.help or ""))
    assert marker in text.splitlines()[d.span.line - 1]


def test_stages_need_a_prototype_head() -> None:
    text = spec().replace("logits, dist = PrototypeHead(z, classes=classes, per_class=per_class)",
                          "logits = Linear(flatten(z, start=1), out=classes)\n    dist = logits")
    text = text.replace(" + 0.8 * cluster_cost(dist, y) - 0.08 * separation_cost(dist, y)", "")
    diags = dsl.check(dsl.loads(text, file="spec.dsl"))
    assert any("has no PrototypeHead" in d.message for d in diags)


def test_epochs_flag_is_refused_naming_stages(tmp_path: Path) -> None:
    from conftest import run_cli

    path = tmp_path / "spec.dsl"
    path.write_text(spec())
    code, _, err = run_cli("train", str(path), "--epochs", "2", "--quiet", "--out", str(tmp_path / "run"))
    assert code == 1 and "--epochs cannot change a run with `stages`" in err


def test_push_records_each_patch_and_its_box_in_the_input(tmp_path: Path) -> None:
    """ProtoPNet's push.py keeps, per prototype, the image and the patch it came from with the
    patch's receptive field (its bounding box in the input image)."""
    import json

    from dsl.checking.receptive import ReceptiveField

    run = RunDir(str(tmp_path / "run"))
    run.start("x", {})
    t = trainer(spec("stages = [joint(epochs=1, push_every=1)]"), tmp_path, run)
    t.fit()
    doc = json.loads((tmp_path / "run" / "prototypes.json").read_text())["heads"]["logits"]
    assert doc["input"] == "x"
    # a 3x3 conv (padding 1), a 2x2 pool, a 1x1 conv: a 4-pixel field, 2 pixels apart
    assert t.cfg.push_fields["logits"] == ReceptiveField((2.0, 2.0), (4.0, 4.0), (1.0, 1.0), "x")
    x = t.data.splits["train"]["x"]
    z = t.model.conv2d_1(torch.nn.functional.max_pool2d(torch.relu(t.model.conv2d(x)), 2)).sigmoid()
    head = t.model.logits
    for p in doc["prototypes"]:
        h, w = p["position"]
        assert p["box"] == [max(0, 2 * h - 1), min(8, 2 * h + 3), max(0, 2 * w - 1), min(8, 2 * w + 3)]
        torch.testing.assert_close(head.prototypes[p["prototype"]].detach(), z[p["index"], :, h, w].detach())


def test_a_push_without_one_label_per_embedding_is_a_check_error() -> None:
    """The push cannot run when the head sees more rows than there are labels: said by dsl check,
    not after the first epoch."""
    text = """model M {
    input x: [B, 64]
    z = reshape(x, [B * 8, 8])
    rows, dist = PrototypeHead(z, classes=10)
    logits = mean(reshape(rows, [B, 8, 10]), dim=1)
    output logits
}

train {
    data       = digits(batch=32)
    loss       = cross_entropy(logits, y)
    push_every = 1
}
"""
    diags = dsl.check(dsl.loads(text, file="spec.dsl"))
    d = next(d for d in diags if "one class label per embedding" in d.message)
    assert d.code == "E0501" and "8*B" in d.message and "push_every" in text.splitlines()[d.span.line - 1]


def test_the_best_epoch_is_one_whose_prototypes_are_pushed_patches(tmp_path: Path) -> None:
    run = RunDir(str(tmp_path / "run"))
    run.start("x", {})
    t = trainer(spec(), tmp_path, run)
    t.fit()
    records = run.read_metrics()
    eligible = [r["epoch"] for r in records if "push" in r or r["stage"] == "last_layer"]
    assert eligible == [2, 3, 4]  # the joint stage's two pushes, then the last-layer stage
    assert t.best["epoch"] in eligible


def test_a_joint_stage_pushes_at_its_end_without_push_every(tmp_path: Path) -> None:
    """The paper pushes after every joint phase; push_every only adds pushes inside one."""
    run = RunDir(str(tmp_path / "run"))
    run.start("x", {})
    text = spec("stages  = [warm(epochs=1), joint(epochs=2, lr_step=0), last_layer(epochs=1), "
                "joint(epochs=1, lr_step=0), last_layer(epochs=1)]")
    trainer(text, tmp_path, run).fit()
    assert [r["epoch"] for r in run.read_metrics() if "push" in r] == [3, 5]


def test_an_early_stop_inside_a_joint_stage_pushes_and_offers_the_pushed_weights_as_best(tmp_path: Path) -> None:
    run = RunDir(str(tmp_path / "run"))
    run.start("x", {})
    text = spec("stages  = [warm(epochs=1), joint(epochs=3, lr_step=0), last_layer(epochs=1)]",
                "early_stop = early_stop(metric=accuracy, patience=1, min_delta=1.0)")  # stops at epoch 2
    t = trainer(text, tmp_path, run)
    t.fit()
    assert t.stopped and [(r["epoch"], "push" in r) for r in run.read_metrics()] == [(1, False), (2, True)]
    assert t.best["epoch"] == 2 and t.test["weights"] == "best"  # the pushed weights, chosen and tested


def test_a_checkpoint_with_push_state_of_the_wrong_type_is_refused_at_resume(tmp_path: Path) -> None:
    from dsl.language.errors import RunError

    run = RunDir(str(tmp_path / "run"))
    run.start("x", {})
    trainer(spec(), tmp_path, run).fit(stop_after=3)
    state = run.load_state()
    state["hooks"]["push"]["pushed"] = {"logits": 1}
    run.save_state(state)
    with pytest.raises(RunError, match="push state"):
        trainer(spec(), tmp_path, RunDir(str(tmp_path / "run"))).resume()
