"""Gradual magnitude pruning (Zhu & Gupta 2017): schedule, static checks, masks, resume, eval."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from helpers import command_args, trainer_for
from torch import nn
from torch.nn.utils import prune

import dsl
from dsl.checking.train.prune import MagnitudeArgs, Prune
from dsl.cli.training import cmd_eval, cmd_train
from dsl.training.hooks.pruning import Pruning
from dsl.training.rundir import RunDir

SPEC = """
param hidden = 24
param sparsity = 0.75
model P(classes: int = 3) {
    input x: [B, F]
    h = relu(Linear(x, out=hidden))
    repeat 2 as i {
        h = relu(Linear(h, out=hidden))
    }
    logits = Linear(h, out=classes)
    output logits: [B, classes]
}
train {
    data      = iris(batch=16)
    loss      = cross_entropy(logits, y)
    metrics   = [accuracy(logits, y)]
    optimizer = adam(lr=0.02)
    prune     = PRUNE
    epochs    = 4
    seed      = 0
}
"""
DEFAULT = "magnitude(sparsity=sparsity, start=0, end=3, every=1)"


def ns(**kw: object) -> argparse.Namespace:
    return command_args("train", **kw)


def spec_path(write, prune_expr: str = DEFAULT) -> str:
    return write(SPEC.replace("PRUNE", prune_expr))


# --------------------------------------------------------------------------- schedule


def test_cubic_schedule_values() -> None:
    p = Prune(MagnitudeArgs(sparsity=0.9, start=0, end=4, every=1))
    expected = [0.0, 0.9 - 0.9 * 0.75**3, 0.9 - 0.9 * 0.5**3, 0.9 - 0.9 * 0.25**3, 0.9, 0.9, 0.9]
    assert [p.scheduled(t) for t in range(7)] == pytest.approx(expected, abs=1e-12)
    assert p.scheduled(1) == pytest.approx(0.5203125, abs=1e-12)


def test_schedule_with_initial_start_and_every() -> None:
    p = Prune(MagnitudeArgs(sparsity=0.8, initial=0.2, start=2, end=7, every=2))
    assert p.steps() == [2, 4, 6, 7]  # `end` is always a step
    at = [p.scheduled(t) for t in range(9)]
    s = lambda t: 0.8 + (0.2 - 0.8) * (1 - (t - 2) / 5) ** 3  # noqa: E731
    assert at == pytest.approx([0.0, 0.0, 0.2, 0.2, s(4), s(4), s(6), 0.8, 0.8], abs=1e-12)
    assert at[2] == pytest.approx(0.2)  # s_i at t0


# --------------------------------------------------------------------------- static checks


@pytest.mark.parametrize(
    "expr, code, text",
    [
        ("magnitude(sparsity=0.9, end=3, rate=2)", "E0402", "has no argument `rate`"),
        ("magnitude(sparsity=1.0, end=3)", "E0401", "invalid `sparsity`"),
        ("magnitude(sparsity=-0.1, end=3)", "E0401", "invalid `sparsity`"),
        ("magnitude(sparsity=0.5, start=3, end=3)", "E0401", "must end after it starts"),
        ("magnitude(sparsity=0.5, initial=0.6, end=3)", "E0401", "initial sparsity exceeds"),
        ("magnitude(sparsity=0.5)", "E0403", "needs argument `end`"),
        ("magnitude(sparsity=0.5, end=3, every=0)", "E0401", "invalid `every`"),
        ("magnitude(sparsity=0.5, end=3, layers=[hh])", "E0503", "unknown layer `hh`"),
        ("magnitude(sparsity=0.5, end=3, layers=[x])", "E0501", "is a model input"),
        ("magnitude(sparsity=0.5, end=3, layers=[1])", "E0501", "must name a layer"),
        ("magnitude(sparsity=0.5, end=3, scope=\"net\")", "E0401", "invalid `scope`"),
        ("magnitude(sparsity=nope, end=3)", "E0207", "must be a constant"),
        ("magnitud(sparsity=0.5, end=3)", "E0501", "unknown pruning method"),
        ("0.9", "E0501", "must be magnitude"),
    ],
)
def test_prune_diagnostics(write, expr, code, text) -> None:
    path = spec_path(write, expr)
    diags = dsl.check(path)
    assert [d.code for d in diags] == [code], [str(d) for d in diags]
    d = diags[0]
    assert text in d.message
    line = SPEC.replace("PRUNE", expr).splitlines().index(f"    prune     = {expr}") + 1
    assert d.span.line == line and d.span.col > 5


def test_unknown_layer_suggests_a_name(write) -> None:
    (d,) = dsl.check(spec_path(write, "magnitude(sparsity=0.5, end=3, layers=[logit])"))
    assert d.help and "logits" in d.help
    assert d.span.col == SPEC.replace("PRUNE", "magnitude(sparsity=0.5, end=3, layers=[logit])").splitlines()[
        d.span.line - 1].index("logit]") + 1


def test_cli_reports_prune_errors_without_traceback(write, tmp_path, capsys) -> None:
    path = spec_path(write, "magnitude(sparsity=0.5, start=4, end=2)")
    assert cmd_train(ns(file=path, out=str(tmp_path / "r"))) == 1
    err = capsys.readouterr().err
    assert "E0401" in err and "Traceback" not in err


# --------------------------------------------------------------------------- training


def _layer_modules(trainer) -> dict[str, nn.Linear]:
    return {p: m for p, m in trainer.model.named_modules() if isinstance(m, nn.Linear)}


def test_schedule_masks_and_final_sparsity(write) -> None:
    t = trainer_for(spec_path(write))
    hook = next(h for h in t.hooks if isinstance(h, Pruning))
    seen: list[dict[str, torch.Tensor]] = []
    original = hook.on_epoch_end

    def spy(trainer, record):
        original(trainer, record)
        seen.append({k: v.clone() for k, v in hook.masks.items()})
        # while training, every forward uses weight_orig * mask: pruned entries are exactly 0
        for x in hook.targets:
            m = x.module
            assert prune.is_pruned(m) and torch.all(m.weight[~m.weight_mask.bool()] == 0)

    hook.on_epoch_end = spy  # type: ignore[method-assign]
    hist = t.fit()
    for before, after in zip(seen, seen[1:]):
        for k in before:
            assert torch.all(after[k] <= before[k])  # masks only grow: a pruned weight never comes back
    for path, m in _layer_modules(t).items():
        assert not prune.is_pruned(m), path  # prune.remove ran: no reparametrisation left
        assert "weight_orig" not in dict(m.named_parameters()) and not hasattr(m, "weight_mask")
        n = m.weight.numel()
        assert int((m.weight == 0).sum()) == round(0.75 * n), path  # exactly the scheduled count
    assert all("weight_orig" not in k and "weight_mask" not in k for k in t.model.state_dict())
    targets = [r["pruning"]["target"] for r in hist]
    p = t.cfg.prune
    assert targets == pytest.approx([p.scheduled(e) for e in (1, 2, 3, 4)], abs=1e-6)
    last = hist[-1]["pruning"]
    assert set(last["layers"]) == {f"{path}.weight" for path in _layer_modules(t)}  # named as in the state dict
    assert last["sparsity"] == pytest.approx(0.75, abs=0.01)
    assert last["nonzero"] == last["weights"] - sum(round(0.75 * m.weight.numel()) for m in _layer_modules(t).values())


def test_layers_select_named_statements_only(write) -> None:
    t = trainer_for(spec_path(write, "magnitude(sparsity=0.5, end=1, layers=[h])"))
    t.fit(stop_after=1)
    mods = _layer_modules(t)
    pruned = {p for p, m in mods.items() if int((m.weight == 0).sum()) > 0}
    assert pruned == {"linear", "linear_1", "linear_2"}  # `h` is assigned before and inside the repeat
    assert int((mods["logits"].weight == 0).sum()) == 0


def test_global_scope_hits_the_total(write) -> None:
    t = trainer_for(spec_path(write, 'magnitude(sparsity=0.6, end=1, scope="global")'))
    t.fit(stop_after=1)
    mods = _layer_modules(t).values()
    total = sum(m.weight.numel() for m in mods)
    assert sum(int((m.weight == 0).sum()) for m in mods) == round(0.6 * total)


MOE_SPEC = """
model M(classes: int = 3) {
    input x: [B, F]
    h = Linear(x, out=16)
    z, balance = MoE(h, experts=4, k=2)
    logits = Linear(z, out=classes)
    output logits: [B, classes]
}
train {
    data      = iris(batch=16)
    loss      = cross_entropy(logits, y)
    optimizer = adam(lr=0.02)
    prune     = magnitude(sparsity=0.5, end=1, layers=[z])
    epochs    = 2
    seed      = 0
}
"""


def test_moe_experts_are_pruned_layer_by_layer(write) -> None:
    t = trainer_for(write(MOE_SPEC))
    hook = next(h for h in t.hooks if isinstance(h, Pruning))
    assert [type(x.module) for x in hook.targets] == [nn.Linear] * 8  # four experts, two Linear layers each
    t.fit()
    for m in (x.module for x in hook.targets):
        assert not prune.is_pruned(m) and int((m.weight == 0).sum()) == round(0.5 * m.weight.numel())
    assert {k for k in t.model.state_dict() if "experts" in k} == {
        f"z.experts.{e}.{i}.{name}" for e in range(4) for i in (0, 2) for name in ("weight", "bias")}


def test_sparsity_zero_trains_dense(write) -> None:
    t = trainer_for(spec_path(write), sparsity=0)
    assert not any(isinstance(h, Pruning) for h in t.hooks)
    assert "pruning" not in t.fit(stop_after=1)[-1]


def test_checkpoint_keys_plain_resume_and_eval(write, tmp_path, capsys) -> None:
    path = spec_path(write)
    straight, split = str(tmp_path / "s"), str(tmp_path / "k")
    assert cmd_train(ns(file=path, out=straight)) == 0
    assert cmd_train(ns(file=path, out=split, epochs=2)) == 0
    mid = RunDir(split).load_weights()[0]
    assert all(k.endswith(("weight", "bias")) for k in mid)  # no weight_orig / weight_mask
    assert cmd_train(ns(file=path, out=split, resume=True)) == 0
    wa, wb = RunDir(straight).load_weights()[0], RunDir(split).load_weights()[0]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)

    def strip(rs):
        return [{k: v for k, v in r.items() if k not in ("time", "train")} for r in rs]

    ra, rb = RunDir(straight).read_metrics(), RunDir(split).read_metrics()
    assert strip(ra) == strip(rb) and ra[-1]["pruning"]["sparsity"] == pytest.approx(0.75, abs=0.01)
    capsys.readouterr()
    assert cmd_eval(argparse.Namespace(file=path, ckpt=straight, set=[], dim=[], device="cpu", json=True,
                                       debug=False)) == 0
    res = json.loads(capsys.readouterr().out)
    tested = RunDir(straight).read_meta()["test"]  # on the weights validation chose
    assert 0 <= res["test"]["accuracy"] <= 1
    if tested["epoch"] == len(ra):  # the best epoch was the last: `dsl eval` sees the same weights
        assert res["test"]["accuracy"] == pytest.approx(tested["accuracy"])


def test_train_prints_final_sparsity(write, tmp_path, capsys) -> None:
    assert cmd_train(ns(file=spec_path(write), out=str(tmp_path / "r"), quiet=False, epochs=1)) == 0
    out = capsys.readouterr().out
    assert "pruning: sparsity per layer" in out and "logits" in out


# --------------------------------------------------------------------------- what is pruned


GAT_SPEC = """
model G(classes: int = 4) {
    input x: [N, F]
    input edge_index: [2, E] long
    h = elu(GAT(x, edge_index, out=8, heads=2))
    logits = GATv2(h, edge_index, out=classes, concat=false, residual=true)
    output logits: [N, classes]
}
train {
    data      = karate()
    loss      = cross_entropy(logits, y, mask=train_mask)
    optimizer = adam(lr=0.01)
    prune     = PRUNE
    epochs    = 1
    seed      = 0
}
"""


def _zeros(state: dict[str, torch.Tensor], key: str) -> int:
    return int((state[key] == 0).sum())


@pytest.mark.parametrize("layers", ["", ", layers=[h, logits]"])
def test_gat_weights_reach_the_target_sparsity(write, layers) -> None:
    """PyG's own Linear (GAT's projections) is a weight; attention vectors and biases stay dense."""
    from torch_geometric.nn.dense.linear import Linear as PyGLinear

    t = trainer_for(write(GAT_SPEC.replace("PRUNE", f"magnitude(sparsity=0.6, end=1{layers})")))
    last = t.fit()[-1]["pruning"]
    linears = {f"{p}.weight" for p, m in t.model.named_modules() if isinstance(m, PyGLinear)}
    assert linears == {"gat.conv.lin.weight", "logits.conv.lin_l.weight", "logits.conv.lin_r.weight",
                       "logits.conv.res.weight"}
    assert set(last["layers"]) == linears
    state = t.model.state_dict()
    for key in linears:
        assert _zeros(state, key) == round(0.6 * state[key].numel()), key
    for key in ("gat.conv.att_src", "gat.conv.att_dst", "logits.conv.att", "gat.conv.bias"):
        assert _zeros(state, key) == 0, key


SEQ_SPEC = """
model S(classes: int = 10) {
    input x: [B, 1, 8, 8]
    c = relu(Conv2d(x, out=4, kernel=3, padding=1))
    s = flatten(transpose(c, 1, 2), start=2)          # [B, 8, 32]: one step per image row
    r = LSTM(s, hidden=16)
    g = GRU(r, hidden=8, bidirectional=true)
    a = MultiheadAttention(g, heads=2)
    logits = Linear(mean(a, dim=1), out=classes)
    output logits: [B, classes]
}
train {
    data      = digits(images=true, batch=128)
    loss      = cross_entropy(logits, y)
    optimizer = adam(lr=0.01)
    prune     = PRUNE
    epochs    = 1
    seed      = 0
}
"""
SEQ_WEIGHTS = {
    "c": ["conv2d.weight"],
    "r": ["r.rnn.weight_ih_l0", "r.rnn.weight_hh_l0"],
    "g": ["g.rnn.weight_ih_l0", "g.rnn.weight_hh_l0", "g.rnn.weight_ih_l0_reverse", "g.rnn.weight_hh_l0_reverse"],
    "a": ["a.attn.in_proj_weight", "a.attn.out_proj.weight"],
    "logits": ["logits.weight"],
}


def test_conv_recurrent_and_attention_weights_are_pruned(write) -> None:
    t = trainer_for(write(SEQ_SPEC.replace("PRUNE", "magnitude(sparsity=0.5, end=1)")), epochs=2)
    hook = next(h for h in t.hooks if isinstance(h, Pruning))
    seen: list[int] = []
    # nn.MultiheadAttention reads out_proj.weight without calling out_proj: the masked weight
    # must still be the one each training step uses (and backpropagates through once).
    t.model.get_submodule("a.attn").register_forward_hook(
        lambda m, args, out: seen.append(int((m.out_proj.weight == 0).sum())))
    last = t.fit()[-1]["pruning"]
    weights = [k for keys in SEQ_WEIGHTS.values() for k in keys]
    assert list(last["layers"]) == weights  # biases (LSTM's bias_ih_l0, in_proj_bias, ...) stay dense
    state = t.model.state_dict()
    for key in weights:
        assert _zeros(state, key) == round(0.5 * state[key].numel()), key
    assert seen[-1] == round(0.5 * 16 * 16) and not any(k.endswith(("_orig", "_mask")) for k in state)
    assert all(not hasattr(x.module, x.name + "_mask") for x in hook.targets)  # made permanent


def test_per_layer_sparsity_is_honoured(write) -> None:
    prune_expr = "magnitude(sparsity=0.5, initial=0.1, end=2, layers=[c(sparsity=0.25), r, logits(sparsity=0.75)])"
    t = trainer_for(write(SEQ_SPEC.replace("PRUNE", prune_expr)), epochs=2)
    hist = t.fit()
    p = t.cfg.prune
    wanted = {"c": 0.25, "r": 0.5, "logits": 0.75}
    first = hist[0]["pruning"]["layers"]
    for name, final in wanted.items():  # the cubic schedule of each layer runs towards its own s_f
        for key in SEQ_WEIGHTS[name]:
            n = t.model.state_dict()[key].numel()
            assert first[key] == pytest.approx(round(p.scheduled(1, final) * n) / n, abs=1e-6), key
            assert _zeros(t.model.state_dict(), key) == round(final * n), key
    assert set(hist[-1]["pruning"]["layers"]) == {k for name in wanted for k in SEQ_WEIGHTS[name]}  # g, a: dense
    assert hist[-1]["pruning"]["target"] == pytest.approx(0.5)  # magnitude's own schedule


PARTS_SPEC = """
model M(vocab: int = 20) {
    input tokens: [B, T] long
    emb = Embedding(num=vocab, dim=8)
    e = emb(tokens)
    m = HopfieldLayer(e, patterns=5)
    logits, dist = PrototypeHead(mean(m, dim=1), classes=3)
    out = Linear(e, out=vocab, tie=emb)
    output logits: [B, 3]
    output out: [B, T, vocab]
}
"""


@pytest.mark.parametrize(
    "options, extra",
    [
        ({}, set()),
        ({"embeddings": True}, set()),  # the table is tied to `out`: shared weights stay dense
        ({"prototypes": True}, {"m.memory", "logits.prototypes"}),
    ],
)
def test_embeddings_and_prototypes_only_when_chosen(options, extra) -> None:
    from dsl.training.hooks.pruning import select

    model = dsl.compile(dsl.loads(PARTS_SPEC))
    paths = {x.path for x in select(model, Prune(MagnitudeArgs(sparsity=0.5, end=1, **options)))}
    projections = {f"m.hopfield.{p}_proj.weight" for p in ("q", "k", "v", "out")}
    assert paths == projections | {"logits.last_layer.weight"} | extra
    untied = dsl.compile(dsl.loads(PARTS_SPEC.replace(", tie=emb", "")))
    chosen = {x.path for x in select(untied, Prune(MagnitudeArgs(sparsity=0.5, end=1, **options)))}
    assert ("emb.weight" in chosen) == bool(options.get("embeddings")) and "out.weight" in chosen


# --------------------------------------------------------------------------- `layers` in dsl check

CHECK_SPEC = """
model C(classes: int = 3) {
    input x: [B, F]
    input y: [B] long
    emb = Embedding(num=classes, dim=8)
    h = relu(Linear(x, out=8))
    n = LayerNorm(h + emb(y))
    z = relu(n)
    logits = Linear(z, out=8)
    out = Linear(logits, out=classes, tie=emb)
    output out: [B, classes]
}
train {
    data      = iris(batch=16)
    loss      = cross_entropy(out, y)
    optimizer = adam(lr=0.02)
    prune     = PRUNE
    epochs    = 1
}
"""


@pytest.mark.parametrize(
    "layers, name, code, text, help",
    [
        ("[h, lgits]", "lgits", "E0503", "unknown layer `lgits`", "logits"),
        ("[h, n]", "n", "E0501", "layer `n` has no weights that `prune` masks", "norms"),
        ("[z]", "z", "E0501", "layer `z` has no weights", "Linear"),
        ("[emb]", "emb", "E0501", "layer `emb` has no weights", "shared (tied)"),
        ("[out]", "out", "E0501", "layer `out` has no weights", "shared (tied)"),
        ("[h, h(sparsity=0.5)]", "h(", "E0501", "named twice", None),
        ("[logits(sparsity=1.5)]", "1.5", "E0401", "invalid `sparsity`", None),
        ("[logits(sparsity=0.4, rate=2)]", "rate", "E0402", "has no argument `rate`", "sparsity"),
        ("[logits(sparsity=0.05)]", "logits", "E0401", "below the initial sparsity", "own sparsity"),
    ],
)
@pytest.mark.parametrize("form", ["dsl", "yaml"])
def test_layers_are_checked_statically(write, form, layers, name, code, text, help) -> None:
    text_spec = CHECK_SPEC.replace("PRUNE", f"magnitude(sparsity=0.5, initial=0.1, end=3, layers={layers})")
    source = text_spec if form == "dsl" else dsl.loads(text_spec).to_yaml()
    path = write(source, f"spec.{form}")
    diags = dsl.check(path)
    assert [d.code for d in diags] == [code], [str(d) for d in diags]
    (d,) = diags
    assert text in d.message and (help is None or help in (d.help or ""))
    line = next(i for i, s in enumerate(source.splitlines(), 1) if "magnitude(" in s)
    at = source.splitlines()[line - 1].index("layers=") + len("layers=")
    assert d.span.line == line and d.span.col == source.splitlines()[line - 1].index(name, at) + 1


def test_layers_that_hold_weights_check_and_a_named_instance_selects_its_module(write) -> None:
    text = CHECK_SPEC.replace(", tie=emb", "")
    assert dsl.check(write(GAT_SPEC.replace("PRUNE", "magnitude(sparsity=0.5, end=1, layers=[h, logits])"))) == []
    text = text.replace("PRUNE", "magnitude(sparsity=0.5, end=1, embeddings=true, layers=[h, emb])")
    assert dsl.check(write(text)) == []


def test_per_layer_sparsity_needs_per_layer_scope(write) -> None:
    expr = 'magnitude(sparsity=0.5, end=1, scope="global", layers=[h, logits(sparsity=0.8)])'
    (d,) = dsl.check(write(GAT_SPEC.replace("PRUNE", expr)))
    assert d.code == "E0401" and "needs `scope=\"layer\"`" in d.message
    assert d.span.col == GAT_SPEC.replace("PRUNE", expr).splitlines()[d.span.line - 1].index("logits(") + 1


def test_pushed_prototypes_cannot_be_pruned(write) -> None:
    text = """
model P(classes: int = 3) {
    input x: [B, F]
    logits, dist = PrototypeHead(Linear(x, out=4), classes=classes)
    output logits: [B, classes]
}
train {
    data       = iris(batch=16)
    loss       = cross_entropy(logits, y)
    optimizer  = adam(lr=0.02)
    push_every = 2
    prune      = magnitude(sparsity=0.5, end=1, prototypes=true)
    epochs     = 2
}
"""
    (d,) = dsl.check(write(text))
    assert d.code == "E0501" and "cannot also be pruned" in d.message
    line = text.splitlines()[d.span.line - 1]
    assert "prune" in line and d.span.col == line.index("true") + 1
