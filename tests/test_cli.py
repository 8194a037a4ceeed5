"""The command line as a user meets it: exit codes, summaries, catalogue, export."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import SPECS, run_cli


def test_compile_summary_table():
    code, out, err = run_cli("compile", str(SPECS / "classifier.dsl"))
    assert code == 0, err
    for word in ("node", "block", "output shape", "parameters", "Linear(out=16)", "[B, 10]", "1,210"):
        assert word in out
    assert "total" in out


def test_compile_json_and_output_file(tmp_path):
    code, out, _ = run_cli("compile", "--json", str(SPECS / "classifier.dsl"), "--set", "hidden=8")
    data = json.loads(out)
    assert code == 0 and data["parameters"] == 64 * 8 + 8 + 8 * 10 + 10
    target = tmp_path / "summary.txt"
    code, _, _ = run_cli("compile", str(SPECS / "classifier.dsl"), "-o", str(target))
    assert code == 0 and "Linear" in target.read_text()


def test_compile_emit_pt2(tmp_path):
    import torch

    target = tmp_path / "model.pt2"
    code, _, err = run_cli("compile", str(SPECS / "classifier.dsl"), "--emit", "pt2", "-o", str(target))
    assert code == 0, err
    ep = torch.export.load(str(target))
    assert ep.module()(x=torch.randn(3, 64)).shape == (3, 10)


def test_compile_reports_spec_errors_with_exit_1(write):
    path = write("model M() {\n    input x: [B, F]\n    y = Linear(x, out=3)\n    output y\n}\n")
    code, _, err = run_cli("compile", path)
    assert code == 1 and "E0601" in err and "--dim F=" in err
    code, _, err = run_cli("compile", path, "--dim", "F=4")
    assert code == 0


def test_blocks_catalogue():
    code, out, _ = run_cli("blocks", "--json")
    names = {b["name"] for b in json.loads(out)}
    assert {"Linear", "MLP", "relu", "GAT", "GATv2", "MoE", "Gate", "PrototypeHead", "Hopfield"} <= names
    code, out, _ = run_cli("blocks", "Linear", "--json")
    (info,) = json.loads(out)
    assert info["params"][0]["name"] == "out" and info["params"][0]["type"] == "int"
    code, _, err = run_cli("blocks", "Linaer")
    assert code == 1 and "Linear" in err


def test_usage_errors_exit_2():
    assert run_cli()[0] == 2
    assert run_cli("nonsense")[0] == 2
    assert run_cli("check")[0] == 2
    assert run_cli("compile", str(SPECS / "classifier.dsl"), "--emit", "pt2")[0] == 2


def test_console_script_installed():
    out = subprocess.run([sys.executable, "-m", "dsl.cli", "check", str(SPECS / "classifier.dsl")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ok:" in out.stderr


def test_a_reader_that_stops_early_is_not_an_internal_error() -> None:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "dsl.cli", "blocks", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(10)  # as `| head -c 10` does, then goes away
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) in (0, 141) and "internal error" not in err and "Traceback" not in err, err
