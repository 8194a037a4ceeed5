"""Compiled modules equal hand-written PyTorch; torch.compile and torch.export work."""

from __future__ import annotations

import pytest
import torch
from conftest import SPECS
from torch import nn

import dsl
from dsl.api import analyse
from dsl.exporting.formats import dynamic_shapes, example_inputs


def _copy_linear(dst: nn.Linear, src: nn.Module) -> None:
    dst.load_state_dict(src.state_dict())


class HandClassifier(nn.Module):
    def __init__(self, hidden: int = 16, classes: int = 10):
        super().__init__()
        self.l1 = nn.Linear(64, hidden)
        self.l2 = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.l2(torch.relu(self.l1(x)))


class HandSiamese(nn.Module):
    def __init__(self, f: int, width: int = 32):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(f, 64), nn.GELU(), nn.Linear(64, width))

    def forward(self, a, b):
        za, zb = self.enc(a), self.enc(b)
        return {"score": (za * zb).sum(-1), "za": za}


def _grads(module: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.parameters()]


@pytest.mark.parametrize("path", ["classifier.dsl", "classifier.yaml"])
def test_classifier_equals_hand_written(path):
    torch.manual_seed(0)
    model = dsl.compile(SPECS / path)
    hand = HandClassifier()
    _copy_linear(hand.l1, model.h)
    _copy_linear(hand.l2, model.logits)
    x = torch.randn(7, 64)
    out, ref = model(x=x), hand(x)
    assert torch.allclose(out, ref, atol=1e-6)
    out.square().sum().backward()
    ref.square().sum().backward()
    for g1, g2 in zip(_grads(model), _grads(hand)):
        assert torch.allclose(g1, g2, atol=1e-6)


def test_siamese_shares_weights_and_equals_hand_written():
    model = dsl.compile(SPECS / "siamese.dsl", dims={"F": 12})
    hand = HandSiamese(12)
    hand.enc.load_state_dict({k.replace("net.", ""): v for k, v in model.enc.state_dict().items()}, strict=False)
    # the compiled MLP and nn.Sequential must hold the same tensors in the same order
    for p_dst, p_src in zip(hand.enc.parameters(), model.enc.parameters()):
        p_dst.data.copy_(p_src.data)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in hand.parameters())
    a, b = torch.randn(5, 12), torch.randn(5, 12)
    out, ref = model(a=a, b=b), hand(a, b)
    assert set(out) == {"score", "za"}
    assert torch.allclose(out["score"], ref["score"], atol=1e-5)
    (out["score"].sum() + out["za"].sum()).backward()
    (ref["score"].sum() + ref["za"].sum()).backward()
    for g1, g2 in zip(_grads(model), _grads(hand)):
        assert torch.allclose(g1, g2, atol=1e-5)


def test_sequence_encoder_equals_hand_written():
    torch.manual_seed(0)
    model = dsl.compile(SPECS / "sequence.dsl").eval()
    tokens = torch.randint(0, 100, (3, 7))
    h = model.h(tokens)
    for layer in (model.h_1, model.h_2):
        mods = dict(layer.named_children())
        norms = [m for m in mods.values() if isinstance(m, nn.LayerNorm)]
        attn = next(m for m in mods.values() if not isinstance(m, nn.LayerNorm) and any(isinstance(c, nn.MultiheadAttention) for c in m.modules()))
        mlp = [m for m in mods.values() if m not in norms and m is not attn][0]
        mha = next(c for c in attn.modules() if isinstance(c, nn.MultiheadAttention))
        q = norms[0](h)
        a = mha(q, q, q, need_weights=False)[0]
        h = h + a
        h = h + mlp(norms[1](h))
    ref = model.logits(h.mean(dim=1))
    assert torch.allclose(model(tokens=tokens), ref, atol=1e-5)


def test_code_is_readable_and_meta_has_spans():
    model = dsl.compile(SPECS / "classifier.dsl")
    code = model.code
    assert "self.h(x)" in code and "torch.relu" in code and "self.logits" in code
    nodes = {n.name: n for n in model.graph.nodes}
    assert nodes["h"].meta["span"].line == 6
    assert nodes["logits"].meta["dsl_type"] == "[B, 10]"


def test_single_output_tensor_several_outputs_dict():
    m1 = dsl.compile(SPECS / "classifier.dsl")
    assert isinstance(m1(x=torch.randn(2, 64)), torch.Tensor)
    m2 = dsl.compile(SPECS / "classifier.dsl", return_dict=True)
    assert set(m2(x=torch.randn(2, 64))) == {"logits"}


def test_overrides_change_sizes():
    model = dsl.compile(SPECS / "classifier.dsl", hidden=32, classes=3)
    assert model.h.out_features == 32
    assert model(x=torch.randn(2, 64)).shape == (2, 3)


@pytest.mark.parametrize("name,dims", [("classifier.dsl", {}), ("siamese.dsl", {"F": 8}), ("sequence.dsl", {})])
def test_torch_compile_fullgraph(name, dims):
    model = dsl.compile(SPECS / name, dims=dims).eval()
    analysis = analyse(dsl.load(SPECS / name), dims)
    prog = analysis.program
    inputs = example_inputs(prog.input_types())
    if name == "sequence.dsl":
        inputs["tokens"] = torch.randint(0, 100, inputs["tokens"].shape)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    ref = model(**inputs)
    got = compiled(**inputs)
    if isinstance(ref, dict):
        for k in ref:
            assert torch.allclose(ref[k], got[k], atol=1e-5)
    else:
        assert torch.allclose(ref, got, atol=1e-5)


@pytest.mark.parametrize("name,dims", [("classifier.dsl", {}), ("siamese.dsl", {"F": 8}), ("sequence.dsl", {})])
def test_torch_export_with_dims(name, dims):
    model = dsl.compile(SPECS / name, dims=dims).eval()
    analysis = analyse(dsl.load(SPECS / name), dims)
    prog = analysis.program
    types = prog.input_types()
    inputs = example_inputs(types)
    if name == "sequence.dsl":
        inputs["tokens"] = torch.randint(0, 100, inputs["tokens"].shape)
    ep = torch.export.export(model, (), inputs, dynamic_shapes=dynamic_shapes(types))
    # a different batch size runs through the exported program
    other = example_inputs(types, sizes={"B": 9, "T": 4})
    if name == "sequence.dsl":
        other["tokens"] = torch.randint(0, 100, other["tokens"].shape)
    ref = model(**other)
    got = ep.module()(**other)
    if isinstance(ref, dict):
        for k in ref:
            assert torch.allclose(ref[k], got[k], atol=1e-5)
    else:
        assert torch.allclose(ref, got, atol=1e-5)


def test_unknown_dim_needed_for_weights_is_a_diagnostic():
    with pytest.raises(dsl.SpecError) as e:
        dsl.compile(SPECS / "siamese.dsl")
    d = e.value.diagnostics[0]
    assert d.code == "E0601"
    assert "F" in d.message and "--dim" in (d.help or "")
    assert d.span.line == 5


def test_deepcopy_keeps_the_dsl_attributes() -> None:
    import copy

    model = dsl.compile(SPECS / "moe_digits.dsl", return_dict=True, with_aux=True)
    twin = copy.deepcopy(model)
    assert twin.dsl_aux_weights == model.dsl_aux_weights and "aux:z.balance" in model.dsl_aux_weights
    assert twin.dsl_inputs == model.dsl_inputs and twin.dsl_outputs == model.dsl_outputs
    assert twin.dsl_spec == model.dsl_spec
    x = torch.randn(5, 64)
    twin.eval(), model.eval()
    torch.testing.assert_close(twin(x=x)["logits"], model(x=x)["logits"])


def test_child_modules_behave_as_on_any_module() -> None:
    model = dsl.compile(SPECS / "classifier.dsl", guards=False)
    x = torch.randn(3, 64)
    model.h = torch.nn.Linear(64, 16)  # replaced: the forward calls the new one
    torch.testing.assert_close(model(x=x), model.logits(torch.relu(model.h(x))))
    model.add_module("h", torch.nn.Linear(64, 16))
    torch.testing.assert_close(model(x=x), model.logits(torch.relu(model.h(x))))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        model.nothing  # noqa: B018


def test_a_deep_copy_and_a_pickle_round_trip_work() -> None:
    import copy
    import pickle

    model = dsl.compile(SPECS / "classifier.dsl")
    twin = copy.deepcopy(model)
    assert twin.logits is not model.logits
    again = pickle.loads(pickle.dumps(pickle.loads(pickle.dumps(model))))  # fx rebuilds it from its code
    x = torch.randn(4, 64)
    torch.testing.assert_close(again(x=x), model(x=x))
    torch.testing.assert_close(twin(x=x), model(x=x))
    for copied in (again, twin):  # the guard came along
        with pytest.raises(dsl.InputError):
            copied(x=torch.randn(4, 63))
