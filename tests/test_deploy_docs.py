"""docs/DEPLOY.md works as written: every code block, in order, in a fresh folder."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.M | re.S)


def blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer((ROOT / "docs" / "DEPLOY.md").read_text())]


def test_the_page_has_every_route() -> None:
    text = "\n".join(code for _, code in blocks())
    for needle in ("dsl.train(", "dsl.load_run(", "--to onnx", "ort.InferenceSession", "--to pt2",
                   "torch.export.load", "--to python", "L.LightningModule", "dsl predict", "dsl eval"):
        assert needle in text, needle


def test_every_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    pytest.importorskip("lightning")
    (tmp_path / "specs").symlink_to(ROOT / "specs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the page puts "." on it
    namespace: dict[str, object] = {"__name__": "deploy_doc"}
    for kind, code in blocks():
        if kind == "python":
            exec(compile(code, "docs/DEPLOY.md", "exec"), namespace)
            continue
        for line in code.splitlines():
            argv = shlex.split(line)
            assert argv[0] == "dsl", line
            status, _, err = run_cli(*argv[1:], cwd=os.getcwd())
            assert status == 0, (line, err)
    sys.modules.pop("classifier", None)
    assert (tmp_path / "classifier.safetensors").is_file() and (tmp_path / "test_predictions.csv").is_file()
