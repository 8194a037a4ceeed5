"""Static checking of the train section (pure Python): codes, spans, suggestions, dims."""

from __future__ import annotations

import pytest

import dsl
from dsl.api import analyse
from dsl.language.shapes import TensorType

MODEL = """
param hidden = 8
model C(classes: int = 10) {
    input x: [B, F]
    h = relu(Linear(x, out=hidden))
    logits = Linear(h, out=classes)
    output logits: [B, classes]
}
"""
GRAPH_MODEL = MODEL.replace("[B, F]", "[N, F]").replace("[B, classes]", "[N, classes]")


def spec_with(train: str, model: str = MODEL):
    return dsl.loads(model + "\ntrain {\n" + train + "\n}\n", file="t.dsl")


def run_check(train: str, model: str = MODEL, **overrides):
    return dsl.check(spec_with(train, model), **overrides)


GOOD = "data = digits(batch=32)\nloss = cross_entropy(logits, y)\nmetrics = [accuracy(logits, y)]\nepochs = 2"


def codes(diags) -> list[str]:
    return [d.code for d in diags]


def test_valid_section_binds_feature_dim() -> None:
    a = analyse(spec_with(GOOD))
    assert a.diagnostics == [] and a.data_dims == {"F": 64}
    assert a.program.input_types()["x"].shape[-1] == 64


def test_unknown_key_suggests_and_points_at_key() -> None:
    (d,) = run_check(GOOD + "\nepochz = 3")
    assert d.code == "E0501" and "epochs" in (d.help or "")
    text = (MODEL + "\ntrain {\n" + GOOD + "\nepochz = 3").splitlines()
    assert text[d.span.line - 1].startswith("epochz") and d.span.col == 1


def test_unknown_source_suggests() -> None:
    diags = run_check(GOOD.replace("digits(batch=32)", "digit(batch=32)"))
    assert codes(diags) == ["E0502"] and "digits" in (diags[0].help or "")


def test_missing_field_lists_fields() -> None:
    model = MODEL.replace("input x: [B, F]", "input x: [B, F]\n    input mask: [B] bool")
    diags = run_check(GOOD, model)
    assert codes(diags) == ["E0503"] and "x, y" in diags[0].label


def test_dtype_mismatch() -> None:
    assert "E0302" in codes(run_check(GOOD, MODEL.replace("input x: [B, F]", "input x: [B, F] long")))


def test_shape_conflict_has_data_note() -> None:
    (d,) = run_check(GOOD, MODEL.replace("input x: [B, F]", "input x: [B, 32]"))
    assert d.code == "E0301" and any("[B, 64]" in n.message for n in d.notes)


def test_unknown_name_in_loss_suggests() -> None:
    (d,) = run_check(GOOD.replace("cross_entropy(logits, y)", "cross_entropy(logit, y)"))
    assert d.code == "E0201" and "logits" in (d.help or "")


def test_unknown_loss_and_bad_arity() -> None:
    diags = run_check(GOOD.replace("cross_entropy(logits, y)", "cross_entropi(logits, y)"))
    assert codes(diags) == ["E0201"] and "cross_entropy" in (diags[0].help or "")
    assert codes(run_check(GOOD.replace("cross_entropy(logits, y)", "cross_entropy(logits)"))) == ["E0202"]


def test_loss_shape_and_dtype_checked() -> None:
    # logits against a float tensor as target: dtype mismatch on the target
    diags = run_check(GOOD.replace("cross_entropy(logits, y)", "cross_entropy(logits, x)"))
    assert codes(diags) in (["E0302"], ["E0303"])
    model = MODEL.replace("output logits", "score = Linear(h, out=3)\n    output score\n    output logits")
    diags = run_check(GOOD.replace("loss = cross_entropy(logits, y)", "loss = mse(logits, score)"), model)
    assert codes(diags) == ["E0301"]


def test_mask_must_be_bool_rows() -> None:
    train = "data = karate()\nloss = cross_entropy(logits, y, mask=train_mask)\nmetrics = [accuracy(logits, y, mask=y)]"
    assert codes(run_check(train, GRAPH_MODEL)) == ["E0302"]


def test_loss_must_be_scalar_and_terms_combine() -> None:
    assert codes(run_check(GOOD.replace("cross_entropy(logits, y)", "logits"))) == ["E0501"]
    with_null = GOOD.replace("cross_entropy(logits, y)", "cross_entropy(logits, y) + 0.5 * nll(logits, y, mask=null)")
    assert codes(run_check(with_null)) == ["E0206"]  # mask=null is not a tensor
    ok = GOOD.replace("cross_entropy(logits, y)", "cross_entropy(logits, y) + 0.5 * nll(logits, y)")
    assert run_check(ok) == []


def test_optimizer_schedule_and_scalars_validated() -> None:
    assert codes(run_check(GOOD + "\noptimizer = adam(lr=0.01, momentm=0.9)")) == ["E0402"]
    diags = run_check(GOOD + "\noptimizer = adamm(lr=0.01)")
    assert codes(diags) == ["E0501"] and "adam" in (diags[0].help or "")
    assert codes(run_check(GOOD + "\nschedule = step(gamma=0.5)")) == ["E0403"]
    assert codes(run_check(GOOD + "\noptimizer = sgd(lr=-1)")) == ["E0401"]
    assert codes(run_check(GOOD.replace("epochs = 2", "epochs = 2.5"))) == ["E0501"]
    assert run_check(GOOD + "\nschedule = cosine()\ngrad_clip = 1.0\nseed = 3\nbatch = 16") == []


def test_params_usable_in_train_constants() -> None:
    assert run_check(GOOD + "\noptimizer = adam(lr=hidden * 0.001)") == []
    a = analyse(spec_with(GOOD + "\noptimizer = adam(lr=hidden * 0.001)"), overrides={"hidden": 100})
    assert a.config.optimizer[1].lr == pytest.approx(0.1)


@pytest.mark.parametrize(("value", "code"), [("9 ** 9 ** 9", "E0801"), ("2 ** 100", "E0801"), ("2 ** 62 * 4", "E0801"),
                                             ("1 / 0", "E0405")])
def test_train_constants_have_the_language_limits(value: str, code: str) -> None:
    """The train section's constants go through the language's evaluator: the same limits,
    the same codes, a span, and no hang on a huge power."""
    import time

    start = time.perf_counter()
    (d,) = run_check(GOOD.replace("epochs = 2", f"epochs = {value}"))
    assert time.perf_counter() - start < 1.0
    assert d.code == code and d.span.known and d.span.line == MODEL.count("\n") + 6


def test_early_stop_names_a_metric() -> None:
    assert run_check(GOOD + "\nearly_stop = early_stop(metric=accuracy, patience=3)") == []
    diags = run_check(GOOD + "\nearly_stop = early_stop(metric=acuracy, patience=3)")
    assert codes(diags) == ["E0503"] and "accuracy" in (diags[0].help or "")
    cfg = analyse(spec_with(GOOD + "\nearly_stop = early_stop(metric=accuracy)")).config
    assert cfg.early_stop is not None and cfg.early_stop.mode == "max"
    assert cfg.early_stop.metric == "accuracy"


def test_batch_key_overrides_source_and_is_rejected_for_full_graphs() -> None:
    a = analyse(spec_with(GOOD + "\nbatch = 8"))
    assert a.diagnostics == [] and a.config.source_params.batch == 8
    assert codes(run_check("data = karate()\nloss = cross_entropy(logits, y)\nbatch = 8", GRAPH_MODEL)) == ["E0501"]


def test_every_diagnostic_has_a_known_code_and_span() -> None:
    from dsl.language.diagnostics import CODES

    bad = "data = digits(batch=3)\nepochz = 1\nloss = foo(logits)\nmetrics = [accuracy(logits, z)]\noptimizer = sgd(momentum=-1)"
    diags = run_check(bad)
    assert len(diags) >= 3
    for d in diags:
        assert d.code in CODES and d.span.known, d


def test_data_dims_from_karate() -> None:
    spec = spec_with("data = karate()\nloss = cross_entropy(logits, y, mask=train_mask)", GRAPH_MODEL)
    assert analyse(spec).data_dims == {"N": 34, "F": 34}
    assert analyse(spec_with(GOOD)).data_dims == {"F": 64}


def test_file_source_checked_statically(tmp_path) -> None:
    import numpy as np

    np.savez(tmp_path / "d.npz", x=np.zeros((10, 5), np.float32), y=np.zeros(10, np.int64))
    a = analyse(spec_with(GOOD.replace("digits(batch=32)", f'"{tmp_path / "d.npz"}"')))
    assert a.diagnostics == [] and a.program.input_types()["x"] == TensorType((a.program.input_types()["x"].shape[0], 5))
    assert codes(run_check(GOOD.replace("digits(batch=32)", f'"{tmp_path / "none.npz"}"'))) == ["E0702"]


def test_the_loss_sees_values_the_model_does_not_output() -> None:
    assert run_check(GOOD.replace("cross_entropy(logits, y)", "cross_entropy(logits, y) + 0.01 * mean(h * h)")) == []


def test_a_metric_is_not_a_loss() -> None:
    (d,) = run_check(GOOD.replace("loss = cross_entropy(logits, y)", "loss = accuracy(logits, y)"))
    assert d.code == "E0501" and "metric" in d.message and d.span.known


def test_a_loss_that_does_not_reach_the_model_is_refused() -> None:
    (d,) = run_check(GOOD.replace("cross_entropy(logits, y)", "mse(x, x)"))
    assert d.code == "E0501" and "differentiabl" in d.message


def test_a_misspelt_loss_is_reported_beside_the_model_or_data_errors_that_stop_the_check(tmp_path) -> None:
    """The objective is checked once the model and data are; its function names are not kept
    waiting: every mistake of one `dsl check` shows at once."""
    text = """model M {
    input x: [B, 64]
    logits = Linear(x, out=10)
    output logits: OUT
}
train {
    data = DATA
    loss = crossentropy(logits, y)
    metrics = [acuracy(logits, y)]
}
"""
    for out, data, first in (("[B, 10]", "digitz()", "E0502"), ("[B, 11]", "digits()", "E0304")):
        path = tmp_path / "spec.dsl"
        path.write_text(text.replace("OUT", out).replace("DATA", data))
        codes = [d.code for d in dsl.check(str(path))]
        assert codes == [first, "E0201", "E0503"], codes
