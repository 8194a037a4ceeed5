"""The examples of DESIGN §2–§4 work exactly as written."""

from __future__ import annotations

import os

import torch
from conftest import ROOT

import dsl


def test_design_python_api_example():
    os.chdir(ROOT)
    spec = dsl.load("specs/protogat.dsl")
    diags = dsl.check(spec, dims={"N": 34, "F": 34})
    assert diags == []
    model = dsl.compile(spec, dims={"F": 34}, hidden=32)
    x = torch.randn(34, 34)
    edge_index = torch.randint(0, 34, (2, 100))
    out = model(x=x, edge_index=edge_index)
    assert isinstance(out, torch.Tensor) and out.shape == (34, 4)


def test_design_builder_example():
    g = dsl.Graph("Classifier", params={"hidden": 64})
    x = g.input("x", ["B", 64])
    h = g.relu(g.Linear(x, out=g.param("hidden")))
    g.output("logits", g.Linear(h, out=10), shape=["B", 10])
    spec = g.build()
    assert dsl.check(spec) == []
    text, yaml_text = spec.to_text(), spec.to_yaml()
    assert "model Classifier" in text and "Linear" in yaml_text
    model = dsl.compile(spec)
    assert model(x=torch.randn(3, 64)).shape == (3, 10)


def test_design_yaml_and_text_give_the_same_model():
    from dsl.language.ir import strip_spans

    a = dsl.load(ROOT / "specs" / "classifier.yaml")
    b = dsl.load(ROOT / "specs" / "classifier.dsl")
    assert strip_spans(a).model == strip_spans(b).model
    assert strip_spans(a).params == strip_spans(b).params


def test_protogat_registers_the_moe_balance_loss():
    model = dsl.compile(ROOT / "specs" / "protogat.dsl", with_aux=True)
    assert list(model.dsl_aux_weights) == ["aux:z.balance"]
    out = model(x=torch.randn(34, 34), edge_index=torch.randint(0, 34, (2, 80)))
    assert out["aux:z.balance"].ndim == 0 and out["logits"].shape == (34, 4)
