"""Every spec with a train section trains (one short epoch) through `dsl train`."""

from __future__ import annotations

import json
import re

import pytest
from conftest import SPECS, run_cli

import dsl

TRAINABLE = sorted(p for p in SPECS.glob("*.dsl") if dsl.load(p).train is not None)


# What one short run of a paper's spec must reach on its validation split: better than chance
# (10 digit classes, 5-way episodes) or than a uniform guess over 96 characters (ln 96 = 4.56).
FLOORS = {
    "protopnet_digits.dsl": ("accuracy", ">", 0.3),
    "protonet_conv4.dsl": ("accuracy", ">", 0.3),
    "switch_lm.dsl": ("loss", "<", 4.0),
    "lstm_moe.dsl": ("loss", "<", 3.6),
}
SHORT_STAGES = "stages = [warm(epochs=1), joint(epochs=1, push_every=1), last_layer(epochs=1)]"


@pytest.mark.parametrize("path", TRAINABLE, ids=[p.name for p in TRAINABLE])
def test_spec_trains_one_epoch(path, tmp_path):
    out = tmp_path / "run"
    text = path.read_text()
    if re.search(r"^\s*stages\s*=", text, re.M):  # --epochs is refused with stages: one epoch of each stage
        short = tmp_path / path.name
        short.write_text(re.sub(r"^(\s*)stages\s*=.*$", r"\g<1>" + SHORT_STAGES, text, flags=re.M))
        code, stdout, err = run_cli("train", str(short), "--quiet", "--out", str(out))
        epochs = 3
    else:
        code, stdout, err = run_cli("train", str(path), "--epochs", "1", "--quiet", "--out", str(out))
        epochs = 1
    assert code == 0, err
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == epochs
    record = json.loads(lines[0])
    assert record["epoch"] in (0, 1)
    assert (out / "model.safetensors").exists() and (out / "meta.json").exists()
    if path.name in FLOORS:
        key, op, bound = FLOORS[path.name]
        value = json.loads(lines[-1])["val"][key]
        assert value > bound if op == ">" else value < bound, (path.name, key, value)
    if epochs == 3:
        assert [json.loads(line)["stage"] for line in lines] == ["warm", "joint", "last_layer"]
        assert "push" in json.loads(lines[1])
