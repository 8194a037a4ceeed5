"""The Python builder dsl.Graph: same IR as the text form, naming rules,
spans in the caller's file, identifier checks."""

from __future__ import annotations

import inspect

import pytest

from dsl.language.builder import Graph
from dsl.language.errors import SpecError
from dsl.language.ir import Assign, Call, Name, Repeat, strip_spans
from dsl.language.printer import to_text
from dsl.language.text import parse_text

HERE = __file__


def same(spec, text: str) -> None:
    expected = strip_spans(parse_text(text))
    got = strip_spans(spec)
    assert got == expected, f"\n{to_text(got)}\n!=\n{to_text(expected)}"
    assert strip_spans(parse_text(to_text(spec))) == expected  # printable as text


def line() -> int:
    """The line number of the caller (where the statement under test sits)."""
    return inspect.currentframe().f_back.f_lineno  # type: ignore[union-attr]


def test_design_example_gives_the_text_spec() -> None:
    g = Graph("Classifier", params={"hidden": 64})
    x = g.input("x", ["B", 64])
    h = g.relu(g.Linear(x, out=g.param("hidden")))
    g.output("logits", g.Linear(h, out=10), shape=["B", 10])
    spec = g.build()
    assert spec.format == "python"
    same(
        spec,
        """\
param hidden = 64
model Classifier {
    input x: [B, 64]
    logits = Linear(relu(Linear(x, out=hidden)), out=10)
    output logits: [B, 10]
}
""",
    )


def test_spans_point_at_the_callers_lines() -> None:
    g = Graph("M"); first = line()  # noqa: E702
    x = g.input("x", ["B", 4]); input_line = line()  # noqa: E702
    h = g.Linear(x, out=4); call_line = line()  # noqa: E702
    g.output("y", g.relu(h)); out_line = line()  # noqa: E702
    spec = g.build()
    assert spec.file == HERE
    assert spec.model.span.line == first and spec.model.span.file == HERE
    inp, assign, out = spec.model.body
    assert (inp.span.file, inp.span.line) == (HERE, input_line)
    assert assign.span.line == out_line  # `y = relu(...)`: the relu call
    inner = assign.value.args[0]
    assert isinstance(inner, Call) and inner.func == "Linear" and inner.span.line == call_line
    src = open(HERE).read().splitlines()[call_line - 1]
    assert src[inner.span.col - 1 :].startswith("g.Linear(")
    assert out.span.line == out_line


def test_repeat_let_and_multi_output_calls() -> None:
    g = Graph("ProtoGAT", params={"hidden": 16}, args={"classes": 4, "heads": 4})
    hidden = g.param("hidden")
    x = g.input("x", ["N", "F"])
    ei = g.input("edge_index", [2, "E"], dtype="long")
    h = g.let("h", g.GAT(x, ei, out=hidden, heads=g.param("heads")))
    h = g.let("h", g.elu(h))
    with g.repeat(2, var="i"):
        h = g.let("h", g.GATv2(h, ei, out=hidden) + g.Linear(h, out=hidden))
        h = g.let("h", g.elu(h))
    m = g.let("m", g.HopfieldLayer(h, patterns=16))
    z, balance = g.let(("z", "balance"), g.MoE(h + m, experts=4, k=2, expert=g.MLP(hidden=hidden * 2, out=hidden)))
    logits, dist = g.let(("logits", "dist"), g.PrototypeHead(z, classes=g.param("classes"), per_class=2))
    g.output("logits", logits, shape=["N", g.param("classes")])
    g.train(data="karate()", loss="cross_entropy(logits, y, mask=train_mask)",
            metrics=["accuracy(logits, y, mask=test_mask)"], epochs=200, seed=0)  # fmt: skip
    same(
        g.build(),
        """\
param hidden = 16
model ProtoGAT(classes: int = 4, heads: int = 4) {
    input x: [N, F]
    input edge_index: [2, E] long
    h = GAT(x, edge_index, out=hidden, heads=heads)
    h = elu(h)
    repeat 2 as i {
        h = GATv2(h, edge_index, out=hidden) + Linear(h, out=hidden)
        h = elu(h)
    }
    m = HopfieldLayer(h, patterns=16)
    z, balance = MoE(h + m, experts=4, k=2, expert=MLP(hidden=hidden * 2, out=hidden))
    logits, dist = PrototypeHead(z, classes=classes, per_class=2)
    output logits: [N, classes]
}
train {
    data = karate()
    loss = cross_entropy(logits, y, mask=train_mask)
    metrics = [accuracy(logits, y, mask=test_mask)]
    epochs = 200
    seed = 0
}
""",
    )


def test_shared_block_value_and_output_naming() -> None:
    g = Graph("Siamese", args={"width": 32})
    a = g.input("a", ["B", "F"])
    b = g.input("b", ["B", "F"])
    enc = g.let("enc", g.MLP(hidden=64, out=g.param("width")))
    za = g.let("za", enc(a))
    zb = g.let("zb", enc(b))
    g.output("score", g.sum(za * zb, dim=-1), shape=["B"])
    g.output("za", za)
    same(
        g.build(),
        """\
model Siamese(width: int = 32) {
    input a: [B, F]
    input b: [B, F]
    enc = MLP(hidden=64, out=width)
    za = enc(a)
    zb = enc(b)
    score = sum(za * zb, dim=-1)
    output score: [B]
    output za
}
""",
    )


def test_automatic_names_for_shared_values() -> None:
    g = Graph("M")
    x = g.input("x", ["B", 4])
    g.let("linear_1", g.relu(x))  # a user name the automatic ones must avoid
    h = g.Linear(x, out=4)  # used twice: needs a name
    enc = g.MLP(hidden=8, out=4)  # called twice: one shared instance
    y, bal = g.MoE(h + h, experts=2)  # unpacked from the registry's outputs
    g.output("y", enc(y) + enc(h))
    g.output("bal", bal)
    same(
        g.build(),
        """\
model M {
    input x: [B, 4]
    linear_1 = relu(x)
    linear_2 = Linear(x, out=4)
    mlp_1 = MLP(hidden=8, out=4)
    moe_1, moe_1_balance = MoE(linear_2 + linear_2, experts=2)
    y = mlp_1(moe_1) + mlp_1(linear_2)
    bal = moe_1_balance
    output y
    output bal
}
""",
    )


def test_values_used_across_repeat_bodies_become_statements() -> None:
    g = Graph("M")
    x = g.input("x", ["B", 4])
    proj = g.Linear(x, out=4)  # made outside, used inside: one instance, not one per copy
    h = g.let("h", x)
    with g.repeat(3) as i:
        assert i is None
        inner = g.tanh(h)  # made inside, used after the loop
        h = g.let("h", h + proj)
    g.output("y", h * inner)
    same(
        g.build(),
        """\
model M {
    input x: [B, 4]
    linear_1 = Linear(x, out=4)
    h = x
    repeat 3 {
        tanh_1 = tanh(h)
        h = h + linear_1
    }
    y = h * tanh_1
    output y
}
""",
    )


def test_inlining_never_reads_a_rebound_name() -> None:
    g = Graph("M")
    h = g.let("h", g.input("x", ["B", 4]) * 2)
    t = g.elu(h)  # reads h; used only after h is rebound below
    g.let("h", g.relu(h))
    g.output("y", g.Linear(t, out=2))
    same(
        g.build(),
        "model M {\n input x: [B, 4]\n h = x * 2\n elu_1 = elu(h)\n h = relu(h)\n y = Linear(elu_1, out=2)\n output y\n}\n",
    )


def test_reading_a_rebound_name_directly_is_an_error() -> None:
    g = Graph("M")
    x = g.input("x", ["B", 4])
    first = g.let("h", g.Linear(x, out=4))
    g.let("h", g.relu(first))
    g.output("y", first); bad = line()  # noqa: E702
    with pytest.raises(SpecError) as info:
        g.build()
    (d,) = info.value.diagnostics
    assert d.code == "E0211" and (d.span.file, d.span.line) == (HERE, bad)


def test_constants_and_indexing() -> None:
    g = Graph("M", params={"hidden": 8, "scale": 0.5, "act": "gelu", "sizes": [1, 2]})
    hid = g.param("hidden")
    x = g.input("x", ["B", hid * 2], dtype="float")
    out = g.Gate(x, experts=hid // 2, noisy=False, name="gate", slope=-1.5)
    g.output("w", -out[0] + 1.0)
    g.output("b", out[1] ** 2)
    same(
        g.build(),
        """\
param hidden = 8
param scale = 0.5
param act = "gelu"
param sizes = [1, 2]
model M {
    input x: [B, hidden * 2] float
    gate_1, gate_1_balance = Gate(x, experts=hidden // 2, noisy=false, name="gate", slope=-1.5)
    w = -gate_1 + 1.0
    b = gate_1_balance ** 2
    output w
    output b
}
""",
    )


def test_shapes_accept_ellipsis_wildcard_and_text() -> None:
    g = Graph("M")
    x = g.input("x", [..., None, "_", "N*2"])
    g.output("y", x, shape=["...", 3])
    same(g.build(), "model M {\n input x: [..., _, _, N*2]\n y = x\n output y: [..., 3]\n}\n")


def test_invalid_identifiers_are_e0213_at_the_callers_line() -> None:
    g = Graph("M")
    bad = line() + 2
    with pytest.raises(SpecError) as info:
        g.input("bad name", ["B"])
    (d,) = info.value.diagnostics
    assert d.code == "E0213" and (d.span.file, d.span.line) == (HERE, bad)
    with pytest.raises(SpecError):
        g.let("input", g.input("x", ["B"]))
    with pytest.raises(SpecError):
        Graph("1model")
    with pytest.raises(SpecError):
        g.call("not-a-name", g.input("z", [1]))


def test_misuse_is_a_clear_python_error() -> None:
    g = Graph("M")
    x = g.input("x", ["B", 4])
    with pytest.raises(TypeError, match="not a block value"):
        x(x)
    with pytest.raises(TypeError, match="truth value"):
        bool(x)
    with pytest.raises(TypeError, match="how many outputs"):
        a, b = g.NotARegisteredBlock(x)
    with pytest.raises(SpecError):
        g.output("y", g.param("hidden"))
    with pytest.raises(SpecError):
        g.input("z", ["B"], dtype="double")


def test_build_is_repeatable_and_use_and_train_numbers() -> None:
    g = Graph("M", args={"k": int, "lr": 0.1})
    g.use("lib.dsl")
    g.output("y", g.Enc(g.input("x", ["B", 4]), k=g.param("k")))
    g.train(data="iris()", epochs=3, lr=-0.01, flag=True)
    g.train(epochs=5)  # a key given again replaces the first value
    first, second = g.build(), g.build()
    assert first == second
    same(
        first,
        'use "lib.dsl"\nmodel M(k: int, lr: float = 0.1) {\n input x: [B, 4]\n y = Enc(x, k=k)\n output y\n}\n'
        "train {\n data = iris()\n lr = -0.01\n flag = true\n epochs = 5\n}\n",
    )
    assigns = [s for s in first.model.body if isinstance(s, Assign)]
    assert isinstance(assigns[0].value, Call) and isinstance(assigns[0].value.args[0], Name)
    assert not any(isinstance(s, Repeat) for s in first.model.body)
