"""Static checking of the train section (pure Python): codes, spans, suggestions, dims."""

from __future__ import annotations

import pytest

import dsl
from dsl.checking.train import check_train, data_dims
from dsl.checking.train_config import resolve_train
from dsl.language.shapes import DimEnv, Sym, TensorType

MODEL = """
param hidden = 8
model C(classes: int = 10) {
    input x: [B, F]
    h = relu(Linear(x, out=hidden))
    logits = Linear(h, out=classes)
    output logits: [B, classes]
}
"""


def spec_with(train: str, model: str = MODEL):
    return dsl.loads(model + "\ntrain {\n" + train + "\n}\n", file="t.dsl")


def run_check(train: str, inputs=None, outputs=None, model: str = MODEL):
    spec = spec_with(train, model)
    env = DimEnv()
    ins = inputs or {"x": TensorType((Sym("B"), Sym("F")))}
    outs = outputs or {"logits": TensorType((Sym("B"), 10))}
    return check_train(spec, ins, outs, env), env


GOOD = "data = digits(batch=32)\nloss = cross_entropy(logits, y)\nmetrics = [accuracy(logits, y)]\nepochs = 2"


def codes(diags) -> list[str]:
    return [d.code for d in diags]


def test_valid_section_binds_feature_dim() -> None:
    diags, env = run_check(GOOD)
    assert diags == []
    assert env.resolve(Sym("F")) == 64


def test_design_examples_check_clean() -> None:
    assert dsl.check(spec_with(GOOD)) == []


def test_unknown_key_suggests_and_points_at_key() -> None:
    diags, _ = run_check(GOOD + "\nepochz = 3")
    (d,) = diags
    assert d.code == "E0501" and "epochs" in (d.help or "")
    text = (MODEL + "\ntrain {\n" + GOOD + "\nepochz = 3").splitlines()
    assert text[d.span.line - 1].startswith("epochz") and d.span.col == 1


def test_unknown_source_suggests() -> None:
    diags, _ = run_check(GOOD.replace("digits(batch=32)", "digit(batch=32)"))
    assert codes(diags) == ["E0502"] and "digits" in (diags[0].help or "")


def test_missing_field_lists_fields() -> None:
    ins = {"x": TensorType((Sym("B"), Sym("F"))), "mask": TensorType((Sym("B"),), "bool")}
    diags, _ = run_check(GOOD, inputs=ins)
    assert codes(diags) == ["E0503"] and "x, y" in diags[0].label


def test_dtype_mismatch() -> None:
    diags, _ = run_check(GOOD, inputs={"x": TensorType((Sym("B"), Sym("F")), "long")})
    assert "E0302" in codes(diags)


def test_shape_conflict_has_data_note() -> None:
    diags, _ = run_check(GOOD, inputs={"x": TensorType((Sym("B"), 32))})
    (d,) = diags
    assert d.code == "E0301" and any("[B, 64]" in n.message for n in d.notes)


def test_unknown_name_in_loss_suggests() -> None:
    diags, _ = run_check(GOOD.replace("cross_entropy(logits, y)", "cross_entropy(logit, y)"))
    (d,) = diags
    assert d.code == "E0503" and "logits" in (d.help or "")


def test_unknown_loss_and_bad_arity() -> None:
    diags, _ = run_check(GOOD.replace("cross_entropy(logits, y)", "cross_entropi(logits, y)"))
    assert codes(diags) == ["E0503"] and "cross_entropy" in (diags[0].help or "")
    diags, _ = run_check(GOOD.replace("cross_entropy(logits, y)", "cross_entropy(logits)"))
    assert codes(diags) == ["E0202"]


def test_loss_shape_and_dtype_checked() -> None:
    # logits against a float tensor as target: dtype mismatch on the target
    diags, _ = run_check(GOOD.replace("cross_entropy(logits, y)", "cross_entropy(logits, x)"))
    assert codes(diags) in (["E0302"], ["E0303"])
    outs = {"logits": TensorType((Sym("B"), 10)), "score": TensorType((Sym("B"), 3))}
    diags, _ = run_check(GOOD.replace("loss = cross_entropy(logits, y)", "loss = mse(logits, score)"), outputs=outs)
    assert codes(diags) == ["E0301"]


def test_mask_must_be_bool_rows() -> None:
    model = MODEL.replace("[B, F]", "[N, F]").replace("[B, classes]", "[N, classes]")
    train = "data = karate()\nloss = cross_entropy(logits, y, mask=train_mask)\nmetrics = [accuracy(logits, y, mask=y)]"
    diags, _ = run_check(train, {"x": TensorType((Sym("N"), Sym("F")))}, {"logits": TensorType((Sym("N"), 4))}, model)
    assert codes(diags) == ["E0302"]


def test_loss_must_be_scalar_and_terms_combine() -> None:
    diags, _ = run_check(GOOD.replace("cross_entropy(logits, y)", "logits"))
    assert codes(diags) == ["E0501"]
    ok = GOOD.replace("cross_entropy(logits, y)", "cross_entropy(logits, y) + 0.5 * nll(logits, y, mask=null)")
    diags, _ = run_check(ok)
    assert codes(diags) == ["E0501"]  # mask=null is not a tensor name
    ok = GOOD.replace("cross_entropy(logits, y)", "cross_entropy(logits, y) + 0.5 * nll(logits, y)")
    assert run_check(ok)[0] == []


def test_optimizer_schedule_and_scalars_validated() -> None:
    diags, _ = run_check(GOOD + "\noptimizer = adam(lr=0.01, momentm=0.9)")
    assert codes(diags) == ["E0402"]
    diags, _ = run_check(GOOD + "\noptimizer = adamm(lr=0.01)")
    assert codes(diags) == ["E0501"] and "adam" in (diags[0].help or "")
    diags, _ = run_check(GOOD + "\nschedule = step(gamma=0.5)")
    assert codes(diags) == ["E0403"]
    diags, _ = run_check(GOOD + "\noptimizer = sgd(lr=-1)")
    assert codes(diags) == ["E0401"]
    diags, _ = run_check(GOOD.replace("epochs = 2", "epochs = 2.5"))
    assert codes(diags) == ["E0501"]
    assert run_check(GOOD + "\nschedule = cosine()\ngrad_clip = 1.0\nseed = 3\nbatch = 16")[0] == []


def test_params_usable_in_train_constants() -> None:
    diags, _ = run_check(GOOD + "\noptimizer = adam(lr=hidden * 0.001)")
    assert diags == []
    cfg, _ = resolve_train(spec_with(GOOD + "\noptimizer = adam(lr=hidden * 0.001)"), {"hidden": 100})
    assert cfg.optimizer[1].lr == pytest.approx(0.1)


def test_early_stop_names_a_metric() -> None:
    assert run_check(GOOD + "\nearly_stop = early_stop(metric=accuracy, patience=3)")[0] == []
    diags, _ = run_check(GOOD + "\nearly_stop = early_stop(metric=acuracy, patience=3)")
    assert codes(diags) == ["E0503"] and "accuracy" in (diags[0].help or "")
    cfg, _ = resolve_train(spec_with(GOOD + "\nearly_stop = early_stop(metric=accuracy)"))
    assert cfg.early_stop is not None and cfg.early_stop.mode == "max"
    assert cfg.early_stop.metric == "accuracy(logits, y)"


def test_batch_key_overrides_source_and_is_rejected_for_full_graphs() -> None:
    cfg, diags = resolve_train(spec_with(GOOD + "\nbatch = 8"))
    assert diags == [] and cfg.source_params.batch == 8
    _, diags = resolve_train(spec_with("data = karate()\nloss = cross_entropy(logits, y)\nbatch = 8"))
    assert codes(diags) == ["E0501"]


def test_every_diagnostic_has_a_known_code_and_span() -> None:
    from dsl.language.diagnostics import CODES

    bad = "data = digits(batch=3)\nepochz = 1\nloss = foo(logits)\nmetrics = [accuracy(logits, z)]\noptimizer = sgd(momentum=-1)"
    diags, _ = run_check(bad)
    assert len(diags) >= 4
    for d in diags:
        assert d.code in CODES and d.span.known, d


def test_data_dims_from_karate() -> None:
    model = MODEL.replace("[B, F]", "[N, F]").replace("[B, classes]", "[N, classes]")
    spec = spec_with("data = karate()\nloss = cross_entropy(logits, y, mask=train_mask)", model)
    assert data_dims(spec) == {"N": 34, "F": 34}
    assert data_dims(spec_with(GOOD)) == {"F": 64}


def test_file_source_checked_statically(tmp_path) -> None:
    import numpy as np

    np.savez(tmp_path / "d.npz", x=np.zeros((10, 5), np.float32), y=np.zeros(10, np.int64))
    diags, env = run_check(GOOD.replace("digits(batch=32)", f'"{tmp_path / "d.npz"}"'))
    assert diags == [] and env.resolve(Sym("F")) == 5
    diags, _ = run_check(GOOD.replace("digits(batch=32)", f'"{tmp_path / "none.npz"}"'))
    assert codes(diags) == ["E0702"]
