"""The spec tools: fmt, convert, graph, schema and the generated block reference.

Every command runs on every spec of specs/ (in-process, so the file stays fast).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, SPECS, run_cli

import dsl
from dsl.language.ir import strip_spans
from dsl.language.printer import to_text
from dsl.language.text import parse_text
from dsl.language.yaml_reader import extract_comments, parse_yaml, plain_scalar
from dsl.language.yaml_writer import to_yaml
from dsl.tools.schema import spec_schema

TEXT_SPECS = sorted(SPECS.glob("*.dsl")) + sorted((SPECS / "gallery").glob("*.dsl"))
YAML_SPECS = sorted(SPECS.glob("*.yaml"))
ALL_SPECS = TEXT_SPECS + YAML_SPECS


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(SPECS)) for p in paths]


def _texts(spec) -> list[str]:
    """Comment texts in order (YAML's blank-line markers have none)."""
    return [
        c.text for c in sorted(spec.comments, key=lambda c: (c.span.line, c.span.col)) if c.text
    ]


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copyfile(src, dst)
    return dst


# A spec with comments in every place the text printer knows.
COMMENTED = """\
# header comment
param hidden = 16  # width

use "other.dsl"  # imported

# about the block
block Expert(dim: int, width: int = 64) {  # block header
    input x: [..., dim]
    # before h
    h = gelu(Linear(x, out=width))  # trailing h

    y = Linear(h, out=dim)
    output y
    # end of Expert
}

# about the model
model M(classes: int = 4) {
    input x: [N, F]  # features
    repeat 2 as i {  # loop
        # inside the loop
        x = relu(Linear(x, out=hidden))
        # end of loop
    }
    output x
}

train {
    data = karate()  # data
    loss = cross_entropy(x, y)
    # end of train
}

# at the very end
"""


# --------------------------------------------------------------------------- fmt


@pytest.mark.parametrize("path", ALL_SPECS, ids=_ids(ALL_SPECS))
def test_fmt_every_spec_is_idempotent_and_keeps_meaning(path, tmp_path):
    target = _copy(path, tmp_path)
    code, _, err = run_cli("fmt", str(target))
    assert code == 0, err
    once = target.read_text()
    code, out, err = run_cli("fmt", "--check", str(target))
    assert code == 0 and out == "", out + err  # already canonical: nothing to do
    assert strip_spans(dsl.load(target)) == strip_spans(dsl.load(path))
    assert _texts(dsl.load(target)) == _texts(dsl.load(path))
    code, out, _ = run_cli("fmt", "--stdout", str(target))
    assert code == 0 and out == once
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".dsl-")]  # no temporary file left


def test_fmt_check_lists_files_and_changes_nothing(tmp_path):
    messy = tmp_path / "messy.dsl"
    messy.write_text("model M{input x:[B,4]\ny=Linear(x,out=2)   # keep me\noutput y}\n")
    before = messy.read_text()
    code, out, _ = run_cli("fmt", "--check", str(messy))
    assert code == 1 and f"would reformat {messy}" in out
    assert messy.read_text() == before
    code, out, _ = run_cli("fmt", "--stdout", str(messy))
    assert code == 0 and messy.read_text() == before
    assert (
        out
        == "model M {\n    input x: [B, 4]\n    y = Linear(x, out=2)  # keep me\n    output y\n}\n"
    )


def test_fmt_writes_in_place_keeping_the_file_mode(tmp_path):
    messy = tmp_path / "messy.dsl"
    messy.write_text("param  a=1\n")
    messy.chmod(0o640)
    code, out, _ = run_cli("fmt", str(messy))
    assert code == 0 and f"reformatted {messy}" in out
    assert messy.read_text() == "param a = 1\n"
    assert stat.S_IMODE(messy.stat().st_mode) == 0o640


def test_fmt_keeps_every_comment_and_is_idempotent(tmp_path):
    path = tmp_path / "c.dsl"
    path.write_text(COMMENTED)
    code, _, err = run_cli("fmt", str(path))
    assert code == 0, err
    text = path.read_text()
    assert text == COMMENTED  # this spec is already canonical
    assert [c.text for c in parse_text(text).comments] == [
        c.text for c in parse_text(COMMENTED).comments
    ]


def test_fmt_moves_comments_with_their_statements():
    text = to_text(
        parse_text(
            "model M {\n  input x: [B, 4]\n     # why\n  y = relu(x)   # what\n  output y\n}\n"
        )
    )
    assert (
        text
        == "model M {\n    input x: [B, 4]\n    # why\n    y = relu(x)  # what\n    output y\n}\n"
    )


def test_fmt_errors_and_usage(tmp_path):
    bad = tmp_path / "bad.dsl"
    bad.write_text("model M {\n    y = \n}\n")
    code, _, err = run_cli("fmt", str(bad))
    assert code == 1 and "error[E0101]" in err and bad.read_text() == "model M {\n    y = \n}\n"
    code, _, err = run_cli("fmt", str(tmp_path / "missing.dsl"))
    assert code == 1 and "E0702" in err
    assert run_cli("fmt", "--check", "--stdout", str(bad))[0] == 2


def test_fmt_yaml_keeps_comments_and_is_idempotent(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(
        "# yaml-language-server: $schema=spec.schema.json\n"
        "params: {hidden: 16}  # width\n"
        "model:\n  name: M\n  inputs: {x: {shape: [B, 64]}}\n"
        "  nodes:\n    # the hidden layer\n    - {id: h, op: Linear, in: [x], with: {out: '${hidden}', bias: true}}\n"
        "    - {id: y, expr: 'relu(h)'}   # activation\n  outputs: {y: }\n"
    )
    code, _, err = run_cli("fmt", str(path))
    assert code == 0, err
    once = path.read_text()
    assert once.startswith(
        "# yaml-language-server: $schema=spec.schema.json\nparams:\n  hidden: 16  # width\n"
    )
    assert "    # the hidden layer\n    - {id: h, op: Linear" in once
    assert "    - {id: y, op: relu, in: [h]}  # activation\n" in once
    assert run_cli("fmt", "--check", str(path))[0] == 0


# --------------------------------------------------------------------------- convert


@pytest.mark.parametrize("path", TEXT_SPECS, ids=_ids(TEXT_SPECS))
def test_convert_text_to_yaml_and_back_gives_the_formatted_text(path, tmp_path):
    out = tmp_path / (path.stem + ".yaml")
    code, _, err = run_cli("convert", str(path), "--to", "yaml", "-o", str(out))
    assert code == 0, err
    assert strip_spans(dsl.load(out)) == strip_spans(dsl.load(path))
    code, back, err = run_cli("convert", str(out), "--to", "dsl")
    assert code == 0, err
    assert back == to_text(dsl.load(path))


@pytest.mark.parametrize("path", YAML_SPECS, ids=_ids(YAML_SPECS))
def test_convert_yaml_to_text_and_back_gives_equal_ir(path, tmp_path):
    text = tmp_path / (path.stem + ".dsl")
    code, _, err = run_cli("convert", str(path), "--to", "dsl", "-o", str(text))
    assert code == 0, err
    code, again, err = run_cli("convert", str(text), "--to", "yaml")
    assert code == 0, err
    assert strip_spans(parse_yaml(again)) == strip_spans(dsl.load(path))


def test_convert_round_trips_comments_exactly():
    yaml_text = to_yaml(parse_text(COMMENTED))
    for line in (
        "# header comment",
        "  hidden: 16  # width",
        "  Expert:  # block header",
        "      # end of Expert",
        "        # inside the loop",
        "# at the very end",
    ):
        assert line in yaml_text.splitlines(), line
    assert to_text(parse_yaml(yaml_text)) == COMMENTED
    assert to_yaml(parse_yaml(yaml_text)) == yaml_text  # YAML -> YAML is stable too


def test_convert_comment_after_a_closing_brace_moves_inside():
    """YAML has no `}`: such a comment comes back on the line before it (documented)."""
    spec = parse_text("model M {\n    input x\n    output x\n}  # closing\n")
    y = to_yaml(spec)
    assert to_text(parse_yaml(y)) == "model M {\n    input x\n    output x\n    # closing\n}\n"
    spec = parse_text(
        "model M {\n    input x\n    output x\n}\n\ntrain {  # on train\n    epochs = 1\n}\n"
    )
    y = to_yaml(spec)
    assert "train:  # on train" in y
    assert "}\n\n# on train\ntrain {\n" in to_text(parse_yaml(y))  # comes back above `train`


def test_convert_usage_errors(tmp_path):
    src = str(SPECS / "classifier.dsl")
    assert run_cli("convert", src, "--to", "yaml", "-o", str(tmp_path / "x.dsl"))[0] == 2
    assert run_cli("convert", src, "--to", "dsl", "-o", src)[0] == 2
    assert run_cli("convert", src)[0] == 2  # --to is required
    code, _, err = run_cli("convert", str(SPECS / "broken" / "bad.yaml"), "--to", "dsl")
    assert code == 0, err  # converting needs a parse, not a valid model
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    code, _, err = run_cli("convert", str(bad), "--to", "dsl")
    assert code == 1 and "E0701" in err


def test_yaml_comment_scanner_skips_strings_and_block_scalars():
    text = "a: 'x # no'  # yes\nb: \"#no\"\nc: |\n  # no\n  text\n# also yes\nd: e#no\n"
    assert [(c.text, c.span.line, c.span.col) for c in extract_comments(text) if c.text] == [
        ("# yes", 1, 14),
        ("# also yes", 6, 1),
    ]
    bom = '\ufeffa: "x #"  # c\r\nb: 1\r\n'  # a byte-order mark and CRLF shift no offset
    assert [(c.text, c.span.line) for c in extract_comments(bom) if c.text] == [("# c", 1)]


# --------------------------------------------------------------------------- graph


def _mermaid_ids(text: str) -> tuple[set[str], list[tuple[str, str]]]:
    nodes = set(re.findall(r"^\s*(n\d+)[\[(]", text, re.M))
    edges = re.findall(r"^\s*(n\d+) -[.-]*>(?:\|[^|]*\|)? (n\d+)$", text, re.M)
    return nodes, edges


@pytest.mark.parametrize("path", ALL_SPECS, ids=_ids(ALL_SPECS))
def test_graph_every_spec_in_every_dependency_free_format(path, tmp_path):
    code, mermaid, err = run_cli("graph", str(path))
    assert code == 0, err
    assert mermaid.startswith("flowchart TD\n")
    nodes, edges = _mermaid_ids(mermaid)
    assert nodes and edges and all(a in nodes and b in nodes for a, b in edges)
    prog_inputs = dsl.load(path).model.inputs
    for decl in prog_inputs:
        assert f"input {decl.name}<br>" in mermaid
    code, dot, err = run_cli("graph", str(path), "--format", "dot", "--expand")
    assert code == 0, err
    assert dot.startswith("digraph dsl {") and dot.rstrip().endswith("}")
    assert dot.count("{") == dot.count("}")
    page = tmp_path / "g.html"
    env_path = os.environ.get("PATH", "")
    os.environ["PATH"] = str(tmp_path)  # no `dot`: the pure-HTML rendering
    try:
        code, _, err = run_cli("graph", str(path), "--format", "html", "-o", str(page))
    finally:
        os.environ["PATH"] = env_path
    assert code == 0, err
    html_text = page.read_text()
    assert "Content-Security-Policy" in html_text and "<script" not in html_text
    assert not re.search(r"\b(src|href)=", html_text)  # nothing fetched at view time


def test_graph_shows_blocks_hyperparameters_and_shapes():
    code, out, err = run_cli("graph", str(SPECS / "protogat.dsl"))
    assert code == 0, err
    for text in (
        '"h = GAT<br>out=16, heads=4<br>[34, 64]"',
        '"repeat ×2 as i"',
        "MoE",
        "[2, 156] long",
        "output logits<br>[34, 4]",
        '-.->|"next"|',
    ):
        assert text in out, text
    assert out.count("GATv2<br>") == 1  # folded: one copy drawn
    code, out, _ = run_cli("graph", str(SPECS / "hopfield_mil.dsl"))
    assert '-->|"mask"|' in out  # a keyword tensor input is labelled
    code, expanded, _ = run_cli("graph", str(SPECS / "protogat.dsl"), "--expand")
    assert expanded.count("GATv2<br>") == 2 and "-.->" not in expanded


def test_graph_user_blocks_are_clusters_and_repeats_fold():
    code, out, _ = run_cli("graph", str(SPECS / "sequence.dsl"))
    assert code == 0
    assert 'subgraph c1 ["repeat layers (×2) as i"]' in out
    assert out.count('["h = EncoderLayer(d=dim)"]') == 1
    code, out, _ = run_cli("graph", str(SPECS / "sequence.dsl"), "--expand", "--set", "layers=3")
    assert out.count('["h = EncoderLayer(d=dim)"]') == 3
    code, dot, _ = run_cli("graph", str(SPECS / "sequence.dsl"), "--format", "dot")
    assert 'subgraph cluster_c4 {\n                label="h = EncoderLayer(d=dim)"' in dot


def test_graph_nested_repeats_fold_level_by_level(write):
    path = write(
        "model M {\n    input h: [B, 4]\n"
        "    repeat 2 as i {\n        h = Linear(h, out=4)\n        repeat 3 { h = relu(h) }\n    }\n"
        "    repeat 2 as j {\n        repeat j + 1 { h = tanh(h) }\n    }\n"
        "    output h\n}\n"
    )
    code, out, err = run_cli("graph", path)
    assert code == 0, err
    titles = re.findall(r'subgraph c\d+ \["(.*)"\]', out)
    assert titles == [
        "model M",
        "repeat ×2 as i",
        "repeat ×3",
        "repeat ×2 as j",
        "repeat j + 1 (3 copies in all)",
    ]
    assert out.count("relu<br>") == 1 and out.count("tanh<br>") == 1
    code, out, _ = run_cli("graph", path, "--expand")
    assert out.count("relu<br>") == 6 and out.count("tanh<br>") == 3


def test_graph_repeat_with_no_copies_draws_no_cluster():
    code, out, _ = run_cli("graph", str(SPECS / "sequence.dsl"), "--set", "layers=0")
    assert code == 0 and "repeat" not in out and "EncoderLayer" not in out


HOSTILE = r"""block B(s: str) {
    input x
    output x
}
model M {
    input end: [N, 4]
    graph = B(end, s="a\"]; end\n<script>x</script> \\l & #quot; `x` |")
    subgraph = Linear(graph, out=2)
    output subgraph
}
"""


def test_graph_escapes_hostile_labels(write, tmp_path):
    path = write(HOSTILE)
    code, mermaid, err = run_cli("graph", path)
    assert code == 0, err
    for line in mermaid.splitlines():
        for label in re.findall(r'\["(.*?)"\]|\("(.*?)"\)', line):
            text = "".join(label)
            assert '"' not in text and "<script" not in text and "`" not in text
    assert "#lt;script#gt;" in mermaid and "#quot;" in mermaid
    code, dot, _ = run_cli("graph", path, "--format", "dot")
    strings = re.findall(r'"((?:[^"\\]|\\.)*)"', dot)
    assert any('\\"]; end\\\\n<script>' in s for s in strings)  # quote and backslash escaped
    assert not re.search(r"(?<!\\)\\l", dot)  # a user's backslash never becomes a DOT escape
    page = tmp_path / "h.html"
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = str(tmp_path)
    try:
        assert run_cli("graph", path, "--format", "html", "-o", str(page))[0] == 0
    finally:
        os.environ["PATH"] = old
    assert "<script" not in page.read_text() and "&lt;script&gt;" in page.read_text()


def test_graph_svg_without_dot_says_how_to_install(tmp_path):
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = str(tmp_path)
    try:
        code, out, err = run_cli("graph", str(SPECS / "classifier.dsl"), "--format", "svg")
    finally:
        os.environ["PATH"] = old
    assert code == 2 and out == ""
    assert "Graphviz" in err and "apt install graphviz" in err and "--format mermaid" in err


def test_graph_svg_and_html_with_dot(tmp_path):
    fake = tmp_path / "bin" / "dot"
    fake.parent.mkdir()
    seen = tmp_path / "seen.dot"
    fake.write_text(
        f"#!/bin/sh\ncat > {seen}\n"
        'echo \'<?xml version="1.0"?><!DOCTYPE svg><svg xmlns="http://www.w3.org/2000/svg">'
        "<text>drawn</text></svg>'\n"
    )
    fake.chmod(0o755)
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join(
        [str(fake.parent), "/usr/bin", "/bin"]
    )  # the fake comes first
    try:
        code, svg, err = run_cli("graph", str(SPECS / "classifier.dsl"), "--format", "svg")
        assert code == 0, err
        page = tmp_path / "g.html"
        code, _, err = run_cli(
            "graph", str(SPECS / "classifier.dsl"), "--format", "html", "-o", str(page)
        )
        assert code == 0, err
    finally:
        os.environ["PATH"] = old
    assert svg.startswith("<?xml") and "<text>drawn</text>" in svg
    assert seen.read_text().startswith("digraph dsl {")
    html_text = page.read_text()
    assert (
        "<svg xmlns" in html_text and "<?xml" not in html_text and "<!DOCTYPE svg>" not in html_text
    )


def test_graph_html_falls_back_when_dot_fails(tmp_path):
    fake = tmp_path / "bin" / "dot"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    fake.chmod(0o755)
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = str(fake.parent)
    try:
        code, page, err = run_cli("graph", str(SPECS / "classifier.dsl"), "--format", "html")
        assert code == 0 and "broken" in err and '<div class="node block"' in page
        code, _, err = run_cli("graph", str(SPECS / "classifier.dsl"), "--format", "svg")
        assert code == 2 and "exit 3" in err and "broken" in err
    finally:
        os.environ["PATH"] = old


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_graph_real_graphviz_accepts_every_dot_file():
    for path in ALL_SPECS + [SPECS / "sequence.dsl"]:
        code, svg, err = run_cli("graph", str(path), "--format", "svg", "--expand")
        assert code == 0 and "<svg" in svg, (path, err)


def test_graph_reports_spec_errors(tmp_path):
    code, out, err = run_cli("graph", str(SPECS / "broken" / "shape_mismatch.dsl"))
    assert code == 1 and out == "" and "E0301" in err
    path = tmp_path / "nomodel.dsl"
    path.write_text("param a = 1\n")
    code, _, err = run_cli("graph", str(path))
    assert code == 1 and "E0208" in err


# --------------------------------------------------------------------------- schema


def _load_yaml_12(text: str):
    """A YAML document as data under the 1.2 core schema, as `dsl` reads it."""

    def conv(node):
        if isinstance(node, yaml.ScalarNode):
            return plain_scalar(node.value) if node.style is None else node.value
        if isinstance(node, yaml.SequenceNode):
            return [conv(n) for n in node.value]
        return {conv(k): conv(v) for k, v in node.value}

    return conv(yaml.compose(text, Loader=yaml.SafeLoader))


@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip("jsonschema")
    code, out, err = run_cli("schema")
    assert code == 0, err
    schema = json.loads(out)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", ALL_SPECS, ids=_ids(ALL_SPECS))
def test_schema_accepts_every_spec(path, validator):
    text = path.read_text() if path.suffix == ".yaml" else to_yaml(dsl.load(path))
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(_load_yaml_12(text))
    ]
    assert not errors, errors


BASE = "model:\n  name: M\n  inputs: {x: {shape: [B, 8]}}\n  nodes:\n    - {id: y, op: Linear, in: [x], with: {out: 4}}\n"


@pytest.mark.parametrize(
    "text, where",
    [
        (BASE.replace("out: 4", "out: 4, bais: true"), "bais"),  # unknown hyperparameter
        (BASE.replace("out: 4", 'out: "4"'), "'4'"),  # a string where an int goes
        (BASE.replace("with: {out: 4}", "with: {}"), "out"),  # required hyperparameter missing
        (BASE.replace("[B, 8]}", "[B, 8], dtype: double}"), "double"),
        (BASE.replace("  name: M\n", ""), "name"),
        (BASE + "train: {epochz: 3}\n", "epochz"),
        (BASE + "modle: {}\n", "modle"),
        (BASE.replace("- {id: y,", "- {repeat: 2, id: y,"), "repeat"),
        (BASE.replace("id: y", "id: 2y"), "2y"),
    ],
)
def test_schema_rejects_wrong_specs(text, where, validator):
    errors = list(validator.iter_errors(_load_yaml_12(text)))
    assert errors, text
    assert validator.is_valid(_load_yaml_12(BASE))


def test_schema_rejects_the_broken_yaml_spec(validator):
    assert not validator.is_valid(_load_yaml_12((SPECS / "broken" / "bad.yaml").read_text()))


def _errors(validator, text: str) -> list[list]:
    return [list(e.absolute_path) for e in validator.iter_errors(_load_yaml_12(text))]


def test_an_unknown_op_fails_when_the_spec_defines_no_blocks(validator) -> None:
    assert _errors(validator, BASE) == []
    assert ["model", "nodes", 0, "op"] in _errors(validator, BASE.replace("op: Linear", "op: Linaer"))
    in_repeat = BASE.replace("- {id: y, op: Linear, in: [x], with: {out: 4}}",
                             "- {repeat: 2, nodes: [{id: y, op: Linaer, in: [x], with: {out: 4}}]}")
    assert _errors(validator, in_repeat)
    expert = BASE.replace("op: Linear, in: [x], with: {out: 4}",
                          "op: MoE, in: [x], with: {experts: 2, expert: {op: MLPP, with: {hidden: 4}}}")
    assert _errors(validator, expert)


def test_a_spec_with_blocks_or_uses_may_call_its_own(validator) -> None:
    own = BASE.replace("op: Linear, in: [x], with: {out: 4}", "op: Proj, in: [x]")
    blocks = "blocks:\n  Proj:\n    inputs: {x: {shape: [..., F]}}\n    nodes: [{id: y, op: Linear, in: [x], with: {out: 4}}]\n    outputs: {y: null}\n"
    assert _errors(validator, own)
    assert _errors(validator, blocks + own) == []
    assert _errors(validator, 'use: ["lib.yaml"]\n' + own) == []


def test_a_named_instance_may_be_an_op(validator) -> None:
    text = BASE.replace("- {id: y, op: Linear, in: [x], with: {out: 4}}",
                        "- {id: enc, op: MLP, with: {hidden: 8, out: 4}}\n    - {id: y, op: enc, in: [x]}")
    assert _errors(validator, text) == []


@pytest.mark.parametrize("train, ok", [
    ('{data: "digits(batch=64)", loss: "cross_entropy(y, y)", epochs: 10, seed: 0}', True),
    ('{data: \'"rows.csv"\', optimizer: adamw, schedule: "cosine(t_max=5)", grad_clip: 1}', True),
    ('{epochs: "n_epochs", metrics: ["accuracy(y, y)", "cross_entropy(y, y)"]}', True),
    ('{early_stop: "early_stop(metric=accuracy)", prune: "magnitude(sparsity=0.5, end=4)"}', True),
    ('{stages: ["warm(epochs=2)", "joint(epochs=3, push_every=1)", "last_layer(epochs=1)"]}', True),
    ('{stages: ["wram(epochs=2)"]}', False),
    ("{epochs: 2.5}", False),
    ("{epochs: 0}", False),
    ("{seed: -1}", False),
    ("{grad_clip: 0}", False),
    ('{data: "digts()"}', False),
    ("{optimizer: adamx}", False),
    ('{metrics: ["accurcy(y, y)"]}', False),
    ("{batch: true}", False),
])
def test_train_values_are_typed(validator, train: str, ok: bool) -> None:
    errors = _errors(validator, BASE + f"train: {train}\n")
    assert (errors == []) is ok, errors
    assert all(path[:1] == ["train"] for path in errors)


def _yaml_language_server() -> str | None:
    """yaml-language-server (npm) when installed: $DSL_YAML_LANGUAGE_SERVER or on PATH."""
    found = os.environ.get("DSL_YAML_LANGUAGE_SERVER") or shutil.which("yaml-language-server")
    return found if found and os.path.exists(found) else None


@pytest.mark.skipif(_yaml_language_server() is None,
                    reason="yaml-language-server is not installed (npm install yaml-language-server)")
def test_yaml_language_server_reports_an_unknown_op(tmp_path: Path) -> None:
    import asyncio

    from lsprotocol import types
    from pytest_lsp import client_capabilities, make_test_lsp_client

    schema = tmp_path / "spec.schema.json"
    schema.write_text(json.dumps(spec_schema()))
    head = f"# yaml-language-server: $schema={schema}\n"

    async def diagnostics(text: str) -> list:
        client = make_test_lsp_client()
        client.set_configuration({"validate": True, "schemaStore": {"enable": False}}, section="yaml")
        await client.start_io(str(_yaml_language_server()), "--stdio")
        await client.initialize_session(types.InitializeParams(capabilities=client_capabilities("visual-studio-code")))
        uri = (tmp_path / "spec.yaml").as_uri()
        client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, "yaml", 1, text)))
        await asyncio.wait_for(client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS), 30)
        found = list(client.diagnostics.get(uri, []))
        await client.shutdown_session()
        await client.stop()
        return found

    bad = head + BASE.replace("op: Linear", "op: Linaer")
    (d,) = asyncio.run(diagnostics(bad))
    assert "Linear" in d.message and d.range.start.line == bad.splitlines().index(
        next(line for line in bad.splitlines() if "Linaer" in line))
    assert asyncio.run(diagnostics(head + (SPECS / "classifier.yaml").read_text())) == []


def test_schema_completes_hyperparameters(tmp_path):
    target = tmp_path / "spec.schema.json"
    assert run_cli("schema", "-o", str(target))[0] == 0
    schema = json.loads(target.read_text())
    gat = schema["$defs"]["with.GAT"]["properties"]
    assert gat["heads"]["default"] == 1 and "heads" in gat["heads"]["description"]
    assert {"type": "integer", "exclusiveMinimum": 0} in gat["out"]["anyOf"]
    assert schema["$defs"]["with.GAT"]["required"] == ["out"]
    assert "edge_attr" in gat  # optional tensor inputs go in `with` too


# --------------------------------------------------------------------------- docs


def test_blocks_reference_page_is_up_to_date():
    from dsl.tools.catalogue import REGENERATE, markdown

    page = (ROOT / "docs" / "BLOCKS.md").read_text(encoding="utf-8")
    assert page == markdown(), f"docs/BLOCKS.md is stale: run `{REGENERATE}`"


def test_blocks_reference_page_covers_every_builtin_block():
    from dsl.language import registry
    from dsl.tools.catalogue import main

    page = (ROOT / "docs" / "BLOCKS.md").read_text(encoding="utf-8")
    for name, decl in registry.load().items():
        if decl.source == "builtin":
            assert f"\n### {name}\n" in page
    assert main(["--check", str(ROOT / "docs" / "BLOCKS.md")]) == 0


def test_the_catalogue_spells_types_as_a_spec_writer_reads_them() -> None:
    code, out, _ = run_cli("blocks", "sum")
    assert code == 0 and "int | list[int] | null" in out  # not `Annotated`, and not eaten as markup
    assert "Annotated" not in (Path(__file__).parents[1] / "docs" / "BLOCKS.md").read_text()
