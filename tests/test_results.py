"""Example specs reach a stated accuracy on data that ships offline (DESIGN §8), at
reduced size so that the suite stays fast. Full-size numbers: docs/RESULTS.md."""

from __future__ import annotations

import json

import pytest
from conftest import SPECS, run_cli

CASES = [
    # spec, epochs, split, metric, at least
    ("gat_karate.dsl", 100, "graph", "accuracy(logits, y, mask=test_mask)", 0.7),
    ("proto_digits.dsl", 4, "test", "accuracy(logits, y)", 0.85),
    ("moe_digits.dsl", 4, "test", "accuracy(logits, y)", 0.85),
]


@pytest.mark.parametrize("spec,epochs,split,metric,floor", CASES, ids=[c[0] for c in CASES])
def test_spec_reaches_stated_accuracy(spec, epochs, split, metric, floor, tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli("train", str(SPECS / spec), "--epochs", str(epochs), "--quiet", "--out", str(out))
    assert code == 0, err
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last[split][metric] >= floor, last
