"""Each new way to be wrong in the language of DESIGN §9 has a code and a span, in the
text form and in the YAML form (the same spec converted), and the bugs found while
probing it stay fixed."""

from __future__ import annotations

import pytest
import torch

import dsl
from dsl.language.diagnostics import Diagnostic

TRAIN = """
train {
    data = digits(batch=32)
    loss = LOSS
}
"""
CLASSIFIER = """model M {
    input x: [B, 64]
    logits = Linear(x, out=10)
    output logits
}
"""

# (id, spec text, code, the text the diagnostic's line holds, words in message or label)
CASES = [
    ("slice-past-fixed-dim", """model M {
    input x: [B, 4]
    p = Parameter([8, 4])
    y = x + p[:10]
    output y
}
""", "E0307", "p[:10]", "slice bound 10 is out of range for a dim of size 8"),
    ("index-past-fixed-dim", """model M {
    input x: [B, 4]
    y = x[:, 4]
    output y
}
""", "E0307", "x[:, 4]", "index 4 is out of range"),
    ("too-many-indices", """model M {
    input x: [B, 4]
    y = x[0, 1, 2]
    output y
}
""", "E0303", "x[0, 1, 2]", "3 indices for a tensor of rank 2"),
    ("tie-mismatched-sizes", """model M {
    input t: [B, T] long
    emb = Embedding(num=10, dim=6)
    y = Linear(emb(t), out=12, tie=emb)
    output y
}
""", "E0301", "tie=emb", "shares a weight of shape [10, 6]"),
    ("tie-not-a-weight", """model M {
    input t: [B, 6]
    d = Dropout(p=0.1)
    y = Linear(d(t), out=6, tie=d)
    output y
}
""", "E0401", "tie=d", "only an Embedding or a Linear"),
    ("conv-wrong-rank", """model M {
    input x: [B, 3, 8]
    y = Conv2d(x, out=4, kernel=3)
    output y
}
""", "E0303", "Conv2d(x", "[B, C, H, W]"),
    ("conv-too-small", """model M {
    input x: [B, 3, 2, 2]
    y = Conv2d(x, out=4, kernel=3)
    output y
}
""", "E0301", "Conv2d(x", "kernel"),
    ("mask-wrong-dtype", """model M {
    input x: [B, T, 8]
    input pad: [B, T] long
    y = MultiheadAttention(x, heads=2, key_padding_mask=pad)
    output y
}
""", "E0302", "key_padding_mask=pad", "bool"),
    ("mask-wrong-shape", """model M {
    input x: [B, 5, 8]
    input m: [5, 3] bool
    y = MultiheadAttention(x, heads=2, attn_mask=m)
    output y
}
""", "E0301", "attn_mask=m", "expected [5, 5]"),
    ("bad-init", """model M {
    input x: [B, 4]
    p = Parameter([4], init="gaussian")
    y = x + p
    output y
}
""", "E0401", 'init="gaussian"', "init"),
    ("constant-init-without-value", """model M {
    input x: [B, 4]
    p = Parameter([4], init="constant")
    y = x + p
    output y
}
""", "E0401", "Parameter(", "value="),
    ("causal-different-lengths", """model M {
    input q: [B, T, 8]
    input k: [B, S, 8]
    y = MultiheadAttention(q, k=k, heads=2, causal=true)
    output y
}
""", "E0301", "causal=true", "same length"),
    ("hopfield-causal-different-lengths", """model M {
    input q: [B, T, 8]
    input k: [B, S, 8]
    y = Hopfield(q, k, causal=true)
    output y
}
""", "E0301", "causal=true", "same length"),
    ("reshape-to-zero", """model M {
    input x: [B, 64]
    y = reshape(x, shape=[0, 8, 8])
    output y
}
""", "E0401", "shape=[0, 8, 8]", "a size of 0 makes an empty tensor"),
    ("reshape-divides-some-batches", """model M {
    input x: [B, 6]
    y = reshape(x, [4, -1])
    output y
}
""", "E0305", "reshape(x, [4, -1])", "do not split into blocks of 4"),
    ("reshape-changes-the-count-for-every-batch", """model M {
    input x: [B, 64]
    y = reshape(x, [B, 65])
    output y
}
""", "E0305", "reshape(x, [B, 65])", "64*B elements cannot become 65*B"),
    ("reshape-heads-that-lose-features", """param d = 30
param heads = 4
model M {
    input x: [B, T, d]
    y = reshape(x, [B, T, heads, d // heads])
    output y
}
""", "E0305", "reshape(x, [B, T, heads, d // heads])", "30*B*T elements cannot become 28*B*T"),
    ("metric-of-one-class", """model M {
    input x: [B, 64]
    score = Linear(x, out=1)
    logits = Linear(x, out=10)
    output logits
    output score
}
""" + TRAIN.replace("LOSS", "cross_entropy(logits, y)\n    metrics = [accuracy(score, y)]"), "E0401",
     "accuracy(score, y)", "one class"),
    ("chunk-that-does-not-split-is-one-error", """model M {
    input x: [B, 33]
    a, g = chunk(x, 2, dim=-1)
    output a
}
""", "E0305", "chunk(x, 2, dim=-1)", "33 does not split"),
    ("pool-window-past-the-input", """model M {
    input x: [B, 1, 4, 4]
    y = max_pool2d(x, 5)
    output y
}
""", "E0301", "max_pool2d(x, 5)", "the max_pool2d window is larger than the input"),
    ("a-bound-says-what-was-given", """model M {
    input x: [B, 64]
    y = Linear(x, out=0)
    output y
}
""", "E0401", "out=0", "greater than 0, got 0"),
    ("slice-past-a-length-the-data-fixes", """model LM {
    input tokens: [B, T] long
    pos = Parameter([64, 32], std=0.02)
    h = Embedding(tokens, num=96, dim=32) + pos[:T]
    logits = Linear(h, out=96)
    output logits
}
train {
    data = chars(context=128, batch=16, chars=5000)
    loss = cross_entropy(logits, next)
}
""", "E0307", "pos[:T]", "chars() makes T = 128"),
    ("mask-that-would-merge-batch-and-length", """model M {
    input tokens: [B, T] long
    h = Embedding(tokens, num=96, dim=32)
    pad = tokens == 0
    y = MultiheadAttention(h, heads=4, attn_mask=pad)
    output y
}
""", "E0301", "attn_mask=pad", "expected [T, T], found [B, T] bool"),
    ("padding-mask-of-the-queries-not-the-keys", """model M {
    input q: [B, T, 32]
    input kv: [B, S, 32]
    input kpm: [B, T] bool
    y = MultiheadAttention(q, kv, kv, heads=4, key_padding_mask=kpm)
    output y
}
""", "E0301", "key_padding_mask=kpm", "expected [B, S], found [B, T] bool"),
    ("tie-to-a-tensor", """model M {
    input tokens: [B, T] long
    h = Embedding(tokens, num=96, dim=32)
    logits = Linear(h, out=96, tie=h)
    output logits
}
""", "E0207", "tie=h", "`tie` names a block instance, but `h` is a tensor"),
    ("metric-on-one-score-per-row", """model M {
    input x: [B, 64]
    logits = Linear(x, out=10)
    s = sum(logits, dim=-1)
    output logits
    output s
}
""" + TRAIN.replace("LOSS", "cross_entropy(logits, y)\n    metrics = [accuracy(s, y)]"), "E0303",
     "accuracy(s, y)", "reads scores with the classes last"),
    ("loss-not-scalar", CLASSIFIER + TRAIN.replace("LOSS", "logits"), "E0501", "loss = logits",
     "must be a float scalar"),
    ("loss-is-a-metric", CLASSIFIER + TRAIN.replace("LOSS", "accuracy(logits, y)"), "E0501", "accuracy(",
     "is a metric, not a loss"),
    ("loss-not-differentiable", CLASSIFIER + TRAIN.replace("LOSS", "mse(x, x * 2.0)"), "E0501", "mse(x",
     "does not depend differentiably on a model output"),
    ("prototype-cost-per-class-disagrees", """model M {
    input x: [B, 64]
    logits, dist = PrototypeHead(x, classes=10, per_class=2)
    output logits
}
""" + TRAIN.replace("LOSS", "cross_entropy(logits, y) + cluster_cost(dist, y, per_class=3)"), "E0501",
     "per_class=3", "disagrees with the PrototypeHead"),
    ("prototype-cost-without-head", """model M {
    input x: [B, 64]
    logits, dist = PrototypeHead(x, classes=10, per_class=2)
    output logits
}
""" + TRAIN.replace("LOSS", "cross_entropy(logits, y) + cluster_cost(dist * 2.0, y)"), "E0501",
     "cluster_cost(", "cannot tell which prototype belongs to which class"),
    ("list-is-not-a-tensor", """block L(d: int) {
    input x: [B, d]
    y = Linear(x, out=d)
    output y
}

model M {
    input x: [B, 8]
    h = cat([x, x], dim=1)
    h = L(h, d=16)
    output h
}
""", "E0206", "cat([x, x]", "cat(a, b, dim=1), not cat([a, b])"),
    ("operator-on-a-block-value", """model M {
    input x: [B, 8]
    m = MLP(hidden=4, out=8)
    y = x + m
    output y
}
""", "E0206", "x + m", "block value"),
    ("gat-edge-dim-from-an-unbound-size", """model M {
    input x: [N, 8]
    input edge_index: [2, E] long
    input edge_attr: [E, D]
    y = GAT(x, edge_index, out=4, edge_dim=D, edge_attr=edge_attr)
    output y
}
""", "E0601", "edge_dim=D", "unknown when the model is built"),
]


def only(diags: list[Diagnostic], code: str) -> Diagnostic:
    assert [d.code for d in diags] == [code], [(d.code, d.message) for d in diags]
    return diags[0]


def line_of(text: str, d: Diagnostic) -> str:
    assert d.span.line > 0, d
    return text.splitlines()[d.span.line - 1]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_text_diagnostic(case: tuple) -> None:
    _id, text, code, marker, words = case
    d = only(dsl.check(dsl.loads(text, file="spec.dsl")), code)
    assert marker in line_of(text, d)
    assert words in f"{d.message} {d.label} {d.help or ''}", d


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_yaml_diagnostic(case: tuple) -> None:
    _id, text, code, marker, words = case
    yaml_text = dsl.loads(text, file="spec.dsl").to_yaml()
    d = only(dsl.check(dsl.loads(yaml_text, format="yaml", file="spec.yaml")), code)
    assert d.span.file == "spec.yaml"
    assert marker.split("(")[0].split("=")[0].strip() in line_of(yaml_text, d), (line_of(yaml_text, d), marker)
    assert words in f"{d.message} {d.label} {d.help or ''}", d


def test_slicing_parses_as_slicing() -> None:
    """Before subscripts, `x[:, 0]` read as "statement must start on a new line"."""
    text = "model M {\n    input x: [B, T, 4]\n    y = x[:, 0]\n    output y\n}\n"
    assert dsl.check(dsl.loads(text)) == []


def test_runtime_guard_refuses_a_slice_bound_past_the_rows() -> None:
    text = """model M {
    input tokens: [B, T] long
    pos = Parameter([8, 4])
    y = Embedding(tokens, num=5, dim=4) + pos[:T]
    output y
}
"""
    model = dsl.compile(dsl.loads(text))
    assert model(tokens=torch.zeros(2, 8, dtype=torch.long)).shape == (2, 8, 4)
    with pytest.raises(dsl.InputError, match="pos\\[:T\\]"):
        model(tokens=torch.zeros(2, 9, dtype=torch.long))


def test_runtime_guard_refuses_a_mask_of_the_wrong_shape() -> None:
    text = """model M {
    input x: [B, T, 8]
    input pad: [B, T] bool
    y = MultiheadAttention(x, heads=2, key_padding_mask=pad)
    output y
}
"""
    model = dsl.compile(dsl.loads(text))
    x = torch.randn(2, 5, 8)
    assert model(x=x, pad=torch.zeros(2, 5, dtype=torch.bool)).shape == (2, 5, 8)
    with pytest.raises(dsl.InputError, match="pad"):
        model(x=x, pad=torch.zeros(2, 6, dtype=torch.bool))


def test_moe_expert_with_several_outputs_contributes_its_first() -> None:
    """An MoE whose expert is a PrototypeHead or an MoE used to fail with a TypeError at the first step."""
    text = """model M {
    input x: [B, 8]
    a, b1 = MoE(x, experts=3, k=1, expert=PrototypeHead(classes=8, per_class=2))
    c, b2 = MoE(x, experts=2, k=1, expert=MoE(experts=2, k=1))
    y = a + c
    output y
}
"""
    model = dsl.compile(dsl.loads(text))
    torch.manual_seed(0)
    assert model(x=torch.randn(6, 8)).shape == (6, 8)


def test_nested_balance_losses_are_added_with_their_coefficients() -> None:
    """The balance of MoEs inside a user block expert used to be dropped silently."""
    text = """block Inner(d: int) {
    input x: [N, d]
    y, balance = MoE(x, experts=2, k=1, balance=0.5, noisy=false)
    output y
}

model M {
    input x: [B, 8]
    y, outer = MoE(x, experts=2, k=2, balance=0.0, noisy=false, expert=Inner(d=8))
    output y
}
"""
    model = dsl.compile(dsl.loads(text), with_aux=True).eval()
    torch.manual_seed(0)
    for e in model.y.experts:
        for p in e.parameters():
            torch.nn.init.normal_(p)
    x = torch.randn(6, 8)
    out = model(x=x)
    # k = E: every expert sees every token, in order; the outer gate's own balance is 0
    inner = sum(expert(x)[1] for expert in model.y.experts)
    torch.testing.assert_close(out["aux:y.balance"], inner)
    assert float(inner) > 0
