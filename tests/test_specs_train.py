"""Every spec with a train section trains (one short epoch) through `dsl train`."""

from __future__ import annotations

import json

import pytest
from conftest import SPECS, run_cli

import dsl

TRAINABLE = sorted(p for p in SPECS.glob("*.dsl") if dsl.load(p).train is not None)


@pytest.mark.parametrize("path", TRAINABLE, ids=[p.name for p in TRAINABLE])
def test_spec_trains_one_epoch(path, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = run_cli("train", str(path), "--epochs", "1", "--quiet", "--out", str(out))
    assert code == 0, err
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["epoch"] in (0, 1)
    assert (out / "model.safetensors").exists() and (out / "meta.json").exists()
