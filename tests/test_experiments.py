"""Experiments as a researcher runs them: honest evaluation, metrics, loggers, --set and sweeps,
and the training knobs (accumulate, precision, devices, schedules, optimizers)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from helpers import prepared, trainer_for
from test_train import SPEC as TRAIN_SPEC

import dsl
from dsl.checking.train.metrics import METRICS
from dsl.checking.train.objective import MetricUse
from dsl.language.diagnostics import NO_SPAN
from dsl.training.metrics import SplitMetrics

# test_train's iris classifier, with three metrics and no schedule
SPEC = (TRAIN_SPEC.replace("metrics   = [accuracy(logits, y)]",
                           "metrics   = [accuracy(logits, y), f1(logits, y), accuracy(logits, y, top_k=2)]")
        .replace("    schedule  = step(step_size=1, gamma=0.7)\n", "").replace("    seed      = 0\n", ""))


@pytest.fixture()
def spec(tmp_path: Path) -> str:
    path = tmp_path / "iris.dsl"
    path.write_text(SPEC)
    return str(path)


def train(*args: str) -> tuple[int, str, str]:
    return run_cli("train", *args, "--quiet")


# --------------------------------------------------------------------------- honest evaluation


def test_validation_picks_the_epoch_and_the_test_split_is_evaluated_once(spec, tmp_path) -> None:
    out = tmp_path / "run"
    code, stdout, err = train(spec, "--out", str(out))
    assert code == 0, err
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("test" not in r and set(r["val"]) == {"loss", "accuracy", "f1", "top2_accuracy"} for r in records)
    meta = json.loads((out / "meta.json").read_text())
    best = max(records, key=lambda r: r["val"]["accuracy"])  # the first of equals
    assert meta["best"]["epoch"] == best["epoch"] == meta["test"]["epoch"]
    assert (out / "best.safetensors").exists()
    assert f"test: once, on epoch {best['epoch']}'s weights" in stdout
    assert all(len(line) <= 80 for line in stdout.splitlines() if line[:1] in "┏┃┡│└")  # the table fits 80 columns


def test_without_a_validation_split_the_last_epoch_is_tested_and_said_so(spec, tmp_path) -> None:
    Path(spec).write_text(SPEC.replace("iris(batch=16)", "iris(batch=16, val=0)"))
    code, stdout, err = train(spec, "--out", str(tmp_path / "run"))
    assert code == 0, err
    assert "last epoch's weights (this data has no validation split)" in stdout
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["test"]["weights"] == "last" and meta["test"]["epoch"] == 4
    code, _, err = train(spec, "--out", str(tmp_path / "es"), "--set", "early_stop=early_stop(metric=accuracy)")
    assert code == 1 and "early_stop watches the validation split" in err


def test_karate_chooses_on_validation_nodes(tmp_path) -> None:
    out = tmp_path / "run"
    code, _, err = train(str(Path(__file__).parent.parent / "specs" / "gat_karate.dsl"), "--epochs", "5",
                         "--out", str(out))
    assert code == 0, err
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert set(first) >= {"train", "val"} and "test" not in first and "graph" not in first
    assert json.loads((out / "meta.json").read_text())["test"]["weights"] == "best"


# --------------------------------------------------------------------------- metrics


def _use(name: str, outputs: list[str], **consts: object) -> MetricUse:
    return MetricUse(name, METRICS[name], outputs, dict(consts), METRICS[name].higher_is_better, NO_SPAN)


def test_metrics_agree_with_scikit_learn_over_batches() -> None:
    from sklearn import metrics as sk

    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(90, 4, generator=g), torch.randint(0, 4, (90,), generator=g)
    pred, target = torch.randn(90, generator=g), torch.randn(90, generator=g)
    pair = ["m.logits", "m.target"]
    uses = [_use("accuracy", pair), _use("accuracy", pair, top_k=2), _use("f1", pair), _use("precision", pair),
            _use("recall", pair, average="weighted"), _use("auroc", pair), _use("perplexity", pair),
            _use("mse", ["r.input", "r.target"]), _use("mae", ["r.input", "r.target"])]
    for i, u in enumerate(uses):
        u.name = f"{u.name}{i}"
    split = SplitMetrics(uses, torch.device("cpu"))
    for rows in (slice(0, 50), slice(50, 90)):  # two batches of different sizes
        split.update({"loss": torch.tensor(0.0), "m.logits": logits[rows], "m.target": y[rows],
                      "r.input": pred[rows], "r.target": target[rows]}, rows.stop - rows.start)
    got = split.compute()
    p, t = logits.argmax(-1).numpy(), y.numpy()
    probs = torch.softmax(logits, -1).numpy()
    want = [sk.accuracy_score(t, p), sk.top_k_accuracy_score(t, probs, k=2), sk.f1_score(t, p, average="macro"),
            sk.precision_score(t, p, average="macro"), sk.recall_score(t, p, average="weighted"),
            sk.roc_auc_score(t, probs, multi_class="ovr", average="macro"),
            math.exp(float(torch.nn.functional.cross_entropy(logits, y))),
            sk.mean_squared_error(target.numpy(), pred.numpy()), sk.mean_absolute_error(target.numpy(), pred.numpy())]
    assert [got[u.name] for u in uses] == pytest.approx(want, rel=1e-4, abs=1e-5)


def test_metric_keys_names_and_checks() -> None:
    cfg = prepared(SPEC.replace("f1(logits, y)", 'f1(logits, y, name="macro_f1")')).cfg
    assert [m.name for m in cfg.metrics] == ["accuracy", "macro_f1", "top2_accuracy"]
    diags = dsl.check(dsl.loads(SPEC.replace("f1(logits, y)", "accuracy(logits, y)"), file="s.dsl"))
    assert [d.code for d in diags] == ["E0203"] and "name=" in (diags[0].help or "")
    for bad, code in (("f1(logits, y, average=\"mean\")", "E0401"), ("accuracy(logits, y, top_k=4)", "E0401"),
                      ("f1(logits, y, name=3)", "E0401")):
        diags = dsl.check(dsl.loads(SPEC.replace("f1(logits, y)", bad), file="s.dsl"))
        assert [d.code for d in diags] == [code], bad
    mse_loss = SPEC.replace("cross_entropy(logits, y)", "mse(logits, logits * 0.5)")
    assert dsl.check(dsl.loads(mse_loss, file="s.dsl")) == []  # mse is a loss and a metric
    mae_loss = SPEC.replace("cross_entropy(logits, y)", "mae(logits, logits * 0.5)")
    assert [d.code for d in dsl.check(dsl.loads(mae_loss, file="s.dsl"))] == ["E0501"]


# --------------------------------------------------------------------------- loggers


def test_csv_and_tensorboard_logs_per_step_and_epoch(spec, tmp_path) -> None:
    import pandas as pd
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    Path(spec).write_text(SPEC.replace("epochs    = 4", "epochs    = 3\n    loggers   = [csv]"))
    code, _, err = train(spec, "--out", str(out), "--logger", "tensorboard")
    assert code == 0, err
    log = pd.read_csv(out / "metrics.csv")
    assert list(log.columns) == ["epoch", "step", "key", "value"]
    steps = log[log.key == "train/loss_step"]
    assert list(steps.step) == list(range(1, len(steps) + 1)) and len(steps) == 3 * 6  # 90 rows, batch 16
    per_epoch = log[~log.key.str.endswith("_step")].pivot(index="epoch", columns="key", values="value")
    assert per_epoch["val/accuracy"].notna().sum() == 3 and per_epoch["test/accuracy"].notna().sum() == 1
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss_step", "lr_step", "train/loss", "val/accuracy", "test/accuracy"} <= tags
    assert [e.step for e in events.Scalars("val/accuracy")] == [6, 12, 18]


def test_resume_drops_the_rows_logged_after_the_checkpoint(spec, tmp_path) -> None:
    import pandas as pd

    out = tmp_path / "run"
    Path(spec).write_text(SPEC.replace("epochs    = 4", "epochs    = 4\n    loggers   = [csv]"))
    assert train(spec, "--out", str(out), "--epochs", "2")[0] == 0
    assert train(spec, "--out", str(out), "--resume")[0] == 0
    log = pd.read_csv(out / "metrics.csv")
    assert log[log.key == "val/loss"].epoch.tolist() == [1, 2, 3, 4]


# --------------------------------------------------------------------------- --set and sweeps


def test_set_reaches_train_keys_and_optimizer_arguments(spec) -> None:
    p = prepared(spec, lr=0.2, batch=32, epochs=2, momentum=0.9, optimizer="sgd", precision="bf16")
    assert p.cfg.optimizer[0] == "sgd" and p.cfg.optimizer[1].lr == 0.2 and p.cfg.optimizer[1].momentum == 0.9
    assert p.cfg.source_params.batch == 32 and p.cfg.epochs == 2 and p.cfg.precision == "bf16"
    p = prepared(spec, **{"schedule": "cosine(warmup=1)", "schedule.eta_min": 0.001, "val": 0.3})
    assert p.cfg.schedule[0] == "cosine" and p.cfg.schedule[1].eta_min == 0.001 and p.cfg.source_params.val == 0.3
    assert prepared(spec, hidden=4).overrides == {"hidden": 4}  # a param stays a param


def test_set_mistakes_are_diagnostics(spec) -> None:
    code, _, err = run_cli("check", spec, "--set", "lr=-1", "--set", "lrr=2", "--set", "precision=fp8")
    assert code == 1
    assert "invalid `lr` for `adam`" in err and "--> --set lr=-1" in err
    assert "`--set lrr=...` names no param, train key or argument" in err and "did you mean `lr`" in err
    assert "`precision` must be one of" in err


def test_a_bad_override_of_a_model_param_is_one_error(spec) -> None:
    code, out, _ = run_cli("check", spec, "--json", "--set", "classes=1.5")
    assert code == 1 and [d["code"] for d in json.loads(out)] == ["E0404"]  # its uses are not "unknown"


def test_a_sweep_trains_the_grid_into_one_folder_and_one_table(spec, tmp_path) -> None:
    import pandas as pd

    out = tmp_path / "sweep"
    code, stdout, err = train(spec, "--out", str(out), "--set", "lr=0.01,0.05", "--set", "hidden=4,8",
                              "--set", "epochs=2")
    assert code == 0, err
    runs = sorted(p for p in out.iterdir() if p.is_dir())
    assert [p.name for p in runs] == ["01-lr=0.01-hidden=4", "02-lr=0.01-hidden=8", "03-lr=0.05-hidden=4",
                                      "04-lr=0.05-hidden=8"]
    assert json.loads((runs[2] / "meta.json").read_text())["overrides"] == {"lr": 0.05, "hidden": 4, "epochs": 2}
    table = pd.read_csv(out / "sweep.csv")
    assert len(table) == 4 and list(table.lr) == [0.01, 0.01, 0.05, 0.05] and "test_accuracy" in table
    body = [line for line in stdout.splitlines() if line.startswith("│")]
    assert len(body) == 4 and "* best by validation:" in stdout


def test_the_command_line_takes_section_dot_argument(spec, tmp_path) -> None:
    code, out, err = run_cli("check", spec, "--json", "--set", "optimizer=sgd", "--set", "optimizer.lr=0.3",
                             "--set", "schedule=onecycle(max_lr=0.1)", "--set", "schedule.pct_start=0.2")
    assert code == 0, err
    code, _, err = run_cli("check", spec, "--set", "optimizer.lr.x=1")
    assert code == 2 and "SECTION.ARG=VALUE" in err


def test_sweep_mistakes_stop_it_before_anything_trains(spec, tmp_path) -> None:
    code, _, err = train(spec, "--out", str(tmp_path / "a"), "--set", "hidden=4,")
    assert code == 2 and "--set hidden=4, has an empty value" in err
    code, _, err = train(spec, "--out", str(tmp_path / "b"), "--set", "hiden=4,8")
    assert code == 1 and err.count("E0404") == 1 and "did you mean `hidden`" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_an_out_that_holds_a_run_or_no_run_is_a_diagnostic(spec, tmp_path) -> None:
    out = tmp_path / "run"
    assert train(spec, "--out", str(out), "--set", "epochs=1")[0] == 0
    code, _, err = train(spec, "--out", str(out), "--set", "epochs=1")
    assert code == 1 and "error[E0706]" in err and "already holds a run: pass --resume" in err
    code, _, err = train(spec, "--out", str(out), "--set", "epochs=1,2")
    assert code == 1 and "error[E0706]" in err and "is not empty" in err
    code, _, err = train(spec, "--out", str(tmp_path / "none"), "--resume")
    assert code == 1 and "error[E0702]" in err and "--resume: no checkpoint" in err
    for command in ("eval", "predict"):
        code, _, err = run_cli(command, str(tmp_path / "none"), *(["--out", "p.npz"] if command == "predict" else []))
        assert code == 1 and "error[E0702]" in err and "no such run directory" in err, (command, err)
    code, _, err = run_cli("inspect", str(tmp_path / "none"))
    assert code == 1 and err.startswith("dsl: error:")


def test_epochs_given_two_ways_is_refused(spec, tmp_path) -> None:
    for sets in (["epochs=1"], ["epochs=1,2"]):
        code, _, err = train(spec, "--out", str(tmp_path / "r"), "--epochs", "3", *[f"--set={s}" for s in sets])
        assert code == 2 and "--epochs and --set epochs=" in err and "give one of them" in err
    assert not (tmp_path / "r").exists()


def test_a_sweep_value_in_brackets_is_one_value(spec, tmp_path) -> None:
    code, stdout, err = train(spec, "--out", str(tmp_path / "r"), "--set", "loggers=[csv, tensorboard]",
                              "--set", "epochs=1")
    assert code == 0 and "sweep.csv" not in stdout, err
    assert (tmp_path / "r" / "metrics.csv").exists() and (tmp_path / "r" / "tensorboard").is_dir()


# --------------------------------------------------------------------------- knobs


def test_accumulating_two_half_batches_is_one_full_batch_step(tmp_path) -> None:
    whole = SPEC.replace("iris(batch=16)", "iris(batch=90)").replace("epochs    = 4", "epochs    = 1")
    half = whole.replace("iris(batch=90)", "iris(batch=45)").replace("epochs    = 1", "epochs    = 1\n    accumulate = 2")
    a, b = trainer_for(whole), trainer_for(half)
    a.fit()
    b.fit()
    wa, wb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    assert b.global_step == 1


def test_bf16_on_the_cpu_trains_and_fp16_asks_for_a_gpu(spec, tmp_path) -> None:
    code, _, err = train(spec, "--out", str(tmp_path / "b"), "--set", "precision=bf16", "--epochs", "1")
    assert code == 0, err
    code, _, err = train(spec, "--out", str(tmp_path / "f"), "--set", "precision=fp16", "--epochs", "1")
    assert code == 1 and 'precision = "fp16" needs a CUDA device' in err


def test_device_names(spec, tmp_path) -> None:
    code, _, err = train(spec, "--out", str(tmp_path / "g"), "--device", "gpu")
    assert code == 2 and "expected cpu, cuda or cuda:N" in err
    if not torch.cuda.is_available():
        code, _, err = train(spec, "--out", str(tmp_path / "c"), "--device", "cuda:1")
        assert code == 1 and "--device cuda:1: no CUDA device" in err


def _lrs(spec_text: str) -> list[float]:
    trainer = trainer_for(spec_text)
    seen: list[float] = []
    original = trainer.opt.step

    def step(*args: object, **kw: object) -> object:
        seen.append(trainer.opt.param_groups[0]["lr"])
        return original(*args, **kw)

    trainer.opt.step = step
    trainer.fit()
    return seen


def test_schedules_move_the_learning_rate_per_step(spec) -> None:
    base = SPEC.replace("iris(batch=16)", "iris(batch=30)")  # 3 steps an epoch, 12 in all
    cosine = _lrs(base.replace("epochs    = 4", "epochs    = 4\n    schedule = cosine(warmup=1, eta_min=0.005)"))
    assert cosine[:3] == pytest.approx([0.05 / 4, 0.05 * 2 / 4, 0.05 * 3 / 4])  # warming up over 3 steps
    assert cosine[3] == pytest.approx(0.05) and cosine[-1] < 0.01 and len(set(cosine)) == 12
    onecycle = _lrs(base.replace("epochs    = 4", "epochs    = 4\n    schedule = onecycle(max_lr=0.1)"))
    assert onecycle[0] == pytest.approx(0.1 / 25) and max(onecycle) == pytest.approx(0.1, rel=0.05)
    warm = _lrs(base.replace("epochs    = 4", "epochs    = 4\n    schedule = warmup(epochs=2, start_factor=0.5)"))
    assert warm[0] == pytest.approx(0.025) and warm[6:] == pytest.approx([0.05] * 6)
    plateau = _lrs(base.replace("adam(lr=0.05)", "sgd(lr=1e-5)")
                   .replace("epochs    = 4", "epochs    = 4\n    schedule = plateau(patience=0, factor=0.5)"))
    assert plateau[0] == plateau[3] == 1e-5 and plateau[-1] < plateau[0]  # no progress: cut after epoch 2


def test_optimizers_and_knobs_are_checked_statically(spec) -> None:
    cases = {
        "optimizer = sgd(lr=0.1, nesterov=true)": ("E0401", "nesterov=true needs momentum > 0"),
        "optimizer = rmsprop(alpha=1.5)": ("E0401", "alpha"),
        "accumulate = 0": ("E0501", "`accumulate` must be an integer >= 1"),
        "precision = \"16\"": ("E0501", "`precision` must be one of"),
        "loggers = [csv, wandb]": ("E0501", "unknown logger `wandb`"),
        "schedule = onecycle(pct_start=1.5)": ("E0401", "pct_start"),
    }
    without_optimizer = SPEC.replace("    optimizer = adam(lr=0.05)\n", "")
    for line, (code, text) in cases.items():
        diags = dsl.check(dsl.loads(without_optimizer.replace("    epochs    = 4", f"    epochs    = 4\n    {line}"),
                                    file="s.dsl"))
        assert [d.code for d in diags] == [code] and text in diags[0].message, (line, diags)
    assert dsl.check(dsl.loads(SPEC.replace("adam(lr=0.05)", "rmsprop(lr=0.01, momentum=0.9, centered=true)"),
                               file="s.dsl")) == []


def test_sgd_with_nesterov_momentum_and_rmsprop_train(spec, tmp_path) -> None:
    for i, opt in enumerate(("sgd(lr=0.1, momentum=0.9, nesterov=true)", "rmsprop(lr=0.01)")):
        code, _, err = train(spec, "--out", str(tmp_path / str(i)), "--set", f"optimizer={opt}")
        assert code == 0, err
        assert json.loads((tmp_path / str(i) / "meta.json").read_text())["test"]["accuracy"] > 0.6


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize("flag,names", [("--data", {"table", "images", "pyg", "digits"}),
                                        ("--losses", {"cross_entropy", "mse", "cluster_cost"}),
                                        ("--metrics", {"accuracy", "f1", "auroc", "perplexity", "mae"}),
                                        ("--optimizers", {"sgd", "rmsprop", "cosine", "onecycle", "plateau"})])
def test_blocks_lists_the_train_sections_vocabulary(flag, names) -> None:
    code, out, _ = run_cli("blocks", flag, "--json")
    assert code == 0 and names <= {r["name"] for r in json.loads(out)}


def test_the_language_reference_lists_what_the_registries_hold() -> None:
    from dsl.tools.train_catalogue import main

    doc = Path(__file__).parent.parent / "docs" / "LANGUAGE.md"
    assert main(["--check", str(doc)]) == 0, "run: python -m dsl.tools.train_catalogue --write docs/LANGUAGE.md"
    text = doc.read_text()
    for word in ("accumulate", "precision", "loggers", "table(", "images(", "pyg(", "early_stop", "--set"):
        assert word in text, word


def test_no_document_points_at_the_design_folder() -> None:
    root = Path(__file__).parent.parent
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        assert "../shared" not in path.read_text(), path


def test_the_readme_main_job_reaches_097_on_digits_and_shows_it(tmp_path) -> None:
    root = Path(__file__).parent.parent
    code, stdout, err = train(str(root / "specs" / "classifier.dsl"), "--out", str(tmp_path / "run"))
    assert code == 0, err
    test = json.loads((tmp_path / "run" / "meta.json").read_text())["test"]
    assert test["accuracy"] >= 0.97, test
    rows = [line for line in stdout.splitlines() if line.startswith("│ test")]
    assert rows and f"{test['accuracy']:.4f}" in rows[0]
    assert all(len(line) <= 80 for line in stdout.splitlines() if not line.startswith("run directory"))
    assert rows[0] in (root / "README.md").read_text()  # the README shows what the job prints


def test_inspect_plots_the_learning_curves(spec, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from dsl.cli.commands.inspect import curves, read_run

    out = tmp_path / "run"
    assert train(spec, "--out", str(out), "--epochs", "2")[0] == 0
    _, records = read_run(str(out))
    lines = curves(records)
    assert set(lines) == {"loss", "accuracy", "f1", "top2_accuracy"} and set(lines["loss"]) == {"train", "val"}
    assert lines["accuracy"]["val"] == [(1, records[0]["val"]["accuracy"]), (2, records[1]["val"]["accuracy"])]
    code, stdout, err = run_cli("inspect", str(out), "--plot", str(tmp_path / "curves.png"))
    assert code == 0, err
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "test (epoch" in stdout  # the summary shows the test split's numbers
