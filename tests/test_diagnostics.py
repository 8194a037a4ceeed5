"""Every diagnostic code of the resolver, checker and builder: code, line and column."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import run_cli

import dsl
from dsl.language.diagnostics import CODES
from dsl.language.registry import Decl, NoParams, TensorArg, register

HEAD = "model M() {\n    input x: [N, 16]\n"


def codes_at(path_or_spec, **kw):
    diags = dsl.check(path_or_spec, **kw)
    return [(d.code, d.span.line, d.span.col) for d in diags]


CASES = [
    # (code, body lines after HEAD, expected line, expected col)
    ("E0201", "    y = Linaer(x, out=4)\n    output y\n", 3, 9),
    ("E0201", "    y = Linear(q, out=4)\n    output y\n", 3, 16),
    ("E0202", "    y = Linear(x, x, out=4)\n    output y\n", 3, 19),
    ("E0202", "    y = Linear(out=4)\n    z = y(x, x)\n    output z\n", 4, 14),
    ("E0203", "    input x: [N, 16]\n    output x\n", 3, 5),
    ("E0206", "    y = Linear(3, out=4)\n    output y\n", 3, 16),
    ("E0206", "    y = relu([x])\n    output y\n", 3, 14),
    ("E0207", "    y = Linear(x, out=x)\n    output y\n", 3, 23),
    ("E0210", "    a, b = Linear(x, out=4)\n    output a\n", 3, 8),
    ("E0212", "    y = relu(x)\n    output z\n", 4, 5),
    ("E0301", "    y = x + Linear(x, out=4)\n    output y\n", 3, 9),
    ("E0302", "    input i: [N] long\n    y = Linear(i, out=4)\n    output y\n", 4, 16),
    ("E0303", "    y = MultiheadAttention(x, heads=2)\n    output y\n", 3, 28),
    ("E0304", "    y = Linear(x, out=4)\n    output y: [N, 5]\n", 4, 15),
    ("E0305", "    input z: [N, -1]\n    output z\n", 3, 18),
    ("E0401", "    y = Linear(x, out=\"four\")\n    output y\n", 3, 23),
    ("E0401", "    y = Linear(x, out=0)\n    output y\n", 3, 23),
    ("E0402", "    y = Linear(x, out=4, bais=true)\n    output y\n", 3, 26),
    ("E0403", "    y = Linear(x)\n    output y\n", 3, 9),
    ("E0405", "    y = Linear(x, out=4 // 0)\n    output y\n", 3, 23),
    ("E0801", "    repeat 100000 { x = relu(x) }\n    output x\n", 3, 12),
]


@pytest.mark.parametrize("code,body,line,col", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_checker_codes(write, code, body, line, col):
    path = write(HEAD + body + "}\n")
    got = codes_at(path)
    assert (code, line, col) in got, got


def test_block_param_errors(write):
    text = """block B(width: int) {
    input x: [..., 4]
    y = Linear(x, out=width)
    output y
}
model M() {
    input x: [N, 4]
    a = B(x, widht=3)
    b = B(x)
    c = B(x, width="w")
    output a
}
"""
    got = codes_at(write(text))
    assert ("E0209", 8, 14) in got
    assert ("E0403", 9, 9) in got
    assert ("E0401", 10, 20) in got


def test_block_input_mismatch_notes_declaration(write):
    text = """block B() {
    input x: [..., 8]
    output x
}
model M() {
    input x: [N, 4]
    y = B(x)
    output y
}
"""
    diags = dsl.check(write(text))
    assert [(d.code, d.span.line, d.span.col) for d in diags] == [("E0301", 7, 11)]
    assert "expected [..., 8], found [N, 4]" in diags[0].label
    assert any("declares `input x: [..., 8]`" in n.message for n in diags[0].notes)


def test_block_uses_itself(write):
    text = "block B() {\n    input x: [N]\n    y = B(x)\n    output y\n}\nmodel M() {\n    input x: [N]\n    y = B(x)\n    output y\n}\n"
    assert "E0205" in [c for c, _, _ in codes_at(write(text))]


def test_import_cycle_and_missing_and_url(write):
    a = write('use "b.dsl"\nparam p = 1\n', "a.dsl")
    write('use "a.dsl"\nparam q = 2\n', "b.dsl")
    main = write('use "a.dsl"\nuse "missing.dsl"\nuse "http://x/y.dsl"\nmodel M() {\n    input x: [N, 4]\n    output x\n}\n', "main.dsl")
    got = codes_at(main)
    assert any(c == "E0205" for c, _, _ in got)
    assert ("E0702", 2, 1) in got
    assert ("E0204", 3, 1) in got
    assert a


def test_use_imports_params_and_blocks(write):
    write('param width = 8\nblock Twice(n: int) {\n    input x: [..., n]\n    y = x * 2\n    output y\n}\n', "lib/common.dsl")
    main = write('use "lib/common.dsl"\nmodel M() {\n    input x: [N, width]\n    y = Twice(x, n=width)\n    output y: [N, 8]\n}\n')
    assert dsl.check(main) == []


def test_model_missing(write):
    assert codes_at(write("param p = 1\n")) == [("E0208", 1, 1)]


def test_override_errors(write):
    path = write(HEAD + "    y = Linear(x, out=4)\n    output y\n}\n")
    assert [c for c, _, _ in codes_at(path, hiden=3)] == ["E0404"]
    d = dsl.check(path, hiden=3)[0]
    assert "hiden" in d.message


def test_output_assertion_explains_origin(write):
    path = write(HEAD + "    h = Linear(x, out=64)\n    output h: [N, 32]\n}\n")
    d = dsl.check(path)[0]
    assert d.code == "E0304" and d.label == "expected [N, 32], found [N, 64]"
    assert any("`h` is [N, 64] because Linear(out=64)" in n.message and "line 3" in n.message for n in d.notes)


def test_errors_are_collected_and_sorted(write):
    body = "    a = Linaer(x, out=4)\n    b = Linear(x, out=4, bais=1)\n    c = relu(q)\n    output a\n"
    diags = dsl.check(write(HEAD + body + "}\n"))
    lines = [d.span.line for d in diags]
    assert lines == sorted(lines) and len(diags) >= 3


def test_unknown_size_and_build_failure(write):
    path = write("model M() {\n    input x: [N, F]\n    y = Linear(x, out=4)\n    output y\n}\n")
    with pytest.raises(dsl.SpecError) as e:
        dsl.compile(path)
    assert [(d.code, d.span.line) for d in e.value.diagnostics] == [("E0601", 3)]
    assert dsl.compile(path, dims={"F": 3})(x=__import__("torch").randn(2, 3)).shape == (2, 4)


def _bad_build(call, p):
    raise RuntimeError("boom")


def _conflict_infer(call, p):
    call.unify(call.type("a").shape[0], call.type("b").shape[0], arg="b", what="a and b need the same length")
    return [call.type("a")]


def _identity_build(c, p):
    import torch

    return torch.nn.Identity()


@pytest.fixture
def test_blocks(monkeypatch):
    """Two faulty blocks, registered for one test only (the registry is global)."""
    from dsl.language import registry

    registry.load()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register(Decl("TestBroken", "block", NoParams, (TensorArg("x"),), ("y",), lambda c, p: [c.type("x")],
                  build=_bad_build, source="tests"))
    register(Decl("TestConflict", "block", NoParams, (TensorArg("a"), TensorArg("b")), ("y",), _conflict_infer,
                  build=_identity_build, source="tests"))


@pytest.mark.usefixtures("test_blocks")
def test_builder_exception_is_a_diagnostic(write):
    path = write("model M() {\n    input x: [N, 4]\n    y = TestBroken(x)\n    output y\n}\n")
    with pytest.raises(dsl.SpecError) as e:
        dsl.compile(path)
    assert [(d.code, d.span.line, d.span.col) for d in e.value.diagnostics] == [("E0602", 3, 9)]


@pytest.mark.usefixtures("test_blocks")
def test_dimension_conflict(write):
    path = write("model M() {\n    input a: [3]\n    input b: [4]\n    y = TestConflict(a, b)\n    output y\n}\n")
    assert codes_at(path) == [("E0306", 4, 25)]


def test_file_not_found():
    assert [d.code for d in dsl.check("/nonexistent/spec.dsl")] == ["E0702"]


def test_spec_text_where_a_path_belongs_says_to_use_loads():
    text = "model M {\n    input x: [B, 4]\n    output x\n}\n"
    (d,) = dsl.check(text)
    assert d.code == "E0702" and "spec text" in d.message and "dsl.loads" in (d.help or "")
    assert dsl.check(dsl.loads(text)) == []


def test_plugin_failure_is_reported_not_fatal(monkeypatch):
    from importlib.metadata import EntryPoint

    from dsl.language import registry

    ep = EntryPoint(name="broken", value="no_such_module_xyz:blocks", group="dsl.blocks")
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group=None: [ep])
    monkeypatch.setattr(registry, "PLUGIN_PROBLEMS", [])
    registry._load_plugins()
    assert [d.code for d in registry.PLUGIN_PROBLEMS] == ["E0901"]
    assert registry.lookup("Linear") is not None


def test_cli_check_render_and_json(write):
    path = write(HEAD + "    h = Linear(x, out=64)\n    y = Linear(h, outt=10)\n    output y\n}\n")
    code, out, err = run_cli("check", path)
    assert code == 1
    assert "error[E0402]" in err and "did you mean `out`?" in err
    assert "4 |     y = Linear(h, outt=10)" in err and "^^^^^^^" in err
    code, out, _ = run_cli("check", "--json", path)
    assert code == 1 and '"code": "E0402"' in out
    code, _, err = run_cli("check", "--set", "bad", path)
    assert code == 2
    code, _, err = run_cli("check", "--dim", "N=x", path)
    assert code == 2


def test_every_code_has_a_test():
    text = "\n".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    missing = [c for c in CODES if not re.search(rf"\b{c}\b", text.replace(f'"{c}": "', ""))]
    assert not missing, f"codes without a test: {missing}"


YAML_HEAD = "model:\n  name: M\n  inputs:\n    x: {shape: [N, 16]}\n  nodes:\n"
YAML_CASES = [
    ("E0201", "    - {id: y, op: Linaer, in: [x], with: {out: 4}}\n  outputs: {y: {}}\n", 6, 19),
    ("E0201", "    - {id: y, op: Linear, in: [q], with: {out: 4}}\n  outputs: {y: {}}\n", 6, 32),
    ("E0402", "    - {id: y, op: Linear, in: [x], with: {out: 4, bais: true}}\n  outputs: {y: {}}\n", 6, 51),
    ("E0401", "    - {id: y, op: Linear, in: [x], with: {out: four}}\n  outputs: {y: {}}\n", 6, 48),
    ("E0403", "    - {id: y, op: Linear, in: [x]}\n  outputs: {y: {}}\n", 6, 19),
    ("E0301", "    - {id: y, expr: \"x + Linear(x, out=4)\"}\n  outputs: {y: {}}\n", 6, 22),
    ("E0304", "    - {id: y, op: Linear, in: [x], with: {out: 4}}\n  outputs: {y: {shape: [N, 5]}}\n", 7, 24),
    ("E0212", "    - {id: y, op: relu, in: [x]}\n  outputs: {z: {}}\n", 7, 13),
]


@pytest.mark.parametrize("code,body,line,col", YAML_CASES, ids=[f"yaml-{c[0]}-{i}" for i, c in enumerate(YAML_CASES)])
def test_checker_codes_in_yaml(write, code, body, line, col):
    path = write(YAML_HEAD + body, "spec.yaml")
    got = codes_at(path)
    assert (code, line, col) in got, got
