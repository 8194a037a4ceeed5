"""`dsl export RUN`: trained runs of the classifier, the karate GAT, the MoE on digits and a
ProtoPNet leave the tool as ONNX, torch.export and a standalone Python file that, on raw
rows of a data file, give what `dsl predict` gives on the same rows (1e-4)."""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SPECS, run_cli

import dsl

RUNS = {  # name: (spec, epochs)
    "classifier": ("classifier.dsl", 1),
    "karate": ("gat_karate.dsl", 2),
    "moe": ("moe_digits.dsl", 1),
    "protopnet": ("proto_push_digits.dsl", 1),
}
ROWS = 25


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {name: Path(dsl.train(SPECS / spec, out=root / name, epochs=epochs, quiet=True).dir)
            for name, (spec, epochs) in RUNS.items()}


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, torch.Tensor]]]:
    """Raw inputs per run (as a user's data file holds them), with the same inputs as tensors."""
    from sklearn.datasets import load_digits
    from torch_geometric.datasets import KarateClub

    root = tmp_path_factory.mktemp("raw")
    x = load_digits().data[-ROWS:].astype(np.float32)  # raw pixels 0..16, no label column
    digits = root / "digits.csv"
    np.savetxt(digits, x, delimiter=",", header=",".join(f"p{i}" for i in range(64)), comments="", fmt="%g")
    g = KarateClub()[0]
    karate = root / "karate.npz"
    np.savez(karate, x=g.x.numpy(), edge_index=g.edge_index.numpy())
    rows = {"x": torch.from_numpy(x)}
    graph = {"x": g.x.float(), "edge_index": g.edge_index.long()}
    return {"classifier": (digits, rows), "moe": (digits, rows), "protopnet": (digits, rows), "karate": (karate, graph)}


def predicted(run: Path, data: Path, out: Path) -> dict[str, np.ndarray]:
    code, _, err = run_cli("predict", str(run), "--data", str(data), "--out", str(out))
    assert code == 0, err
    return dict(np.load(out))


def assert_matches(expected: dict[str, np.ndarray], actual: dict[str, torch.Tensor]) -> None:
    assert actual, "no outputs"
    for name, value in actual.items():
        np.testing.assert_allclose(value.detach().numpy(), expected[name], atol=1e-4, rtol=1e-4, err_msg=name)


def as_dict(out: object, names: list[str]) -> dict[str, torch.Tensor]:
    if isinstance(out, dict):
        return dict(out)
    if isinstance(out, torch.Tensor):
        return {names[0]: out}
    return dict(zip(names, out, strict=True))


@pytest.mark.parametrize("name", list(RUNS))
def test_pt2_and_python_exports_equal_predict_on_raw_rows(name: str, runs, raw, tmp_path: Path) -> None:
    data, inputs = raw[name]
    expected = predicted(runs[name], data, tmp_path / "p.npz")
    outputs = [k for k in expected if k not in ("class", "probabilities")]

    code, _, err = run_cli("export", str(runs[name]), "--to", "pt2", "-o", str(tmp_path / "m.pt2"))
    assert code == 0 and "max abs diff" in err, err
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    with torch.no_grad():
        assert_matches(expected, as_dict(program(**inputs), outputs))

    code, _, err = run_cli("export", str(runs[name]), "--to", "python", "-o", str(tmp_path / "model.py"))
    assert code == 0, err
    assert (tmp_path / "model.safetensors").is_file()
    mode = (tmp_path / "model.py").stat().st_mode & 0o777
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == mode  # shareable as the .py is
    text = (tmp_path / "model.py").read_text()
    tree = ast.parse(text)
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m == "dsl" or m.startswith("dsl.")]
    namespace: dict[str, object] = {"__file__": str(tmp_path / "model.py"), "__name__": "exported"}
    exec(compile(text, str(tmp_path / "model.py"), "exec"), namespace)
    model = namespace["load"]()  # type: ignore[operator]
    with torch.no_grad():
        assert_matches(expected, as_dict(model(**inputs), outputs))

    # dsl.load_run(run)(**inputs) is dsl predict as well
    with torch.no_grad():
        assert_matches(expected, as_dict(dsl.load_run(runs[name])(**inputs), outputs))


@pytest.mark.parametrize("name", ["classifier", "karate", "protopnet"])
def test_onnx_export_equals_predict_under_onnxruntime(name: str, runs, raw, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    data, inputs = raw[name]
    expected = predicted(runs[name], data, tmp_path / "p.npz")
    code, _, err = run_cli("export", str(runs[name]), "--to", "onnx", "-o", str(tmp_path / "m.onnx"))
    assert code == 0, err
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    feed = {i.name: inputs[i.name].numpy() for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    assert_matches(expected, {n: torch.from_numpy(v) for n, v in zip(names, session.run(None, feed), strict=True)})


def test_onnx_refuses_the_moe_run_naming_the_block_and_leaves_no_file(runs, tmp_path: Path) -> None:
    pytest.importorskip("onnxscript")
    out = tmp_path / "moe.onnx"
    code, _, err = run_cli("export", str(runs["moe"]), "--to", "onnx", "-o", str(out))
    assert code == 1 and "error[E0603]" in err and "`MoE` cannot be exported to onnx" in err
    assert not out.exists()


def test_export_takes_the_best_weights_and_names_the_default_file(runs, tmp_path: Path) -> None:
    code, _, err = run_cli("export", str(runs["moe"]), "--to", "python", "--best", cwd=str(tmp_path))
    assert code == 0, err
    assert (tmp_path / "moe_digits.py").is_file() and (tmp_path / "moe_digits.safetensors").is_file()
    from safetensors.torch import load_file

    best = load_file(str(runs["moe"] / "best.safetensors"))
    written = load_file(str(tmp_path / "moe_digits.safetensors"))
    assert all(torch.equal(written[f"model.{k}"], v) for k, v in best.items())


def test_a_failed_check_removes_every_file_and_names_the_output(runs, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from dsl.exporting.formats import ExportError
    from dsl.exporting.runs import export_trained
    from dsl.training.runs import open_run

    opened = open_run(runs["classifier"])
    module = opened.trained()
    prog = opened.prepared.analysis.program
    out = tmp_path / "bad.py"
    # A module that is not the one written: the weights file holds its weights shifted, so the
    # file loads and runs, and the check must catch the difference.
    original = module.state_dict

    def shifted(*args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        return {k: v + 1 if k.endswith("logits.bias") else v for k, v in original(*args, **kwargs).items()}

    module.state_dict = shifted  # type: ignore[method-assign]
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as where PYTHONDONTWRITEBYTECODE is unset
    with pytest.raises(ExportError) as info:
        export_trained(module, prog, opened.preprocessing, "python", str(out))
    assert "at output `logits`" in str(info.value) and "max abs diff 1" in str(info.value)
    assert not out.exists() and not (tmp_path / "bad.safetensors").exists()
    assert os.listdir(tmp_path) == []


def test_an_emitted_file_is_checked_from_its_source_not_a_pycache_beside_it(tmp_path: Path) -> None:
    import importlib.util
    import py_compile

    from dsl.exporting.python import load_generated

    path = tmp_path / "model.py"
    path.write_text("class Model:\n    tag = 'planted'\n")
    py_compile.compile(str(path), cfile=importlib.util.cache_from_source(str(path)),
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    path.write_text("class Model:\n    tag = 'written'\n")  # the planted .pyc is never checked against it
    assert load_generated(str(path), "Model").tag == "written"


MOE_CAPACITY = """
model M {
    input x: [B, 16]
    z, balance = MoE(x, experts=8, k=2, capacity=1.0, expert=MLP(hidden=8, out=16))
    output z: [B, 16]
    output balance
}
"""


def test_moe_pt2_equals_eager_at_every_batch_size(runs) -> None:
    """The exported MoE (traced once, at one batch size) routes like the eager one at others:
    trained, untrained (a zero gate: every expert tied, so top-k's tie-breaking decides), and
    with a capacity that drops assignments. It did not when eager mode picked experts with a
    top-k of its own (lower index first among ties) and the exported program with torch.topk."""
    from dsl.exporting.formats import export_program
    from dsl.training.runs import open_run

    trained = open_run(runs["moe"])
    untrained = dsl.compile(SPECS / "moe_digits.dsl")
    capacity = dsl.compile(dsl.loads(MOE_CAPACITY))
    with torch.no_grad():
        for p in capacity.parameters():
            p.normal_(generator=torch.Generator().manual_seed(p.numel()))
    for model, prog, width in ((trained.model, trained.prepared.analysis.program, 64),
                               (untrained, dsl.api.analyse(dsl.load(SPECS / "moe_digits.dsl")).program, 64),
                               (capacity, dsl.api.analyse(dsl.loads(MOE_CAPACITY)).program, 16)):
        program = export_program(model.eval(), prog).module()
        for rows in (2, 3, 7, 16, 61, 200):
            x = torch.randn(rows, width, generator=torch.Generator().manual_seed(rows))
            with torch.no_grad():
                eager, exported = model(x=x), program(x=x)
            for name in eager:
                assert torch.equal(eager[name], exported[name]), (rows, name)


def test_flat_rows_for_a_model_trained_on_images_say_which_shape_to_give() -> None:
    from dsl.building.preprocess import Standardize
    from dsl.language.errors import InputError

    standardize = Standardize("x", torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1))
    with pytest.raises(InputError, match=r"images of rank 4, \[N, 1, H, W\]"):
        standardize(torch.zeros(8, 64))
    assert standardize(torch.zeros(2, 1, 8, 8)).shape == (2, 1, 8, 8)
