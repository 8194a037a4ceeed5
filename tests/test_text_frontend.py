"""The text front end: grammar, parse to IR with spans, syntax errors, limits, printer."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsl.language.errors import SpecError
from dsl.language.ir import (
    BinOp,
    Bool,
    Call,
    Ellipsis_,
    Input,
    ListExpr,
    Name,
    NoneLit,
    Num,
    Output,
    Repeat,
    Str,
    UnaryOp,
    Wildcard,
    strip_spans,
)
from dsl.language.printer import dim_to_text, expr_to_text, quote, to_text
from dsl.language.text import MAX_DEPTH, parse_dim, parse_expr, parse_text

# DESIGN §2, verbatim.
DESIGN_EXAMPLE = """\
# specs/protogat.dsl: node classification with all four research blocks
param hidden = 16

block Expert(dim: int, width: int = 64) {
    input x: [..., dim]
    h = gelu(Linear(x, out=width))
    y = Linear(h, out=dim)
    output y
}

model ProtoGAT(classes: int = 4, heads: int = 4) {
    input x: [N, F]
    input edge_index: [2, E] long

    h = GAT(x, edge_index, out=hidden, heads=heads)     # [N, hidden*heads]
    h = elu(h)
    repeat 2 as i {
        h = GATv2(h, edge_index, out=hidden) + Linear(h, out=hidden)
        h = elu(h)
    }
    m = HopfieldLayer(h, patterns=16)                   # learned memory lookup
    z, balance = MoE(h + m, experts=4, k=2, expert=Expert(dim=hidden))
    logits, dist = PrototypeHead(z, classes=classes, per_class=2)

    output logits: [N, classes]
}

train {
    data      = karate()
    loss      = cross_entropy(logits, y, mask=train_mask)
    metrics   = [accuracy(logits, y, mask=test_mask)]
    optimizer = adam(lr=0.01, weight_decay=5e-4)
    epochs    = 200
    seed      = 0
}
"""


def _error(text: str, file: str = "bad.dsl"):
    with pytest.raises(SpecError) as info:
        parse_text(text, file)
    assert len(info.value.diagnostics) == 1
    return info.value.diagnostics[0]


def _expr(text: str):
    return strip_spans(parse_expr(text))


def _at(span) -> tuple[int, int, int, int]:
    return span.line, span.col, span.end_line, span.end_col


# --------------------------------------------------------------------------- the DESIGN example


def test_design_example_structure():
    spec = parse_text(DESIGN_EXAMPLE, "specs/protogat.dsl")
    assert spec.format == "dsl" and spec.file == "specs/protogat.dsl"
    assert [p.name for p in spec.params] == ["hidden"]
    assert spec.params[0].value == Num(value=16, span=spec.params[0].value.span)
    (expert,) = spec.blocks
    assert expert.name == "Expert" and not expert.is_model
    assert [(p.name, p.type) for p in expert.params] == [("dim", "int"), ("width", "int")]
    assert strip_spans(expert.params[1].default) == Num(value=64)
    model = spec.model
    assert model is not None and model.is_model and model.name == "ProtoGAT"
    kinds = [type(s).__name__ for s in model.body]
    assert kinds == ["Input", "Input", "Assign", "Assign", "Repeat", "Assign", "Assign", "Assign",
                     "Output"]
    x, ei = model.inputs
    assert x.dtype is None and ei.dtype == "long"
    assert strip_spans(ei.shape.dims) == (Num(value=2), Name(id="E"))
    assert isinstance(expert.inputs[0].shape.dims[0], Ellipsis_)
    rep = model.body[4]
    assert isinstance(rep, Repeat) and rep.var == "i" and strip_spans(rep.count) == Num(value=2)
    assert len(rep.body) == 2
    moe = model.body[6]
    assert [t.name for t in moe.targets] == ["z", "balance"]
    assert isinstance(moe.value, Call) and moe.value.func == "MoE"
    assert strip_spans(moe.value.kwarg("expert")) == Call(
        func="Expert", kwargs=(strip_spans(moe.value.kwargs[2].value.kwargs[0]),)
    )
    assert strip_spans(moe.value.args[0]) == BinOp(op="+", left=Name(id="h"), right=Name(id="m"))
    out = model.outputs[0]
    assert out.name == "logits" and strip_spans(out.shape.dims) == (Name(id="N"), Name(id="classes"))
    train = spec.train
    assert [e.key for e in train.entries] == ["data", "loss", "metrics", "optimizer", "epochs", "seed"]
    opt = train.get("optimizer").value
    assert strip_spans(opt.kwarg("weight_decay")) == Num(value=5e-4)
    assert isinstance(train.get("metrics").value, ListExpr)
    assert [c.text for c in spec.comments] == [
        "# specs/protogat.dsl: node classification with all four research blocks",
        "# [N, hidden*heads]",
        "# learned memory lookup",
    ]


def test_design_example_spans():
    spec = parse_text(DESIGN_EXAMPLE, "specs/protogat.dsl")
    model = spec.model
    assert _at(model.name_span) == (11, 7, 11, 15)
    assert _at(model.span)[:2] == (11, 1) and _at(model.span)[2:] == (26, 2)
    gat = model.body[2]
    assert _at(gat.span) == (15, 5, 15, 52)
    assert _at(gat.targets[0].span) == (15, 5, 15, 6)
    assert _at(gat.value.func_span) == (15, 9, 15, 12)
    assert _at(gat.value.args[1].span) == (15, 16, 15, 26)
    heads = gat.value.kwargs[1]
    assert heads.name == "heads" and _at(heads.span) == (15, 40, 15, 51)  # `heads=heads`
    assert _at(heads.value.span) == (15, 46, 15, 51)
    entry = spec.train.get("loss")
    assert _at(entry.key_span) == (30, 5, 30, 9)
    assert _at(entry.value.span) == (30, 17, 30, 58)
    assert all(s.span.file == "specs/protogat.dsl" for s in model.body)
    assert _at(spec.comments[1].span) == (15, 57, 15, 76)


# --------------------------------------------------------------------------- statement forms


def test_every_statement_form():
    spec = parse_text(
        'use "lib.dsl"; use \'other.dsl\'\n'
        "param p = 3\n"
        "block B { }\n"
        "block C() {\n}\n"
        "model M(a, b: float, c = 2, s: str = \"x\", f: bool = false) {\n"
        "    input x: [B, T, _] float; input i: [] int\n"
        "    input m: [B] bool\n"
        "    output x\n"
        "    output y: [B, 2 * a]\n"
        "    output z: [B] long\n"
        "    a, b, c = Split(x)\n"
        "    repeat p { h = 1 }\n"
        "    repeat 2 as k {\n        h = h + k\n    }\n"
        "}\n"
        "train { epochs = 1; seed = 0 }\n"
    )
    assert [u.path for u in spec.uses] == ["lib.dsl", "other.dsl"]
    assert [b.name for b in spec.blocks] == ["B", "C"] and spec.blocks[0].body == ()
    params = spec.model.params
    assert [(p.name, p.type) for p in params] == [
        ("a", None), ("b", "float"), ("c", None), ("s", "str"), ("f", "bool"),
    ]
    assert params[0].default is None and strip_spans(params[4].default) == Bool(value=False)
    body = spec.model.body
    assert isinstance(body[0], Input) and strip_spans(body[0].shape.dims[2]) == Wildcard()
    assert body[1].shape.dims == () and body[1].dtype == "int"
    assert body[2].dtype == "bool"
    assert isinstance(body[3], Output) and body[3].shape is None
    assert strip_spans(body[4].shape.dims[1]) == BinOp(op="*", left=Num(value=2), right=Name(id="a"))
    assert body[5].dtype == "long"
    assert [t.name for t in body[6].targets] == ["a", "b", "c"]
    assert body[7].var is None and len(body[7].body) == 1
    assert body[8].var == "k"
    assert [e.key for e in spec.train.entries] == ["epochs", "seed"]


def test_empty_and_comment_only_files():
    assert parse_text("") .params == ()
    spec = parse_text("\n\n# only a comment\n\n")
    assert [c.text for c in spec.comments] == ["# only a comment"]
    assert parse_text("model M() {}").model.params == ()


def test_newlines_inside_brackets_and_braces_on_next_line():
    spec = parse_text(
        "model M(\n    a: int,\n    b: int = 2,\n)\n{\n"
        "    input x: [\n        N,\n        F,\n    ]\n"
        "    h = f(x,  # why\n          k=[1,\n             2])\n}\n"
    )
    assert len(spec.model.params) == 2
    assert len(spec.model.body[0].shape.dims) == 2
    assert strip_spans(spec.model.body[1].value.kwarg("k")) == ListExpr(items=(Num(value=1), Num(value=2)))
    assert spec.comments[0].text == "# why"


def test_top_level_words_are_names_inside_bodies():
    spec = parse_text("model M {\n    train = 1; model = train\n    as = use\n}\n")
    assert [s.targets[0].name for s in spec.model.body] == ["train", "model", "as"]


def test_separators_crlf_and_byte_order_mark():
    spec = parse_text("\ufeffparam a = 1\r\nmodel M {\r\n ;; \r\n  h = 1 ;\r\n ; }  # c\r\n")
    assert spec.params[0].span.col == 2 and spec.model.body[0].span.line == 4
    assert [c.text for c in spec.comments] == ["# c"]


def test_literals():
    assert _expr("5e-4") == Num(value=5e-4) and isinstance(_expr("5e-4").value, float)
    assert _expr("1.5") == Num(value=1.5)
    assert _expr("7").value == 7 and isinstance(_expr("7").value, int)
    assert _expr(".5") == Num(value=0.5)
    assert _expr("2.") == Num(value=2.0)
    assert _expr("true") == Bool(value=True) and _expr("false") == Bool(value=False)
    assert _expr("null") == NoneLit()
    assert _expr('"a\\"b\\\\c\\n"') == Str(value='a"b\\c\n')
    assert _expr("'it\\'s'") == Str(value="it's")
    assert _expr('"a#b"') == Str(value="a#b")  # `#` inside a string is no comment
    assert _expr('"C:\\data"') == Str(value="C:\\data")  # unknown escape kept as written
    assert _expr("[]") == ListExpr()
    assert _expr("f()") == Call(func="f")
    assert _expr("truth") == Name(id="truth")  # keywords only match whole words


# --------------------------------------------------------------------------- precedence


def _b(op, left, right):
    return BinOp(op=op, left=left, right=right)


def _n(v):
    return Num(value=v) if not isinstance(v, str) else Name(id=v)


@pytest.mark.parametrize(
    "text, tree",
    [
        ("1 + 2 * 3", _b("+", _n(1), _b("*", _n(2), _n(3)))),
        ("1 - 2 - 3", _b("-", _b("-", _n(1), _n(2)), _n(3))),
        ("a / b // c % d", _b("%", _b("//", _b("/", _n("a"), _n("b")), _n("c")), _n("d"))),
        ("a @ b + c", _b("+", _b("@", _n("a"), _n("b")), _n("c"))),
        ("2 ** 3 ** 2", _b("**", _n(2), _b("**", _n(3), _n(2)))),
        ("-2 ** 2", UnaryOp(op="-", operand=_b("**", _n(2), _n(2)))),
        ("2 ** -1", _b("**", _n(2), UnaryOp(op="-", operand=_n(1)))),
        ("-a * b", _b("*", UnaryOp(op="-", operand=_n("a")), _n("b"))),
        ("(1 + 2) * 3", _b("*", _b("+", _n(1), _n(2)), _n(3))),
        ("a * b ** c", _b("*", _n("a"), _b("**", _n("b"), _n("c")))),
        ("--x", UnaryOp(op="-", operand=UnaryOp(op="-", operand=_n("x")))),
        ("+x - 1", _b("-", UnaryOp(op="+", operand=_n("x")), _n(1))),
    ],
)
def test_operator_precedence(text, tree):
    assert _expr(text) == tree


def test_nested_calls_and_keywords():
    e = _expr("gelu(Linear(x, out=64)) + Linear(h, out=hidden * 2)")
    assert e.op == "+" and e.left.func == "gelu" and e.left.args[0].func == "Linear"
    assert e.right.kwarg("out") == _b("*", _n("hidden"), _n(2))


# --------------------------------------------------------------------------- syntax errors

ERRORS = [
    # (message starts with, bad source, line, col)
    ("missing `)`", "model M {\n    h = f(x\n    y = 2\n}", 2, 12),
    ("missing `]`", "model M {\n    input x: [N, F\n    h = 1\n}", 2, 19),
    ("missing `=` in assignment", "model M {\n    h elu(h)\n}", 2, 7),
    ("missing `=` in assignment", "param a = 1\nparam b\n", 2, 8),
    ("expected a shape like [N, F] after `input x:`", "model M {\n    input x: long\n}", 2, 14),
    ("unknown dtype `double`", "model M {\n    input x: [N] double\n}", 2, 18),
    ("unterminated string", 'use "layers.dsl\n', 1, 5),
    ("`...` must lead a shape", "model M {\n    input x: [N, ...]\n}", 2, 18),
    ("statement must start on a new line", "model M {\n    a = f(x) b = g(a)\n}", 2, 14),
    ("statement must start on a new line", "param a = 1 param b = 2", 1, 13),
    ("missing `,` between items", "param a = f(x y)", 1, 15),
    ("missing `,` between items", "model M {\n    h = GAT(x, e, out=8 heads=2)\n}", 2, 25),
    ("missing expression", "param a = 1 +\n", 1, 14),
    ("missing `{`", "model M\n    input x: [N]\n}", 1, 8),
    ("missing `}`", "model M {\n    input x: [N]\n", 2, 17),
    ("not allowed at the top level", "h = f(x)\n", 1, 1),
    ("expected a statement", "model M {\n    3\n}", 2, 5),
    ("expected `key = value` in the train section", "train {\n    1\n}", 2, 5),
    ("expected a name", "model M {\n    input : [N]\n}", 2, 11),
    ("invalid parameter declaration", "model M(3) {\n}", 1, 9),
    ("`use` needs a quoted path", "use layers\n", 1, 5),
    ("invalid assignment target", "model M {\n    f(x) = 1\n}", 2, 6),
    ("unmatched closing bracket", "param a = f(x))", 1, 15),
    ("unexpected character `$`", "param a = $x", 1, 11),
    ("a file holds at most one `model`", "model A {\n}\nmodel B {\n}", 3, 1),
    ("a file holds at most one `train` section", "train {\n}\ntrain {\n}", 3, 1),
    ("positional argument after keyword argument", "param a = f(k=1, x)", 1, 18),
    ("keyword argument `k` given twice", "param a = f(k=1, k=2)", 1, 18),
    ("unknown parameter type `integer`", "model M(a: integer) {\n}", 1, 12),
    ("invalid shape dimension", 'model M {\n    input x: [N, "F"]\n}', 2, 18),
    ("`param` is only allowed at the top level", "model M {\n    param a = 1\n}", 2, 5),
    ("missing `}`", "block B {\n    h = 1\n\nmodel M {\n}\n", 4, 1),
    ("number too long", "param a = " + "1" * 5000, 1, 11),
]


@pytest.mark.parametrize("message, text, line, col", ERRORS, ids=[e[0] for e in ERRORS])
def test_syntax_error_labels(message, text, line, col):
    d = _error(text)
    assert d.code == ("E0102" if message == "number too long" else "E0101")
    assert d.message.startswith(message), (d.message, d.label)
    assert (d.span.file, d.span.line, d.span.col) == ("bad.dsl", line, col)
    assert d.label and "RPAR" not in d.label and "NAME" not in d.label  # words, not Lark names


def test_at_least_ten_distinct_labels():
    assert len({m for m, *_ in ERRORS}) >= 10


def test_error_renders_caret_under_the_token():
    with pytest.raises(SpecError) as info:
        parse_text("model M {\n    input x: [N] double\n}", "bad.dsl")
    text = str(info.value)
    assert "error[E0101]: unknown dtype `double`" in text
    assert "bad.dsl:2:18" in text
    assert "    input x: [N] double" in text
    caret_line = next(line for line in text.splitlines() if "^" in line)
    assert caret_line.index("^") == text.splitlines()[3].index("double")
    assert "^^^^^^ expected float, long, int or bool" in caret_line


def test_unclosed_bracket_note_points_at_the_opener():
    d = _error("model M {\n    h = f(g(x)\n}")
    assert d.message == "missing `)`"
    assert d.notes and (d.notes[0].span.line, d.notes[0].span.col) == (2, 10)


def test_unknown_tokens_get_words_in_generic_labels():
    d = _error("model M {\n    output y: [N] long long\n}")
    assert "LONG" not in d.label and "_NL" not in d.label


# --------------------------------------------------------------------------- limits


def test_deep_nesting_is_e0102_quickly():
    deep = "param a = " + "(" * 10_000 + "1" + ")" * 10_000
    t0 = time.perf_counter()
    d = _error(deep)
    elapsed = time.perf_counter() - t0
    assert d.code == "E0102" and str(MAX_DEPTH) in d.message
    assert (d.span.line, d.span.col) == (1, 11 + MAX_DEPTH)
    assert elapsed < 5  # generous: it is a linear scan, far below this


def test_nesting_counts_all_bracket_kinds_but_not_strings_or_comments():
    ok = "param a = " + "[" * 30 + "(" * 30 + "1" + ")" * 30 + "]" * 30
    parse_text(ok)
    parse_text('param a = "' + "(" * 100 + '"  # ' + "[" * 100)
    d = _error("model M {\n    h = " + "[" * 70 + "\n}")
    assert d.code == "E0102" and d.span.line == 2


def test_deep_operator_chains_are_e0102_not_recursion_error():
    for text in ("param a = " + "-" * 5000 + "1", "param a = " + " + ".join(["1"] * 3000),
                 "param a = " + " ** ".join(["2"] * 3000)):
        d = _error(text)
        assert d.code == "E0102"


def test_long_line_and_long_file():
    d = _error("param a = 1\nparam b = " + "1" * 10_001 + "\n")
    assert d.code == "E0102" and d.span.line == 2 and "10,000" in d.message
    d = _error("#" * 9000 + "\n" * 5_000_001)
    assert d.code == "E0102" and "5,000,000" in d.message


# --------------------------------------------------------------------------- parse_expr / parse_dim


def test_parse_expr_offsets_point_into_the_original_file():
    e = parse_expr("GATv2(h, edge_index, out=hidden) + Linear(h, out=hidden)", "m.yaml", 7, 12)
    assert isinstance(e, BinOp) and e.op == "+"
    assert e.span.file == "m.yaml"
    assert _at(e.span) == (7, 12, 7, 68)
    assert _at(e.left.func_span) == (7, 12, 7, 17)
    assert _at(e.right.args[0].span) == (7, 54, 7, 55)
    assert _at(e.left.kwargs[0].span) == (7, 33, 7, 43)


def test_parse_expr_errors_are_offset_too():
    with pytest.raises(SpecError) as info:
        parse_expr("f(x y)", "m.yaml", 3, 10)
    d = info.value.diagnostics[0]
    assert (d.code, d.span.file, d.span.line, d.span.col) == ("E0101", "m.yaml", 3, 14)
    with pytest.raises(SpecError):
        parse_expr("a = 1")
    with pytest.raises(SpecError):
        parse_expr("")


def test_parse_dim():
    assert isinstance(parse_dim("_"), Wildcard)
    assert isinstance(parse_dim("..."), Ellipsis_)
    assert strip_spans(parse_dim("B")) == Name(id="B")
    assert strip_spans(parse_dim("64")) == Num(value=64)
    assert strip_spans(parse_dim("hidden*2")) == _b("*", _n("hidden"), _n(2))
    d = parse_dim("hidden*2", "m.yaml", 4, 20)
    assert _at(d.span) == (4, 20, 4, 28)
    with pytest.raises(SpecError):
        parse_dim("f(x)")
    with pytest.raises(SpecError):
        parse_dim("N, F")


# --------------------------------------------------------------------------- printer

ROUND_TRIP = [
    DESIGN_EXAMPLE,
    "model M {\n    input x: [B, 64]\n    output x\n}\n",
    """# header comment
use "a.dsl"  # trailing use
param b = 2 ** -1 ** 2
# before model
model M(
    a: int,   # inside params
    b: float = 1.0
) {   # on header
    input x: [..., a * (b + 1)]   ; output y  # after y
    # lonely

    y = f(x,  # inside call
          k=-(2 ** 2)) - (a - (b - c)) - -x
    repeat 3 as i { h = 1 }  # after repeat
    # end of body
}  # after close
param a = (1 + 2) * 3 // (4 % 5) @ x   # a
train { loss = cross_entropy(logits, y); note = 'it\\'s "q"' }
# at end
""",
    'block B(s: str = "a\\\\b\\n") {\n    output q: [] bool\n}\nmodel M {}\n',
    "param x = [1, [2.5, -3], null, true, \"s\"]\nparam y = -(-x)\nparam z = (-2) ** 2\n",
]


@pytest.mark.parametrize("source", ROUND_TRIP)
def test_print_parse_round_trip(source):
    spec = parse_text(source)
    text = to_text(spec)
    again = parse_text(text)
    assert strip_spans(again) == strip_spans(spec)
    assert to_text(again) == text  # idempotent
    assert sorted(c.text for c in again.comments) == sorted(c.text for c in spec.comments)


def test_canonical_layout():
    text = to_text(parse_text(
        "train{epochs=1;optimizer=adam(lr=0.01)}\nmodel M(a:int=1){input x:[N,F] long\n"
        "z,w=f(x,k=a*(2+3))\nrepeat 2 as i{x=g(x)}\noutput z:[N,a]}\nparam h=16\nuse 'x.dsl'\n"
        "block B{output y}\n"
    ))
    assert text == (
        "param h = 16\n\n"
        'use "x.dsl"\n\n'
        "block B {\n    output y\n}\n\n"
        "model M(a: int = 1) {\n"
        "    input x: [N, F] long\n"
        "    z, w = f(x, k=a * (2 + 3))\n"
        "    repeat 2 as i {\n        x = g(x)\n    }\n"
        "    output z: [N, a]\n"
        "}\n\n"
        "train {\n    epochs    = 1\n    optimizer = adam(lr=0.01)\n}\n"
    )


def test_design_example_prints_its_comments_in_place():
    text = to_text(parse_text(DESIGN_EXAMPLE))
    lines = text.splitlines()
    assert lines[0].startswith("# specs/protogat.dsl")
    assert "    h = GAT(x, edge_index, out=hidden, heads=heads)  # [N, hidden*heads]" in lines
    assert "    m = HopfieldLayer(h, patterns=16)  # learned memory lookup" in lines
    assert "    optimizer = adam(lr=0.01, weight_decay=5e-4)" in lines  # spelled as written
    assert lines[lines.index("    input edge_index: [2, E] long") + 1] == ""  # blank line kept


def test_expr_and_dim_to_text():
    assert expr_to_text(parse_expr("a*(b+c)")) == "a * (b + c)"
    assert expr_to_text(parse_expr("(a*b)+c")) == "a * b + c"
    assert expr_to_text(parse_expr("a-(b-c)")) == "a - (b - c)"
    assert expr_to_text(parse_expr("(a**b)**c")) == "(a ** b) ** c"
    assert expr_to_text(parse_expr("a**(b**c)")) == "a ** b ** c"
    assert expr_to_text(parse_expr("(-a)**b")) == "(-a) ** b"
    assert expr_to_text(Num(value=-3)) == "-3"
    assert expr_to_text(_b("**", Num(value=-2), Num(value=2))) == "(-2) ** 2"
    assert expr_to_text(Num(value=float("inf"))) == "1e999"
    assert dim_to_text(Wildcard()) == "_" and dim_to_text(Ellipsis_()) == "..."
    assert dim_to_text(parse_dim("hidden*heads")) == "hidden * heads"
    assert quote('a"b\\c\n\t') == '"a\\"b\\\\c\\n\\t"'


# --------------------------------------------------------------------------- properties

_names = st.sampled_from(["x", "h", "hidden", "N", "Linear", "f"])
_leaves = st.one_of(
    st.integers(min_value=0, max_value=10**6).map(lambda v: Num(value=v)),
    st.floats(min_value=0, allow_nan=False, allow_infinity=False).map(lambda v: Num(value=v)),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8).map(
        lambda v: Str(value=v)
    ),
    st.booleans().map(lambda v: Bool(value=v)),
    st.just(NoneLit()),
    _names.map(lambda v: Name(id=v)),
)


def _extend(children):
    ops = st.sampled_from(["+", "-", "*", "/", "//", "%", "**", "@"])
    return st.one_of(
        st.builds(lambda o, a, b: BinOp(op=o, left=a, right=b), ops, children, children),
        st.builds(lambda o, a: UnaryOp(op=o, operand=a), st.sampled_from(["-", "+"]), children),
        st.builds(lambda f, a: Call(func=f, args=tuple(a)), _names, st.lists(children, max_size=3)),
        st.lists(children, max_size=3).map(lambda items: ListExpr(items=tuple(items))),
    )


_exprs = st.recursive(_leaves, _extend, max_leaves=12)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_exprs)
def test_expr_print_parse_round_trip(expr):
    assert strip_spans(parse_expr(expr_to_text(expr))) == expr


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80))
def test_random_junk_only_raises_spec_error(text):
    try:
        spec = parse_text(text)
    except SpecError as err:
        assert err.diagnostics and err.diagnostics[0].code in ("E0101", "E0102")
    else:
        assert strip_spans(parse_text(to_text(spec))) == strip_spans(spec)


_SOURCE_PIECES = [
    "model M {", "}", "input x: [N, F]", "output y", "h = f(x)", "(", ")", "[", "]", "\n", ";",
    "param a = 1", "# c", "repeat 2 as i {", "train {", "epochs = 3", ",", "=", "...", '"s', "long",
    "a, b = g(h, k=2)", "+", "**", "-",
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(_SOURCE_PIECES), max_size=25).map(" ".join))
def test_random_token_soup_only_raises_spec_error(text):
    try:
        spec = parse_text(text)
    except SpecError as err:
        d = err.diagnostics[0]
        assert d.code in ("E0101", "E0102") and d.span.line >= 1 and d.label
    else:
        assert strip_spans(parse_text(to_text(spec))) == strip_spans(spec)


@pytest.mark.parametrize(
    ("value", "spelling"),
    [(5e-4, "5e-4"), (1e-5, "1e-5"), (0.003, "0.003"), (0.01, "0.01"), (100.0, "100.0"), (1e20, "1e20"),
     (1.5e-7, "1.5e-7"), (0.00012345, "0.00012345"), (-0.0005, "-5e-4")],
)
def test_floats_print_in_the_spelling_researchers_use(value: float, spelling: str) -> None:
    printed = to_text(parse_text(f"param p = {value!r}\n"))
    assert printed == f"param p = {spelling}\n" and float(spelling) == value
