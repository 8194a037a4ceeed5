"""The VS Code extension folder: its manifest, grammar and language configuration."""

from __future__ import annotations

import json
import re
from typing import Any

from conftest import ROOT

VSCODE = ROOT / "editors" / "vscode"


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
