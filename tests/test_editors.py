"""Editors: the VS Code extension folder (its manifest, grammar and language configuration),
and a real editor, Neovim, driving `dsl lsp` as a user would."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
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


# --------------------------------------------------------------------------- Neovim

# Neovim's built-in client (0.7+, no plugin): open a spec, break it, read the error, hover the
# name, fix it. What the session saw is written to a file the test reads.
NVIM_SESSION = """
vim.filetype.add({ extension = { dsl = "dsl" } })
local out = {}
vim.cmd("edit " .. SPEC)
local buf = vim.api.nvim_get_current_buf()
local id = vim.lsp.start_client({ name = "dsl", cmd = { DSL, "lsp" }, root_dir = ROOT })
vim.lsp.buf_attach_client(buf, id)
local function diags(done)
  vim.wait(10000, function() return done(vim.diagnostic.get(buf)) end, 50)
  return vim.diagnostic.get(buf)
end
local function flat(text) return (text:gsub("\\n", " | ")) end
local function replace(pattern, text)
  for i, l in ipairs(vim.api.nvim_buf_get_lines(buf, 0, -1, false)) do
    if l:match(pattern) then vim.api.nvim_buf_set_lines(buf, i - 1, i, false, { text }); return i end
  end
end
vim.wait(1500)
table.insert(out, "open " .. #vim.diagnostic.get(buf))
local row = replace("h = relu%(h%)", "    h = relu(h + x)")
for _, e in ipairs(diags(function(d) return #d > 0 end)) do
  table.insert(out, string.format("error %d %d %d %s %s", e.lnum, e.col, e.end_col, e.code, flat(e.message)))
end
local res = vim.lsp.buf_request_sync(buf, "textDocument/hover", {
  textDocument = vim.lsp.util.make_text_document_params(buf), position = { line = row - 1, character = 13 } }, 10000)
for _, r in pairs(res or {}) do table.insert(out, "hover " .. flat(r.result.contents.value)) end
replace("relu%(h %+ x%)", "    h = relu(h)")
table.insert(out, "fixed " .. #diags(function(d) return #d == 0 end))
vim.fn.writefile(out, OUT)
vim.lsp.stop_client(id)
vim.cmd("qa!")
"""


@pytest.mark.skipif(shutil.which("nvim") is None, reason="Neovim is not installed")
def test_neovim_shows_the_error_under_the_argument_and_the_hover_says_why(tmp_path: Path) -> None:
    spec = tmp_path / "classifier.dsl"
    spec.write_text((ROOT / "specs" / "classifier.dsl").read_text())
    dsl = Path(sys.executable).with_name("dsl")
    out = tmp_path / "session.txt"
    script = tmp_path / "init.lua"
    script.write_text("".join(f'local {k} = "{v}"\n' for k, v in
                              {"SPEC": spec, "DSL": dsl, "ROOT": tmp_path, "OUT": out}.items()) + NVIM_SESSION)
    subprocess.run(["nvim", "--headless", "--clean", "-u", str(script)], cwd=tmp_path, timeout=120,
                   capture_output=True, check=False)
    lines = out.read_text().splitlines()
    assert lines[0] == "open 0"
    (error,) = [line for line in lines if line.startswith("error ")]
    _, row, col, end, code, message = error.split(" ", 5)
    assert (int(row), int(col), int(end), code) == (6, 13, 18, "E0301")  # under `h + x`, line 7
    assert "[B, 16] + [B, 64]" in message
    (hover,) = [line for line in lines if line.startswith("hover ")]
    assert "h: [B, 16]" in hover and "because Linear(out=16)" in hover
    assert lines[-1] == "fixed 0"
