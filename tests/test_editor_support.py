"""Editor support beyond the server: `dsl schema` for YAML language servers, and the
VS Code extension folder (its grammar and language configuration)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, SPECS
from lsprotocol import types

from dsl.language.yaml_reader import plain_scalar
from dsl.tools.schema import spec_schema

jsonschema = pytest.importorskip("jsonschema")

BASE = "model:\n  name: M\n  inputs: {x: {shape: [B, 8]}}\n  nodes:\n    - {id: y, op: Linear, in: [x], with: {out: 4}}\n"
VSCODE = ROOT / "editors" / "vscode"


def _data(text: str) -> Any:
    """A YAML document as data under the 1.2 core schema, as `dsl` reads it."""

    def conv(node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return plain_scalar(node.value) if node.style is None else node.value
        if isinstance(node, yaml.SequenceNode):
            return [conv(n) for n in node.value]
        return {conv(k): conv(v) for k, v in node.value}

    return conv(yaml.compose(text, Loader=yaml.SafeLoader))


@pytest.fixture(scope="module")
def validator() -> Any:
    return jsonschema.Draft202012Validator(spec_schema())


def _errors(validator: Any, text: str) -> list[list[Any]]:
    return [list(e.absolute_path) for e in validator.iter_errors(_data(text))]


# --------------------------------------------------------------------------- op


def test_an_unknown_op_fails_when_the_spec_defines_no_blocks(validator: Any) -> None:
    assert _errors(validator, BASE) == []
    assert ["model", "nodes", 0, "op"] in _errors(validator, BASE.replace("op: Linear", "op: Linaer"))
    in_repeat = BASE.replace("- {id: y, op: Linear, in: [x], with: {out: 4}}",
                             "- {repeat: 2, nodes: [{id: y, op: Linaer, in: [x], with: {out: 4}}]}")
    assert _errors(validator, in_repeat)
    expert = BASE.replace("op: Linear, in: [x], with: {out: 4}",
                          "op: MoE, in: [x], with: {experts: 2, expert: {op: MLPP, with: {hidden: 4}}}")
    assert _errors(validator, expert)


def test_a_spec_with_blocks_or_uses_may_call_its_own(validator: Any) -> None:
    own = BASE.replace("op: Linear, in: [x], with: {out: 4}", "op: Proj, in: [x]")
    blocks = "blocks:\n  Proj:\n    inputs: {x: {shape: [..., F]}}\n    nodes: [{id: y, op: Linear, in: [x], with: {out: 4}}]\n    outputs: {y: null}\n"
    assert _errors(validator, own)
    assert _errors(validator, blocks + own) == []
    assert _errors(validator, 'use: ["lib.yaml"]\n' + own) == []


def test_a_named_instance_may_be_an_op(validator: Any) -> None:
    text = BASE.replace("- {id: y, op: Linear, in: [x], with: {out: 4}}",
                        "- {id: enc, op: MLP, with: {hidden: 8, out: 4}}\n    - {id: y, op: enc, in: [x]}")
    assert _errors(validator, text) == []


# --------------------------------------------------------------------------- train values


@pytest.mark.parametrize("train, ok", [
    ('{data: "digits(batch=64)", loss: "cross_entropy(y, y)", epochs: 10, seed: 0}', True),
    ('{data: \'"rows.csv"\', optimizer: adamw, schedule: "cosine(t_max=5)", grad_clip: 1}', True),
    ('{epochs: "n_epochs", metrics: ["accuracy(y, y)", "cross_entropy(y, y)"]}', True),
    ('{early_stop: "early_stop(metric=accuracy)", prune: "magnitude(sparsity=0.5, end=4)"}', True),
    ("{epochs: 2.5}", False),
    ("{epochs: 0}", False),
    ("{seed: -1}", False),
    ("{grad_clip: 0}", False),
    ('{data: "digts()"}', False),
    ("{optimizer: adamx}", False),
    ('{metrics: ["accurcy(y, y)"]}', False),
    ("{batch: true}", False),
])
def test_train_values_are_typed(validator: Any, train: str, ok: bool) -> None:
    errors = _errors(validator, BASE + f"train: {train}\n")
    assert (errors == []) is ok, errors
    assert all(path[:1] == ["train"] for path in errors)


# --------------------------------------------------------------------------- yaml-language-server


def _yaml_language_server() -> str | None:
    """yaml-language-server (npm) when installed: $DSL_YAML_LANGUAGE_SERVER or on PATH."""
    found = os.environ.get("DSL_YAML_LANGUAGE_SERVER") or shutil.which("yaml-language-server")
    return found if found and os.path.exists(found) else None


@pytest.mark.skipif(_yaml_language_server() is None,
                    reason="yaml-language-server is not installed (npm install yaml-language-server)")
def test_yaml_language_server_reports_an_unknown_op(tmp_path: Path) -> None:
    from pytest_lsp import client_capabilities, make_test_lsp_client

    schema = tmp_path / "spec.schema.json"
    schema.write_text(json.dumps(spec_schema()))
    head = f"# yaml-language-server: $schema={schema}\n"

    async def diagnostics(text: str) -> list[types.Diagnostic]:
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


# --------------------------------------------------------------------------- the VS Code folder


def test_the_extension_names_files_that_exist() -> None:
    manifest = json.loads((VSCODE / "package.json").read_text())
    contributes = manifest["contributes"]
    (language,) = contributes["languages"]
    assert language["extensions"] == [".dsl"]
    assert (VSCODE / language["configuration"]).is_file()
    for grammar in contributes["grammars"]:
        assert (VSCODE / grammar["path"]).is_file() and grammar["scopeName"] == "source.dsl"
    assert (VSCODE / manifest["main"]).is_file()
    config = json.loads((VSCODE / language["configuration"]).read_text())
    assert config["comments"] == {"lineComment": "#"}
    assert ["{", "}"] in config["brackets"] and ["(", ")"] in config["brackets"]


def _patterns(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node[k] for k in ("match", "begin", "end") if isinstance(node.get(k), str)]
        return own + [p for v in node.values() for p in _patterns(v)]
    if isinstance(node, list):
        return [p for v in node for p in _patterns(v)]
    return []


def test_the_grammar_scopes_a_spec_line() -> None:
    grammar = json.loads((VSCODE / "syntaxes" / "dsl.tmLanguage.json").read_text())
    patterns = _patterns(grammar)
    assert len(patterns) > 10
    for p in patterns:
        re.compile(p)  # the grammar's regexes use the part of Oniguruma that Python shares
    rules = grammar["repository"]
    definition = re.compile(rules["definition"]["patterns"][0]["match"])
    assert definition.search("block Expert(dim: int) {").group(2) == "Expert"
    comment = re.compile(rules["comment"]["match"])
    assert comment.search("h = relu(h)  # why").group() == "# why"
