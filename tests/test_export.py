"""Export: the standalone Python file (every spec), torch.export with Dims, ONNX, and the
refusals (E0603) for what a format cannot express or a name that is not an identifier."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SPECS, run_cli

import dsl
from dsl.api import analyse
from dsl.building.compiler import BuildFailure, build_program
from dsl.checking.program import Program
from dsl.exporting.formats import (
    ExportError,
    check_inputs,
    example_inputs,
    export_program,
    flat_outputs,
    max_abs_diff,
    unsupported,
)
from dsl.exporting.python import emit_python, generated_class_name, load_generated
from dsl.language.shapes import Sym

SPEC_FILES = sorted(p for p in SPECS.rglob("*") if p.suffix in (".dsl", ".yaml") and "broken" not in p.parts)


def program_of(path: Path | str, **dims: int) -> Program:
    """The checked program of a spec; symbols no data binds get small sizes when building needs them."""
    spec = dsl.load(path)
    analysis = analyse(spec, dims)
    prog, diags = analysis.program, analysis.diagnostics
    assert prog is not None and not [d for d in diags if d.severity == "error"], diags
    try:
        build_program(prog)
    except BuildFailure:  # e.g. siamese.dsl's F: no train section binds it
        syms = {s for t in prog.input_types().values() for d in t.shape if isinstance(d, Sym) for s in d.symbols}
        analysis = analyse(spec, {s: 6 for s in syms})
        prog = analysis.program
    assert prog is not None
    return prog


def dsl_imports(source: str) -> list[str]:
    """Every import of dsl anywhere in ``source`` (module level or inside functions)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "dsl"]
        elif isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").split(".")[0] == "dsl"):
            found.append(node.module or ".")
    return found


# --------------------------------------------------------------------------- python


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: str(p.relative_to(SPECS)))
def test_python_export_equals_compiled_module(path: Path, tmp_path: Path) -> None:
    prog = program_of(path)
    compiled = build_program(prog).eval()
    text = emit_python(prog, str(path))
    assert dsl_imports(text) == []
    ast.parse(text)  # one valid module
    target = tmp_path / "model.py"
    target.write_text(text)
    generated = load_generated(str(target), generated_class_name(text))()
    assert list(generated.state_dict()) == list(compiled.state_dict())
    generated.load_state_dict(compiled.state_dict())
    generated.eval()
    inputs = check_inputs(prog)  # sizes unlike the ones any trace saw
    with torch.no_grad():
        expected, actual = compiled(**inputs), generated(**inputs)
    torch.testing.assert_close(actual, expected)


def test_python_export_is_readable() -> None:
    text = emit_python(program_of(SPECS / "protogat.dsl"), "specs/protogat.dsl")
    assert "class ProtoGAT(nn.Module):" in text and "class Expert(nn.Module):" in text
    # spec names, not fx temporaries; tuple outputs unpacked; the shape as a comment
    assert "h = self.h(x, edge_index)  # [34, 64]  spec line" in text
    assert "z_0, z_1 = self.z(add)" in text
    assert "[Expert() for _ in range(4)]" in text
    # research blocks inlined, PyG imported from PyG inside the inlined wrapper
    for name in ("class GraphAttention(nn.Module)", "class HopfieldLayer(nn.Module)",
                 "class MixtureOfExperts(nn.Module)", "class PrototypeHeadModule(nn.Module)",
                 "from torch_geometric.nn import GATConv", "def dispatch("):
        assert name in text
    # only what is used: ProtoNet and the ProtoPNet training terms are not copied
    assert "ProtoNetModule" not in text and "def cluster_cost" not in text and "HopfieldPooling" not in text


def test_python_export_one_class_per_distinct_block_body() -> None:
    text = emit_python(program_of(SPECS / "sequence.dsl"))
    assert text.count("class EncoderLayer(") == 1
    assert "self.h_1 = EncoderLayer()" in text and "self.h_2 = EncoderLayer()" in text


def test_python_export_runs_without_dsl_in_a_fresh_interpreter(tmp_path: Path) -> None:
    # MoE: inlined gate, dispatch and experts; no PyG, so the interpreter starts quickly
    prog = program_of(SPECS / "moe_digits.dsl")
    compiled = build_program(prog).eval()
    (tmp_path / "model.py").write_text(emit_python(prog))
    inputs = example_inputs(prog.input_types(), seed=3)
    torch.save({"state": compiled.state_dict(), "inputs": inputs}, tmp_path / "data.pt")
    with torch.no_grad():
        torch.save(compiled(**inputs), tmp_path / "expected.pt")
    script = (
        "import sys; sys.modules['dsl'] = None\n"  # any import of dsl now fails
        "import torch, model\n"
        "d = torch.load('data.pt', weights_only=True)\n"
        "m = model.MoEDigits(); m.load_state_dict(d['state']); m.eval()\n"
        "with torch.no_grad(): out = m(**d['inputs'])\n"
        "torch.testing.assert_close(out, torch.load('expected.pt', weights_only=True))\n"
        "print('standalone ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "standalone ok" in res.stdout


def test_cli_emit_python_checks_the_file(tmp_path: Path) -> None:
    target = tmp_path / "classifier_model.py"
    code, _, err = run_cli("compile", str(SPECS / "classifier.dsl"), "--emit", "python", "-o", str(target))
    assert code == 0, err
    assert "max abs diff 0" in err
    assert "class Classifier(nn.Module):" in target.read_text()
    # without -o the file goes to stdout, as `dsl convert` does; the binary formats still need -o
    code, out, err = run_cli("compile", str(SPECS / "classifier.dsl"), "--emit", "python")
    assert code == 0 and out == target.read_text() and err == ""
    code, _, err = run_cli("compile", str(SPECS / "classifier.dsl"), "--emit", "pt2")
    assert code == 2 and "needs -o OUT" in err


def test_an_emitted_constructor_names_its_arguments_past_the_sizes(tmp_path: Path) -> None:
    target = tmp_path / "moe.py"
    code, _, err = run_cli("compile", str(SPECS / "moe_digits.dsl"), "--emit", "python", "-o", str(target))
    assert code == 0 and "max abs diff 0" in err, err
    text = target.read_text()
    assert "NoisyTopKGate(32, 8, k=2, noisy=True, balance=0.01, router='topk', z_loss=0.0)" in text
    assert "nn.Linear(64, 32, bias=True)" in text  # torch's own: the sizes positional, as written by hand


def test_an_emitted_file_initialises_as_the_compiled_module_does(tmp_path: Path) -> None:
    """An Embedding with std=0.02 (GPT-2's) starts from N(0, 0.02²) in the emitted file too,
    so training from the file starts where `dsl train` starts (it used N(0, 1))."""
    spec = tmp_path / "lm.dsl"
    spec.write_text("""model LM {
    input tokens: [B, T] long
    h = Embedding(tokens, num=500, dim=64, std=0.02)
    logits = Linear(h, out=500)
    output logits
}
""")
    target = tmp_path / "lm.py"
    code, _, err = run_cli("compile", str(spec), "--emit", "python", "-o", str(target))
    assert code == 0, err
    torch.manual_seed(0)
    emitted = load_generated(str(target), "LM")()
    compiled = dsl.compile(str(spec))
    std = {name: float(m.weight.std()) for name, m in (("emitted", emitted.h), ("compiled", compiled.h))}
    assert abs(std["emitted"] - 0.02) < 0.002 and abs(std["compiled"] - 0.02) < 0.002, std


# --------------------------------------------------------------------------- hostile names


def test_hostile_yaml_model_name_never_reaches_a_file(tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text(
        'model:\n  name: "X(nn.Module):\\n    pass\\nimport os\\nos.system(\'echo pwned\')\\nclass Y"\n'
        "  inputs: {x: {shape: [B, 4]}}\n"
        "  nodes: [{id: y, op: Linear, in: [x], with: {out: 2}}]\n"
        "  outputs: {y: {}}\n"
    )
    target = tmp_path / "out.py"
    code, _, err = run_cli("compile", str(evil), "--emit", "python", "-o", str(target))
    assert code == 1 and "E0213" in err
    assert not target.exists()


def _classifier() -> Program:
    return program_of(SPECS / "classifier.dsl")


@pytest.mark.parametrize("where", ["model", "module", "input", "output"])
def test_identifiers_are_validated_before_emitting(where: str) -> None:
    """A program whose names were tampered with after checking (defence in depth)."""
    prog = _classifier()
    payload = "h = __import__('os')  #"  # no dot: torch itself refuses dotted module names
    if where == "model":
        prog.name = "Evil(nn.Module):\n    import os\nclass X"
    elif where == "module":
        prog.modules[payload] = prog.modules.pop("h")
        for node in prog.nodes:
            if node.module == "h":
                node.module = payload
    elif where == "input":
        node = next(n for n in prog.nodes if n.kind == "input")
        node.op = payload
    else:
        # output names are strings: repr() keeps them data, whatever they hold
        ref = prog.outputs.pop("logits")
        prog.outputs["'] + __import__('os').getcwd() + ['"] = ref
        text = emit_python(prog)
        assert "__import__" not in text.replace(repr("'] + __import__('os').getcwd() + ['"), "")
        return
    with pytest.raises(ExportError, match="not a Python identifier"):
        emit_python(prog)


def test_cli_reports_an_export_error_as_e0603(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dsl.exporting.python as emit

    def refuse(*args: object, **kwargs: object) -> str:
        raise ExportError("node name 'a b' is not a Python identifier", help="rename it")

    monkeypatch.setattr(emit, "emit_python", refuse)
    code, _, err = run_cli("compile", str(SPECS / "classifier.dsl"), "--emit", "python", "-o", str(tmp_path / "m.py"))
    assert code == 1 and "error[E0603]" in err and "rename it" in err and "Traceback" not in err


# --------------------------------------------------------------------------- pt2


def test_pt2_symbolic_dims_become_dims() -> None:
    prog = _classifier()
    ep = export_program(build_program(prog), prog)
    x = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name == "x")
    batch = x.meta["val"].shape[0]
    assert isinstance(batch, torch.SymInt)  # B stayed symbolic
    assert ep.module()(x=torch.randn(11, 64)).shape == (11, 10)


def test_pt2_cli_checks_other_sizes(tmp_path: Path) -> None:
    code, _, err = run_cli("compile", str(SPECS / "classifier.dsl"), "--emit", "pt2", "-o", str(tmp_path / "m.pt2"))
    assert code == 0, err
    assert "max abs diff 0" in err


def test_pool_without_graphs_cannot_export(write) -> None:
    path = write("model P() {\n    input x: [N, 8]\n    input batch: [N] long\n"
                 "    g = global_add_pool(x, batch)\n    output g\n}\n")
    analysis = analyse(dsl.load(path))
    prog = analysis.program
    assert prog is not None
    diags = unsupported(prog, "pt2")
    assert [(d.code, d.span.line) for d in diags] == [("E0603", 4)]
    assert "graphs=" in (diags[0].help or "")
    code, _, err = run_cli("compile", path, "--emit", "pt2", "-o", path + ".pt2")
    assert code == 1 and "E0603" in err and "Traceback" not in err


def test_max_abs_diff_treats_infinities_and_shapes() -> None:
    inf = float("inf")
    assert max_abs_diff([torch.tensor([1.0, -inf])], [torch.tensor([1.5, -inf])]) == 0.5
    assert max_abs_diff([torch.tensor([1.0, -inf])], [torch.tensor([1.0, 0.0])]) == inf
    assert max_abs_diff([torch.zeros(2)], [torch.zeros(3)]) == inf
    assert flat_outputs({"a": torch.ones(1), "b": torch.zeros(1)})[1].item() == 0.0


# --------------------------------------------------------------------------- onnx


def test_onnx_refuses_moe_with_a_diagnostic_at_the_call(tmp_path: Path) -> None:
    prog = program_of(SPECS / "moe_digits.dsl")
    diags = unsupported(prog, "onnx")
    assert [d.code for d in diags] == ["E0603"] and "MoE" in diags[0].message
    assert unsupported(prog, "pt2") == []
    pytest.importorskip("onnxscript")
    code, _, err = run_cli("compile", str(SPECS / "moe_digits.dsl"), "--emit", "onnx", "-o", str(tmp_path / "m.onnx"))
    assert code == 1 and "error[E0603]" in err and "z, balance = MoE(" in err
    assert not (tmp_path / "m.onnx").exists()


def test_onnx_missing_packages_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dsl.exporting.formats as export

    monkeypatch.setattr(export, "onnx_missing", lambda: "ONNX export needs onnx: pip install 'dsl[onnx]'")
    code, _, err = run_cli("compile", str(SPECS / "classifier.dsl"), "--emit", "onnx", "-o", str(tmp_path / "m.onnx"))
    assert code == 2 and "dsl[onnx]" in err


def test_onnx_export_matches_under_onnxruntime(tmp_path: Path) -> None:
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from dsl.exporting.formats import export_onnx

    prog = _classifier()
    compiled = build_program(prog).eval()
    target = tmp_path / "classifier.onnx"
    diff = export_onnx(compiled, prog, str(target))
    assert diff is not None and diff < 1e-5
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"] and [o.name for o in session.get_outputs()] == ["logits"]
    x = torch.randn(13, 64)  # B is dynamic in the file
    (out,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), compiled(x=x), atol=1e-5, rtol=1e-5)


def test_generated_class_names_never_shadow_inlined_or_imported_names(write, tmp_path: Path) -> None:
    # a block named F (the inlined Hopfield uses `import torch.nn.functional as F`) and a
    # model named Tensor (`from torch import Tensor`)
    path = write("block F(d: int) {\n    input x: [B, L, d]\n    y = Linear(x, out=d)\n    output y\n}\n\n"
                 "model Tensor() {\n    input x: [B, L, 8]\n    h = F(x, d=8)\n    y = Hopfield(h, heads=2)\n"
                 "    output y\n}\n")
    target = tmp_path / "clash.py"
    code, _, err = run_cli("compile", path, "--emit", "python", "-o", str(target))
    assert code == 0, err
    text = target.read_text()
    assert "class F_2(nn.Module):" in text and "class Tensor_2(nn.Module):" in text
    assert "import torch.nn.functional as F" in text and "__all__ = ['Tensor_2']" in text


# The constructs of the real architectures (convolution and patch prototypes, causal masks with
# tied weights and sizes read from the inputs, recurrence): every format, checked numerically.
ARCHITECTURES = ["protopnet_digits.dsl", "gallery/gpt_chars.dsl", "gallery/lstm_chars.dsl"]


@pytest.mark.parametrize("name", ARCHITECTURES)
@pytest.mark.parametrize("fmt", ["python", "pt2", "onnx"])
def test_architectures_export_to_every_format(name: str, fmt: str, tmp_path: Path) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxscript")
    out = tmp_path / f"model.{'py' if fmt == 'python' else fmt}"
    code, stdout, err = run_cli("compile", str(SPECS / name), "--emit", fmt, "-o", str(out))
    assert code == 0, err
    assert out.exists() and "max abs diff" in stdout + err
