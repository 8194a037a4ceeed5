"""Hostile specs and names (issue 27): no hang, no blow-up, no internal error.

`use` fan-out, many diagnostics, `repeat` through block calls, names that are
attributes of the generated module, block names that break generated Python,
reserved words in every front end, a large `--emit python`, ProtoNet's labels.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
from conftest import run_cli

import dsl
from dsl.checking.checker import MAX_NODES
from dsl.checking.program import MODULE_ATTRIBUTES, sanitize
from dsl.language.diagnostics import MAX_SHOWN
from dsl.language.errors import InputError, SpecError
from dsl.language.reserved import RESERVED_WORDS

# --------------------------------------------------------------------------- no hang, no blow-up


def test_use_fan_out_is_read_once_per_file(tmp_path: Path) -> None:
    """30 files, each using the next twice: 2**30 paths through the imports, 30 files to read."""
    for i in range(30):
        uses = f'use "f{i + 1}.dsl"\nuse "f{i + 1}.dsl"\n' if i < 29 else ""
        (tmp_path / f"f{i}.dsl").write_text(f"{uses}param p{i} = {i}\n")
    main = tmp_path / "main.dsl"
    main.write_text('use "f0.dsl"\nmodel M {\n    input x: [B, 4]\n    y = Linear(x, out=p29)\n    output y\n}\n')
    t0 = time.perf_counter()
    code, _, err = run_cli("check", str(main))
    assert code == 0, err
    assert time.perf_counter() - t0 < 20  # doubling per level would take hours


def test_twenty_thousand_errors_print_fifty_and_count_the_rest(tmp_path: Path) -> None:
    spec = tmp_path / "dup.dsl"
    spec.write_text("param p = 1\n" * 20_000 + "model M {\n    input x: [B, 4]\n    output x\n}\n")
    t0 = time.perf_counter()
    code, _, err = run_cli("check", str(spec))
    assert code == 1 and time.perf_counter() - t0 < 30
    assert err.count("error[E0203]") == MAX_SHOWN == 50
    assert f"... and {19_999 - MAX_SHOWN} more" in err
    assert "19999 errors found" in err
    code, out, _ = run_cli("check", "--json", str(spec))
    assert code == 1 and out.count('"E0203"') == 19_999  # --json prints them all


REPEAT_THROUGH_BLOCKS = """
block B {
    input x: [N, 8]
    h = x
    repeat INNER {
        h = Linear(h, out=8)
    }
    output h
}
model M {
    input x: [N, 8]
    h = x
    repeat OUTER {
        h = B(h)
    }
    output h
}
"""


def test_repeat_through_block_calls_reports_the_limit_at_once() -> None:
    spec = dsl.loads(REPEAT_THROUGH_BLOCKS.replace("INNER", "500").replace("OUTER", "500"))
    t0 = time.perf_counter()
    diags = dsl.check(spec)
    assert time.perf_counter() - t0 < 20  # it used to elaborate 200,000 Linears first
    (d,) = diags
    assert d.code == "E0801" and f"{MAX_NODES:,}" in d.message and "block calls included" in d.message
    assert (d.span.line, d.span.col) == (13, 12)


def test_repeat_through_block_calls_within_the_limit_still_checks() -> None:
    spec = dsl.loads(REPEAT_THROUGH_BLOCKS.replace("INNER", "40").replace("OUTER", "40"))
    assert dsl.check(spec) == []


# --------------------------------------------------------------------------- names


def test_the_static_list_holds_every_attribute_of_a_graph_module() -> None:
    """The checking layer cannot import torch, so the list is static: it must not fall behind."""
    gm = torch.fx.GraphModule(torch.nn.Module(), torch.fx.Graph())
    public = {n for n in set(dir(torch.fx.GraphModule)) | set(dir(gm)) | set(vars(gm)) if not n.startswith("_")}
    assert public <= MODULE_ATTRIBUTES, sorted(public - MODULE_ATTRIBUTES)
    assert all(sanitize(n) != n for n in public | {"dsl_outputs", "dsl_guard", "__class__", "self"})


@pytest.mark.parametrize("name", sorted((MODULE_ATTRIBUTES - RESERVED_WORDS) | {"dsl_outputs", "dsl_guard"}))
def test_every_module_attribute_can_name_a_node_and_an_output(name: str) -> None:
    spec = dsl.loads(f"model M {{\n input x: [B, 4]\n {name} = Linear(x, out=3)\n h = relu({name})\n"
                     f" output h\n output {name}\n}}\n")
    model = dsl.compile(spec)
    out = model(x=torch.randn(2, 4))
    assert set(out) == {"h", name} and out[name].shape == (2, 3)
    assert torch.equal(out["h"], torch.relu(out[name]))  # the node, not the module's method


@pytest.mark.parametrize("block", ["self", "__class__"])
def test_a_block_named_like_python_internals_emits_working_python(block: str, tmp_path: Path) -> None:
    spec = tmp_path / "b.dsl"
    spec.write_text(f"block {block}(n: int = 4) {{\n    input x: [B, 4]\n    y = Linear(x, out=n)\n    output y\n}}\n"
                    f"model M {{\n    input x: [B, 4]\n    h = {block}(x)\n    output h\n}}\n")
    out = tmp_path / "m.py"
    code, _, err = run_cli("compile", str(spec), "--emit", "python", "-o", str(out))
    assert code == 0 and "max abs diff 0" in err, err
    from dsl.exporting.python import generated_class_name, load_generated

    generated = load_generated(str(out), generated_class_name(out.read_text()))()
    assert generated(x=torch.randn(3, 4)).shape == (3, 4)


def test_an_emitted_file_that_does_not_import_is_removed(tmp_path: Path, monkeypatch) -> None:
    from dsl.exporting import python as emit

    def refuse(path: str, class_name: str):
        raise ImportError("cannot import it")

    monkeypatch.setattr(emit, "load_generated", refuse)
    out = tmp_path / "m.py"
    code, _, err = run_cli("compile", str(Path(__file__).parent.parent / "specs" / "classifier.dsl"),
                           "--emit", "python", "-o", str(out))
    assert code == 1 and "cannot be imported back" in err and not out.exists()


@pytest.mark.parametrize("word", ["as", "model", "param", "train", "use", "block"])
def test_reserved_words_are_refused_in_text_as_in_yaml(word: str, tmp_path: Path) -> None:
    text = tmp_path / "w.dsl"
    text.write_text(f"model M {{\n    input x: [B, 4]\n    {word} = Linear(x, out=3)\n    output {word}\n}}\n")
    code, out, err = run_cli("check", "--json", str(text))
    assert code == 1 and '"E0213"' in out and '"line": 3' in out and '"col": 5' in out
    yaml = tmp_path / "w.yaml"
    yaml.write_text(f"model:\n  name: M\n  inputs: {{x: {{shape: [B, 4]}}}}\n  nodes:\n"
                    f"    - {{id: {word}, op: Linear, in: [x], with: {{out: 3}}}}\n  outputs: {{{word}: {{}}}}\n")
    code, out, _ = run_cli("check", "--json", str(yaml))
    assert code == 1 and '"E0213"' in out


def test_a_loop_variable_named_as_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        dsl.loads("model M {\n    input x: [B, 4]\n    h = x\n    repeat 2 as as {\n        h = relu(h)\n    }\n"
                  "    output h\n}\n")
    assert [d.code for d in info.value.diagnostics] == ["E0213"]


def test_what_convert_writes_the_yaml_reader_reads(tmp_path: Path) -> None:
    """A text spec either fails in both front ends or converts to YAML that reads back."""
    ok = tmp_path / "ok.dsl"
    ok.write_text("model M {\n    input x: [B, 4]\n    as_ = Linear(x, out=3)\n    output as_\n}\n")
    out = tmp_path / "ok.yaml"
    assert run_cli("convert", str(ok), "--to", "yaml", "-o", str(out))[0] == 0
    assert run_cli("check", str(out))[0] == 0


# --------------------------------------------------------------------------- smaller


def test_emit_python_of_thousands_of_layers_is_linear(tmp_path: Path) -> None:
    spec = tmp_path / "deep.dsl"
    spec.write_text("model M {\n    input x: [B, 4]\n    h = x\n    repeat 10000 {\n        h = Linear(h, out=4)\n"
                    "    }\n    output h\n}\n")
    t0 = time.process_time()  # this process's CPU time: other processes on the machine do not count
    code, _, err = run_cli("compile", str(spec), "--emit", "python", "-o", str(tmp_path / "deep.py"))
    assert code == 0, err
    assert time.process_time() - t0 < 20  # about 8 s; loading weights child by child was quadratic: 31 s


PROTONET = """
model P {
    input q: [Q, 8]
    input s: [S, 8]
    input sy: [S] long
    logits = ProtoNet(q, s, sy, ways=3)
    output logits
}
"""


def test_protonet_support_labels_are_range_guarded() -> None:
    model = dsl.compile(dsl.loads(PROTONET))
    q, s = torch.randn(4, 8), torch.randn(6, 8)
    assert model(q=q, s=s, sy=torch.tensor([0, 1, 2, 0, 1, 2])).shape == (4, 3)
    for bad in (3, -1):
        with pytest.raises(InputError, match="ways=3"):
            model(q=q, s=s, sy=torch.tensor([0, 1, 2, 0, 1, bad]))


def test_weights_have_the_mode_of_the_rest_of_the_run(tmp_path: Path) -> None:
    spec = tmp_path / "m.dsl"
    spec.write_text("model M {\n    input x: [B, 4]\n    logits = Linear(x, out=3)\n    output logits\n}\n"
                    "train {\n    data = iris(batch=64)\n    loss = cross_entropy(logits, y)\n    epochs = 1\n}\n")
    run = tmp_path / "run"
    assert run_cli("train", str(spec), "--quiet", "--out", str(run))[0] == 0
    modes = {f: os.stat(run / f).st_mode & 0o777 for f in os.listdir(run)}
    assert len(set(modes.values())) == 1, modes
