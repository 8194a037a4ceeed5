"""Example specs reach a stated accuracy on data that ships offline (DESIGN §8), at
reduced size so that the suite stays fast. Full-size numbers: docs/RESULTS.md
(reproduced by `python -m results`).

Each floor sits with a margin below what seeds 0, 1 and 2 reach at the reduced
size, and well above chance or the majority class; the runs use seed 0 and are
deterministic on CPU.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import SPECS, run_cli

LOOKUP = "accuracy"
ACC = "accuracy"

CASES = [
    # spec, extra arguments, split, metric, at least
    ("gat_karate.dsl", ("--epochs", "100"), "test", ACC, 0.7),
    ("proto_digits.dsl", ("--epochs", "4"), "test", ACC, 0.85),
    ("moe_digits.dsl", ("--epochs", "4"), "test", ACC, 0.85),
    # DictionaryLookup with k = 4 (chance 0.25): seeds 0-2 reach 1.0 from epoch 3 on.
    ("gatv2_lookup.dsl", ("--set", "k=4", "--epochs", "4"), "test", LOOKUP, 0.95),
    # MIL bags, target 9 (majority class about 0.6): seeds 0-2 reach 0.92, 0.94, 0.88 at epoch 8.
    ("hopfield_mil.dsl", ("--epochs", "8"), "test", ACC, 0.8),
]


def _train(tmp_path: Path, spec: str, *args: str) -> list[dict]:
    """The epoch records, then the test split's numbers (once, on the weights validation chose)."""
    out = tmp_path / "run"
    code, _, err = run_cli("train", str(SPECS / spec), *args, "--seed", "0", "--quiet", "--out", str(out))
    assert code == 0, err
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [*records, {"test": json.loads((out / "meta.json").read_text())["test"], "train": records[-1]["train"]}]


@pytest.mark.parametrize("spec,args,split,metric,floor", CASES, ids=[c[0] for c in CASES])
def test_spec_reaches_stated_accuracy(spec, args, split, metric, floor, tmp_path):
    last = _train(tmp_path, spec, *args)[-1]
    assert last[split][metric] >= floor, last


def test_gat_cannot_fit_dictionary_lookup_where_gatv2_does(tmp_path):
    """Brody et al. 2022: static attention (GAT) cannot express the lookup; with the budget
    that brings GATv2 to 1.0 (test above), GAT stays near chance (seeds 0-2: 0.46, 0.38, 0.34)."""
    last = _train(tmp_path, "gat_lookup.dsl", "--set", "k=4", "--epochs", "4")[-1]
    assert last["test"][LOOKUP] <= 0.7, last
    assert last["train"]["loss"] > 0.5 * math.log(4), last  # it has not fitted the training graphs


def test_protonet_learns_episodes_and_classifies_held_out_classes(tmp_path):
    """5-way 1-shot. One epoch of episodes takes the training loss from log(5) (uniform) to
    under half of it (seeds 0-2: 0.41, 0.48, 0.42), so the gradient reaches the encoder
    through the prototypes; on the held-out classes (chance 0.2) seeds 0-2 reach 0.49,
    0.54, 0.47. (A longer run does not raise the latter: docs/RESULTS.md.)"""
    last = _train(tmp_path, "protonet_episodes.dsl", "--epochs", "1")[-1]
    assert last["train"]["loss"] < 0.6 * math.log(5), last
    assert last["test"][ACC] >= 0.35, last


# --------------------------------------------------------------------------- baselines and `python -m results`

ROOT = Path(__file__).resolve().parent.parent
BASELINES = sorted((SPECS / "baselines").glob("*.dsl"))
WEIGHTLESS = {"centroid_episodes.dsl"}  # evaluated as built, never trained


def _results_package():
    import sys

    if str(ROOT) not in sys.path:  # `results/` is a repository tool, not an installed package
        sys.path.insert(0, str(ROOT))
    import results.measure
    import results.report
    import results.rows

    return results


@pytest.mark.parametrize("path", BASELINES, ids=[p.name for p in BASELINES])
def test_baseline_spec_checks_compiles_and_runs(path, tmp_path):
    assert run_cli("check", str(path))[0] == 0
    code, out, err = run_cli("compile", str(path))
    assert code == 0 and "total" in out, err
    if path.name in WEIGHTLESS:
        return
    out_dir = tmp_path / "run"
    code, _, err = run_cli("train", str(path), "--epochs", "1", "--quiet", "--out", str(out_dir))
    assert code == 0, err
    assert len((out_dir / "metrics.jsonl").read_text().splitlines()) == 1


def test_nearest_centroid_baseline_on_raw_pixels():
    """ProtoNet without an encoder is nearest-centroid; on standardised pixels of the held-out
    digits it reaches 0.65, 0.61, 0.62 (1-shot, seeds 0-2; chance 0.2)."""
    measure = _results_package().measure
    metrics = measure.eval_without_training(str(SPECS / "baselines" / "centroid_episodes.dsl"), [], seed=0)
    assert metrics[ACC] >= 0.55, metrics


def test_results_rows_name_existing_specs_and_aggregate():
    res = _results_package()
    rows = res.rows.ROWS
    assert len({r.id for r in rows}) == len(rows)
    for r in rows:
        assert (ROOT / r.spec).exists(), r.spec
    assert res.rows.select("moe") == [r for r in rows if r.id.startswith("moe")]
    mean, std = res.report.mean_std([0.5, 0.7, 0.9])
    assert mean == pytest.approx(0.7) and std == pytest.approx(0.2)
    raw = {"gatv2-lookup": {"0": {"value": 1.0, "wall": 10.0, "train_loss": 0.01, "train_acc": 1.0, "seed": 0},
                            "1": {"error": "exit 1", "wall": 1.0, "seed": 1}}}
    text = res.report.table(raw)
    assert "| GATv2, 100 epochs | 1.000 ± 0.000 (1 failed) | 1 (0, 1) |" in text
    assert "`dsl train specs/gatv2_lookup.dsl --seed S --quiet" in text


def test_expert_usage_counts_every_token_of_the_split():
    import dsl
    from dsl.training.session import load_data, prepare

    measure = _results_package().measure
    prepared = prepare(str(SPECS / "moe_digits.dsl"))
    model = dsl.compile(prepared.analysis.spec)
    usage = measure.expert_usage(model, load_data(prepared.cfg), "test")
    assert set(usage) >= {"cv", "max_share", "idle"} and 0 < usage["max_share"] <= 1
