"""`dsl explain RUN`: prototypes (nearest examples, PNG grid, one prediction) and Hopfield
retrieval, on small runs trained once per module."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import SPECS, run_cli

from dsl.language.errors import RunError as RunProblem
from dsl.training.session import load_trained

PROTO = """
model D(classes: int = 10) {
    input x: [B, 64]
    z = Linear(x, out=12)
    logits, dist = PrototypeHead(z, classes=classes, per_class=2)
    output logits: [B, classes]
}
train {
    data       = digits(batch=128)
    loss       = cross_entropy(logits, y)
    metrics    = [accuracy(logits, y)]
    optimizer  = adam(lr=0.01)
    epochs     = 1
    push_every = 1
    seed       = 0
}
"""

HOPFIELD = """
model H {
    input x: [B, L, 16]
    h = Hopfield(x, project=false, normalize_affine=false, steps=3)
    logits = Linear(mean(h, dim=1), out=2)
    output logits: [B, 2]
}
train {
    data      = "bags.npz"
    loss      = cross_entropy(logits, y)
    optimizer = adam(lr=0.01)
    epochs    = 1
    seed      = 0
}
"""


def _train(folder, text: str) -> tuple[str, str]:
    spec = folder / "spec.dsl"
    spec.write_text(text)
    run = str(folder / "run")
    code, _, err = run_cli("train", str(spec), "--quiet", "--out", run)
    assert code == 0, err
    return str(spec), run


@pytest.fixture(scope="module")
def proto_run(tmp_path_factory) -> tuple[str, str]:
    return _train(tmp_path_factory.mktemp("proto"), PROTO)


@pytest.fixture(scope="module")
def hopfield_run(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("hop")
    rng = np.random.default_rng(0)
    np.savez(folder / "bags.npz", x=rng.normal(size=(40, 6, 16)).astype(np.float32),
             y=rng.integers(0, 2, size=40))
    return _train(folder, HOPFIELD)


def explain(*args: str) -> tuple[int, str, str]:
    return run_cli("explain", *args)


def explain_json(*args: str) -> dict:
    code, out, err = explain(*args, "--json")
    assert code == 0, err
    return json.loads(out)


def loaded(spec: str, run: str):
    p, model, _, _ = load_trained(run, spec)
    return model.eval(), p.cfg.source.load(p.cfg.source_params, p.cfg.seed)


# --------------------------------------------------------------------------- prototypes


def test_prototypes_list_their_nearest_training_examples(proto_run) -> None:
    spec, run = proto_run
    report = explain_json(run, "--prototypes", "-k", "3")["prototypes"]["logits"]
    _, data = loaded(spec, run)
    y = data.splits["train"]["y"]
    assert report["examples"] == len(y) and len(report["prototypes"]) == 20
    for p in report["prototypes"]:
        assert p["class"] == p["prototype"] // 2
        near = p["nearest"]
        assert len(near) == 3 and [n["distance"] for n in near] == sorted(n["distance"] for n in near)
        assert all(n["class"] == int(y[n["index"]]) for n in near)  # the examples' own classes
        # pushed: the nearest example is the one the prototype was pushed onto, at distance 0
        assert near[0]["index"] == p["pushed"] and near[0]["class"] == p["class"]
        assert near[0]["distance"] == pytest.approx(0.0, abs=1e-4)


def test_prototype_table(proto_run) -> None:
    _, run = proto_run
    code, out, err = explain(run, "--prototypes", "-k", "2")
    assert code == 0, err
    assert "prototypes of `logits`" in out and "pushed onto" in out


def test_input_shows_what_a_prediction_rests_on(proto_run) -> None:
    spec, run = proto_run
    rep = explain_json(run, "--input", "7", "-k", "20")["input"]["logits"]
    model, data = loaded(spec, run)
    x, y = data.splits["test"]["x"], data.splits["test"]["y"]
    with torch.no_grad():
        logits = model(x=x[7:8])["logits"][0]
    assert rep["predicted"] == int(logits.argmax()) and rep["true"] == int(y[7])
    top = rep["top"]
    assert [t["contribution"] for t in top] == sorted((t["contribution"] for t in top), reverse=True)
    assert all(t["class"] == t["prototype"] // 2 for t in top)
    # with every prototype listed, similarity x weight sums to the predicted class's logit
    assert sum(t["contribution"] for t in top) == pytest.approx(float(logits[rep["predicted"]]), abs=1e-4)
    assert all(t["contribution"] == pytest.approx(t["similarity"] * t["weight"]) for t in top)
    code, out, _ = explain(run, "--input", "7")
    assert code == 0 and f"predicted class {rep['predicted']}" in out and f"true class {rep['true']}" in out


def test_png_grid_of_nearest_digits(proto_run, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    _, run = proto_run
    png = tmp_path / "protos.png"
    code, out, err = explain(run, "--prototypes", "-k", "2", "--png", str(png))
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(png) in out


def test_png_needs_image_shaped_inputs() -> None:
    from dsl.cli.commands.explain import _image_field

    assert _image_field({"x": torch.zeros(2, 64)}) == ("x", 8)
    with pytest.raises(RunProblem, match="image-shaped"):
        _image_field({"x": torch.zeros(2, 13)})


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--input", "100000"], 2, "the test split has 360 rows"),
        (["--hopfield"], 1, "no Hopfield"),
        ([], 2, "say what to explain"),
        (["--png", "x.png"], 2, "add --prototypes"),
        (["--prototypes", "-k", "0"], 2, "-k must be at least 1"),
        (["--input", "3", "--split", "nope"], 2, "--split nope"),
    ],
)
def test_clear_errors(proto_run, args, code, message) -> None:
    _, run = proto_run
    got, out, err = explain(run, *args)
    assert got == code and message in err and "Traceback" not in err


def test_a_spec_edited_after_training_falls_back_to_the_runs_copy(proto_run, tmp_path) -> None:
    import shutil

    spec, run = proto_run
    copy = str(tmp_path / "run")
    shutil.copytree(run, copy)
    edited = tmp_path / "edited.dsl"
    edited.write_text(PROTO.replace("out=12", "out=13"))
    meta_path = tmp_path / "run" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["spec_file"] = str(edited)
    meta_path.write_text(json.dumps(meta))
    assert explain_json(copy, "--input", "0")["input"]["logits"]["row"] == 0
    code, _, err = explain(copy, "--input", "0", "--spec", str(edited))  # asked for explicitly: refused
    assert code == 1 and "does not fit this spec" in err


def test_not_a_run_directory(tmp_path) -> None:
    code, _, err = explain(str(tmp_path), "--prototypes")
    assert code == 1 and "not a run directory" in err


# --------------------------------------------------------------------------- hopfield


def test_a_query_equal_to_a_stored_pattern_retrieves_that_pattern(hopfield_run) -> None:
    _, run = hopfield_run
    rep = explain_json(run, "--hopfield", "--input", "2", "-k", "2")["hopfield"]
    assert rep["row"] == 2 and rep["split"] == "test"
    block = rep["blocks"]["h"]
    assert block["block"] == "Hopfield" and block["queries"] == 6 and block["patterns"] == 6
    assert block["steps"] == 3 and 1 <= block["steps_ran"] <= 3 and block["sample_aligned"]
    for q, top in enumerate(block["retrieval"][0]):  # stored = state: query q is pattern q
        assert top[0]["pattern"] == q and top[0]["weight"] > top[1]["weight"] > 0
    code, out, err = explain(run, "--hopfield", "--input", "2")
    assert code == 0 and "update steps run" in out and "Hopfield `h`" in out


def test_hopfield_pooling_of_the_mil_spec(tmp_path) -> None:
    spec, run = str(SPECS / "hopfield_mil.dsl"), str(tmp_path / "mil")
    code, _, err = run_cli("train", spec, "--epochs", "1", "--quiet", "--out", run)
    assert code == 0, err
    rep = explain_json(run, "--hopfield", "--input", "4", "-k", "100")["hopfield"]
    block = rep["blocks"]["pooled"]
    assert block["block"] == "HopfieldPooling" and block["heads"] == 2 and block["queries"] == 1
    _, data = loaded(spec, run)
    real = int(data.splits["test"][4][0].shape[0])  # instances in bag 4; the rest is padding
    for head in block["retrieval"]:
        listed = head[0]
        assert len(listed) == real and all(e["pattern"] < real for e in listed)  # padding gets weight 0
        assert sum(e["weight"] for e in listed) == pytest.approx(1.0, abs=1e-5)
    code, _, err = explain(run, "--prototypes")
    assert code == 1 and "no PrototypeHead" in err and "--hopfield" in err


def test_png_of_patch_prototypes_boxes_the_region_each_came_from(tmp_path) -> None:
    """ProtoPNet's picture of a prototype: the training image it was pushed onto, in raw pixels,
    with the patch's receptive field boxed (prototypes.json names the image, patch and box)."""
    from PIL import Image

    spec = tmp_path / "proto.dsl"
    text = (SPECS / "protopnet_digits.dsl").read_text()
    spec.write_text(text.replace("stages    = [warm(epochs=5), joint(epochs=20, push_every=10), last_layer(epochs=5)]",
                                 "stages    = [joint(epochs=1, push_every=1)]"))
    run = tmp_path / "run"
    code, _, err = run_cli("train", str(spec), "--quiet", "--out", str(run))
    assert code == 0, err
    doc = json.loads((run / "prototypes.json").read_text())["heads"]["logits"]
    assert doc["input"] == "x" and all(len(p["box"]) == 4 for p in doc["prototypes"])
    out = tmp_path / "protos.png"
    code, stdout, err = run_cli("explain", str(run), "--prototypes", "--png", str(out))
    assert code == 0, err
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape[1] == 10 * 128  # ten prototypes a row (30 in all)
    red = (image[..., 0] > 200) & (image[..., 1] < 60) & (image[..., 2] < 60)
    assert red.sum() > 30 * 50  # a box around every prototype's patch
