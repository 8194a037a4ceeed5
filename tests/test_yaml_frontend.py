"""The YAML front end: IR equal to the text form, positions, safety limits,
and YAML <-> text round trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsl.language.errors import SpecError
from dsl.language.ir import (
    Bool,
    Call,
    ListExpr,
    Name,
    NoneLit,
    Num,
    Repeat,
    Str,
    UnaryOp,
    strip_spans,
)
from dsl.language.text import parse_text
from dsl.language.yaml_reader import MAX_NODES, parse_yaml, plain_scalar
from dsl.language.yaml_writer import to_yaml

SPECS = Path(__file__).resolve().parent.parent / "specs"

DESIGN_YAML = """\
params: {hidden: 16}
model:
  name: Classifier
  args: {classes: 10}
  inputs:
    x: {shape: [B, 64]}
  nodes:
    - {id: h, op: Linear, in: [x], with: {out: "${hidden}"}}
    - {id: h, op: relu, in: [h]}
    - {id: logits, op: Linear, in: [h], with: {out: "${classes}"}}
  outputs:
    logits: {shape: [B, "${classes}"]}
train: {data: "digits(batch=64)", loss: "cross_entropy(logits, y)", epochs: 10}
"""

DESIGN_TEXT = """\
param hidden = 16
model Classifier(classes: int = 10) {
    input x: [B, 64]
    h = Linear(x, out=hidden)
    h = relu(h)
    logits = Linear(h, out=classes)
    output logits: [B, classes]
}
train {
    data = digits(batch=64)
    loss = cross_entropy(logits, y)
    epochs = 10
}
"""

PROTOGAT_YAML = """\
params:
  hidden: 16
blocks:
  Expert:
    args: {dim: {type: int}, width: 64}
    inputs: {x: {shape: ["...", dim]}}
    nodes:
      - {id: h, expr: "gelu(Linear(x, out=width))"}
      - {id: y, op: Linear, in: [h], with: {out: "${dim}"}}
    outputs: {y: null}
model:
  name: ProtoGAT
  args: {classes: 4, heads: 4}
  inputs:
    x: {shape: [N, F]}
    edge_index: {shape: [2, E], dtype: long}
  nodes:
    - {id: h, op: GAT, in: [x, edge_index], with: {out: "${hidden}", heads: "${heads}"}}
    - {id: h, op: elu, in: [h]}
    - repeat: 2
      as: i
      nodes:
        - {id: h, expr: "GATv2(h, edge_index, out=hidden) + Linear(h, out=hidden)"}
        - {id: h, op: elu, in: [h]}
    - {id: m, op: HopfieldLayer, in: [h], with: {patterns: 16}}
    - id: [z, balance]
      op: MoE
      in: ["h + m"]
      with: {experts: 4, k: 2, expert: {op: Expert, with: {dim: "${hidden}"}}}
    - {id: [logits, dist], op: PrototypeHead, in: [z], with: {classes: "${classes}", per_class: 2}}
  outputs:
    logits: {shape: [N, "${classes}"]}
train:
  data: karate()
  loss: cross_entropy(logits, y, mask=train_mask)
  metrics: ["accuracy(logits, y, mask=test_mask)"]
  optimizer: adam(lr=0.01, weight_decay=5e-4)
  epochs: 200
  seed: 0
"""


def errors(text: str, file: str = "bad.yaml") -> list:
    with pytest.raises(SpecError) as info:
        parse_yaml(text, file)
    return info.value.diagnostics


def at(text: str, span) -> str:
    """The source text from a span's start (to check positions by content)."""
    return text.splitlines()[span.line - 1][span.col - 1 :]


# --------------------------------------------------------------------------- same IR as text


def test_design_yaml_equals_design_text() -> None:
    spec = parse_yaml(DESIGN_YAML, "c.yaml")
    assert spec.format == "yaml" and spec.file == "c.yaml"
    assert strip_spans(spec) == strip_spans(parse_text(DESIGN_TEXT))


def test_protogat_yaml_equals_protogat_text() -> None:
    text = (SPECS / "protogat.dsl").read_text()
    assert strip_spans(parse_yaml(PROTOGAT_YAML)) == strip_spans(parse_text(text))


def test_shipped_yaml_specs_equal_their_text_twins() -> None:
    pairs = [p for p in SPECS.glob("*.yaml") if p.with_suffix(".dsl").exists()]
    assert pairs, "specs/ should hold at least one YAML spec with a .dsl twin"
    for p in pairs:
        y = parse_yaml(p.read_text(), str(p))
        t = parse_text(p.with_suffix(".dsl").read_text(), str(p.with_suffix(".dsl")))
        assert strip_spans(y) == strip_spans(t), p.name


def test_with_values_map_to_literals_expressions_and_block_values() -> None:
    spec = parse_yaml(
        """\
model:
  name: M
  nodes:
    - id: y
      op: Block
      in: [x, 3, [a, b]]
      with: {f: 0.5, e: 5e-4, n: -2, b: true, s: gelu, o: "on", z: null, l: [1, "${k}"],
             q: "${hidden * 2}", v: {op: MLP, with: {out: 4}}, w: {op: Id}}
"""
    )
    call = spec.model.body[0].value
    assert isinstance(call, Call) and call.func == "Block"
    args = strip_spans(call.args)
    assert args == (Name(id="x"), Num(value=3), ListExpr(items=(Name(id="a"), Name(id="b"))))
    kw = {k.name: strip_spans(k.value) for k in call.kwargs}
    assert kw["f"] == Num(value=0.5) and kw["e"] == Num(value=5e-4)
    assert kw["n"] == UnaryOp(op="-", operand=Num(value=2))  # as the text parser spells -2
    assert kw["b"] == Bool(value=True) and kw["s"] == Str(value="gelu") and kw["o"] == Str(value="on")
    assert kw["z"] == NoneLit() and kw["l"] == ListExpr(items=(Num(value=1), Name(id="k")))
    assert kw["q"] == strip_spans(parse_text("param p = hidden * 2").params[0].value)
    assert kw["v"] == Call(func="MLP", kwargs=strip_spans(parse_text("param p = f(out=4)").params[0].value.kwargs))
    assert kw["w"] == Call(func="Id")


def test_args_types_inferred_or_explicit() -> None:
    spec = parse_yaml("model:\n  name: M\n  args: {a: 1, b: 0.5, c: true, d: s, e: {type: float, default: 1}, f: {type: int}}\n")
    got = {p.name: (p.type, strip_spans(p.default)) for p in spec.model.params}
    assert got == {
        "a": ("int", Num(value=1)),
        "b": ("float", Num(value=0.5)),
        "c": ("bool", Bool(value=True)),
        "d": ("str", Str(value="s")),
        "e": ("float", Num(value=1)),
        "f": ("int", None),
    }


def test_inline_inputs_outputs_and_nested_repeat_keep_statement_order() -> None:
    y = """\
model:
  name: M
  nodes:
    - {id: a, expr: "1"}
    - {input: x, shape: [B, "${a}"], dtype: long}
    - repeat: "${n}"
      nodes:
        - {repeat: 2, as: j, nodes: [{id: x, op: f, in: [x]}]}
    - {output: x}
"""
    t = "model M {\n a = 1\n input x: [B, a] long\n repeat n {\n repeat 2 as j {\n x = f(x)\n }\n }\n output x\n}\n"
    spec = parse_yaml(y)
    assert strip_spans(spec) == strip_spans(parse_text(t))
    assert isinstance(spec.model.body[2], Repeat) and spec.model.body[2].var is None


def test_plain_scalars_follow_yaml_core_schema() -> None:
    assert plain_scalar("5e-4") == 5e-4 and plain_scalar("1e3") == 1000.0
    assert plain_scalar("on") == "on" and plain_scalar("yes") == "yes"
    assert plain_scalar("~") is None and plain_scalar("False") is False
    assert plain_scalar("0x10") == 16 and plain_scalar("-7") == -7


def test_empty_document_is_an_empty_spec() -> None:
    spec = parse_yaml("", "e.yaml")
    assert spec.model is None and spec.params == () and spec.format == "yaml"


def test_merge_keys_expand_and_explicit_keys_win() -> None:
    spec = parse_yaml(
        """\
model:
  name: M
  nodes:
    - {id: y, op: Linear, in: [x], with: &d {out: 8, bias: false}}
    - {id: z, op: Linear, in: [y], with: {<<: *d, out: 4}}
"""
    )
    kw = {k.name: strip_spans(k.value) for k in spec.model.body[1].value.kwargs}
    assert kw == {"bias": Bool(value=False), "out": Num(value=4)}


# --------------------------------------------------------------------------- positions


def test_spans_point_into_the_yaml_file() -> None:
    spec = parse_yaml(DESIGN_YAML, "c.yaml")
    assign = spec.model.body[1]
    assert (assign.span.file, assign.span.line) == ("c.yaml", 8)
    out_kw = assign.value.kwargs[0].value  # "${hidden}" -> the name inside the quotes
    assert out_kw == Name(id="hidden", span=out_kw.span) and at(DESIGN_YAML, out_kw.span).startswith("hidden}")
    dim = spec.model.body[-1].shape.dims[1]
    assert dim.span.line == 12 and at(DESIGN_YAML, dim.span).startswith("classes}")
    loss = spec.train.get("loss")
    assert at(DESIGN_YAML, loss.key_span).startswith("loss:")
    y = loss.value.args[1]
    assert at(DESIGN_YAML, y.span).startswith("y)")
    assert at(DESIGN_YAML, assign.value.func_span).startswith("Linear,")


def test_unknown_key_gets_suggestion_and_position() -> None:
    text = DESIGN_YAML.replace("  inputs:", "  inptus:")
    (d,) = errors(text)
    assert d.code == "E0701" and "inptus" in d.message
    assert (d.span.file, d.span.line, d.span.col) == ("bad.yaml", 5, 3)
    assert "`inputs`" in (d.help or "")


def test_all_errors_are_collected_with_positions() -> None:
    text = """\
params: {hidden: 16}
model:
  name: M
  inputs: {x: {shape: [B, 4], dtype: flaot}}
  nodes:
    - {op: Linear, in: [x]}
    - {id: y, op: Linear, expr: "x"}
    - {id: z, op: Linear, in: [x], with: {out: "a${hidden}"}}
    - {id: w, op: Linear, in: [x], wiht: {out: 2}}
trian: {epochs: 1}
"""
    diags = errors(text)
    where = [(d.span.line, d.code) for d in diags]
    assert where == [(4, "E0701"), (6, "E0701"), (7, "E0701"), (8, "E0701"), (9, "E0701"), (10, "E0701")]
    assert "did you mean `float`" in (diags[0].help or "")
    assert "`with`" in diags[4].help and "`train`" in diags[5].help


def test_expression_syntax_error_points_into_yaml() -> None:
    text = 'model:\n  name: M\n  nodes:\n    - {id: h, expr: "Linear(x, out=)"}\n'
    (d,) = errors(text, "e.yaml")
    assert d.code == "E0101" and d.span.file == "e.yaml" and d.span.line == 4
    assert at(text, d.span).startswith(")")


def test_yaml_syntax_error_has_position() -> None:
    (d,) = errors("model:\n  name: M\n  nodes: [a, b\n", "s.yaml")
    assert d.code == "E0701" and d.span.file == "s.yaml" and d.span.line >= 3


def test_wrong_value_kinds_are_reported() -> None:
    diags = errors("model:\n  name: M\n  nodes: {id: h}\n  inputs: [x]\ntrain: {optimizer: {lr: 1}}\n")
    assert [(d.span.line, d.code) for d in diags] == [(3, "E0701"), (4, "E0701"), (5, "E0701")]


def test_invalid_identifiers_are_e0213() -> None:
    diags = errors("model:\n  name: M\n  nodes:\n    - {id: 'a b', expr: x}\n    - {id: input, expr: x}\n")
    assert [(d.code, d.span.line) for d in diags] == [("E0213", 4), ("E0213", 5)]


def test_duplicate_keys_are_reported() -> None:
    (d,) = errors("model:\n  name: M\n  name: N\n")
    assert "duplicate key" in d.message and d.span.line == 3


# --------------------------------------------------------------------------- safety


def test_tags_are_refused() -> None:
    text = "params:\n  a: !!python/object:os.system echo\n  b: !custom 3\n"
    diags = errors(text)
    assert [(d.code, d.span.line) for d in diags] == [("E0701", 2), ("E0701", 3)]
    assert "tags are not allowed" in diags[0].message


def test_alias_bomb_is_refused() -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    text = "params:\n" + "\n".join("  " + line for line in lines) + "\n"
    diags = errors(text)
    assert [d.code for d in diags] == ["E0801"]
    assert str(MAX_NODES) in diags[0].message


def test_deep_nesting_is_refused() -> None:
    deep = "params:\n  a: " + "[" * 200 + "]" * 200 + "\n"
    assert [d.code for d in errors(deep)] == ["E0102"]
    deeper = "params:\n  a: " + "[" * 5000 + "]" * 5000 + "\n"
    assert [d.code for d in errors(deeper)] == ["E0102"]


def test_recursive_alias_is_refused() -> None:
    diags = errors("params:\n  a: &x [*x]\n")
    assert diags[0].code in ("E0102", "E0801")


# --------------------------------------------------------------------------- writer and round trips

ROUND_TRIP_TEXTS = [
    DESIGN_TEXT,
    'param lr = -0.5\nparam name = "a${b}"\nparam big = 1e20\nparam neg = -(2 * 3)\n'
    'use "other.dsl"\nblock B(a: float = 1, b, c: str = "on") {\n input x: [..., a*2]\n y = x\n output y\n}\n'
    "model M(k: int = 2) {\n input x: [B, -1] bool\n output x\n input z: [_, 3]\n"
    " a, b = Blk(x, z, n=[1, 2.5, true, null, \"s\"], m=k * 2, t=Other(q=[x]), u=-1)\n"
    " repeat k as i { repeat 2 { z = z @ x + i } }\n c = f(x, 3)\n output a: [B, k]\n}\n"
    'train {\n data = iris()\n metrics = [acc(a), 2, "x"]\n lr = -0.1\n name = "s"\n flag = false\n none = null\n}\n',
]


def _shipped_texts() -> list[str]:
    return [p.read_text() for p in sorted(SPECS.glob("*.dsl"))]


@pytest.mark.parametrize("index", range(len(ROUND_TRIP_TEXTS) + len(_shipped_texts())))
def test_text_yaml_text_round_trip(index: int) -> None:
    pytest.importorskip("dsl.language.printer")
    from dsl.language.printer import to_text

    text = (ROUND_TRIP_TEXTS + _shipped_texts())[index]
    spec = parse_text(text)
    y = to_yaml(spec)
    back = parse_yaml(y, "rt.yaml")
    assert strip_spans(back) == strip_spans(spec), y
    assert to_text(strip_spans(back)) == to_text(strip_spans(spec))  # comments and blank lines dropped
    assert strip_spans(parse_text(to_text(back))) == strip_spans(spec)
    assert to_yaml(back) == y  # deterministic and stable


def test_to_yaml_is_readable_block_style() -> None:
    pytest.importorskip("dsl.language.printer")
    y = parse_text(DESIGN_TEXT).to_yaml()
    assert "- {id: h, op: Linear, in: [x], with: {out: \"${hidden}\"}}" in y
    assert "logits: {shape: [B, \"${classes}\"]}" in y
    assert 'data: "digits(batch=64)"' in y and "epochs: 10" in y
    assert strip_spans(parse_yaml(y)) == strip_spans(parse_yaml(DESIGN_YAML))


def test_to_yaml_uses_expr_form_for_nested_calls() -> None:
    pytest.importorskip("dsl.language.printer")
    y = to_yaml(parse_text("model M {\n input x: [N, 4]\n h = gelu(Linear(x, out=8))\n output h\n}\n"))
    assert '- {id: h, expr: "gelu(Linear(x, out=8))"}' in y
    assert "outputs:\n    h: {}" in y
