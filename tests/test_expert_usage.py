"""Expert usage: routing statistics in the MoE modules, the training hook, the end-of-train
table and `dsl inspect`."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
from conftest import run_cli
from helpers import command_args

from dsl.blocks.nn.moe import MixtureOfExperts, NoisyTopKGate, RoutingStats
from dsl.cli.training import cmd_train
from dsl.training.hooks.expert_usage import bar, summarise
from dsl.training.rundir import RunDir

SPEC = """
model M(classes: int = 3) {
    input x: [B, F]
    h = relu(Linear(x, out=8))
    z, balance = MoE(h, experts=4, k=2, expert=MLP(hidden=8, out=8), capacity=CAP)
    g, gb = Gate(h, experts=3, k=1, noisy=false)
    logits = Linear(relu(z), out=classes) + Linear(g, out=classes)
    output logits: [B, classes]
    output balance
}
train {
    data      = iris(batch=16)
    loss      = cross_entropy(logits, y)
    metrics   = [accuracy(logits, y)]
    optimizer = adam(lr=0.02)
    epochs    = 2
    seed      = 0
}
"""


def ns(**kw: object) -> argparse.Namespace:
    return command_args("train", **kw)


def moe(experts: int = 4, k: int = 2, noisy: bool = False, capacity: float | None = None) -> MixtureOfExperts:
    torch.manual_seed(0)
    gate = NoisyTopKGate(6, experts, k, noisy=noisy)
    with torch.no_grad():
        gate.w_gate.normal_()
    return MixtureOfExperts(gate, [torch.nn.Linear(6, 5) for _ in range(experts)], 5, capacity)


# --------------------------------------------------------------------------- statistics


def test_statistics_match_the_routing() -> None:
    m = moe()
    m.gate.usage = RoutingStats(4)
    x = torch.randn(40, 6)
    m.train()
    m(x[:25])
    m(x[25:])
    sums = m.gate.usage.sums.tolist()
    idx, w, _ = m.gate.route(x)  # the same routing again (noise-free), read after the sums
    counts = torch.bincount(idx.reshape(-1), minlength=4).double()
    mass = torch.zeros(4, dtype=torch.float64).index_add_(0, idx.reshape(-1), w.reshape(-1).double())
    p = torch.softmax((x @ m.gate.w_gate).double(), -1)
    entropy = -(p * p.log()).sum(-1).sum().detach()
    assert sums[:4] == pytest.approx(counts.tolist())
    assert sums[4:8] == pytest.approx(mass.tolist(), rel=1e-6)
    assert sums[8] == pytest.approx(float(entropy), rel=1e-6)
    assert sums[9] == 40 and sums[10] == 0
    e = summarise(sums, 4, "MoE", 2, None)
    assert sum(e["load"]) == pytest.approx(1, abs=1e-5) and sum(e["importance"]) == pytest.approx(1, abs=1e-5)
    assert e["load"] == pytest.approx((counts / counts.sum()).tolist(), abs=1e-6)
    assert e["entropy"] == pytest.approx(float(entropy) / 40, abs=1e-6)
    assert e["entropy_max"] == pytest.approx(math.log(4)) and e["tokens"] == 40 and e["dropped"] is None
    assert m.gate.usage.sums[9].item() == 80  # route() is where statistics are taken


def test_never_selected_share() -> None:
    m = moe(k=1)
    with torch.no_grad():
        m.gate.w_gate.zero_()
        m.gate.w_gate[:, 0] = 1.0  # positive tokens pick expert 0 ...
        m.gate.w_gate[:, 1] = -1.0  # ... negative ones expert 1; 2 and 3 never win
    m.gate.usage = RoutingStats(4)
    m.train()
    m(torch.cat([torch.ones(5, 6), -torch.ones(3, 6)]))
    e = summarise(m.gate.usage.sums.tolist(), 4, "MoE", 1, None)
    assert e["load"] == pytest.approx([5 / 8, 3 / 8, 0, 0]) and e["unused"] == 0.5


def test_dropped_assignments_under_capacity() -> None:
    m = moe(capacity=0.5)
    m.gate.usage = RoutingStats(4)
    m.train()
    m(torch.randn(32, 6))
    e = summarise(m.gate.usage.sums.tolist(), 4, "MoE", 2, 0.5)
    assert e["dropped"] == pytest.approx(float(m.dropped_fraction), abs=1e-6) and e["dropped"] > 0


def test_collecting_never_changes_outputs_and_skips_eval() -> None:
    x = torch.randn(30, 6)
    m = moe(noisy=True)
    m.train()
    torch.manual_seed(1)
    y0, b0 = m(x)
    m.gate.usage = RoutingStats(4)
    torch.manual_seed(1)
    y1, b1 = m(x)
    assert torch.equal(y0, y1) and torch.equal(b0, b1)  # same noise draws, same outputs
    assert m.gate.usage.sums is not None
    m.gate.usage.reset()
    m.eval()
    m(x)
    assert m.gate.usage.sums is None  # evaluation passes are not counted


def test_compile_fullgraph_with_usage_on() -> None:
    m = moe()
    m.gate.usage = RoutingStats(4)
    m.train()
    x = torch.randn(16, 6)
    compiled = torch.compile(m, fullgraph=True, backend="eager")
    y, _ = compiled(x)
    assert torch.allclose(y, m(x)[0], atol=1e-6)
    # the traced forward skipped the update; only the eager call above counted
    assert m.gate.usage.sums is not None and m.gate.usage.sums[9].item() == 16


def test_bar() -> None:
    assert bar(1.0, 4) == "████" and bar(0.0, 4) == "    " and bar(0.5, 4) == "██  "
    assert bar(1 / 32, 4) == "▏   " and len(bar(0.37, 10)) == 10


# --------------------------------------------------------------------------- hook + commands


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("usage")
    spec = folder / "m.dsl"
    spec.write_text(SPEC.replace("CAP", "0.75"))
    out = str(folder / "run")
    assert cmd_train(ns(file=str(spec), out=out)) == 0
    return out


def test_records_per_epoch(run_dir) -> None:
    records = RunDir(run_dir).read_metrics()
    assert len(records) == 2
    for r in records:
        moe_, gate = r["experts"]["z"], r["experts"]["g"]
        assert moe_["kind"] == "MoE" and gate["kind"] == "Gate" and set(r["experts"]) == {"z", "g"}
        assert moe_["tokens"] == gate["tokens"] == 90  # iris: 60% of 150 rows, once per epoch
        for u, n in ((moe_, 4), (gate, 3)):
            assert len(u["load"]) == len(u["importance"]) == n
            assert sum(u["load"]) == pytest.approx(1, abs=1e-4)
            assert sum(u["importance"]) == pytest.approx(1, abs=1e-4)
            assert 0 <= u["entropy"] <= u["entropy_max"] + 1e-9 and u["entropy_max"] == pytest.approx(math.log(n))
            assert 0 <= u["unused"] < 1
        assert 0 <= moe_["dropped"] < 1 and gate["dropped"] is None


def test_train_shows_usage_table(tmp_path, capsys) -> None:
    spec = tmp_path / "m.dsl"
    spec.write_text(SPEC.replace("CAP", "null"))
    assert cmd_train(ns(file=str(spec), out=str(tmp_path / "r"), quiet=False, epochs=1)) == 0
    out = capsys.readouterr().out
    assert "expert usage, epoch 1 · z (MoE, 4 experts, k=2)" in out and "█" in out and "gate entropy" in out
    assert cmd_train(ns(file=str(spec), out=str(tmp_path / "j"), json=True, epochs=1)) == 0
    last = json.loads(capsys.readouterr().out.splitlines()[-1])["last"]  # the JSON line, no table
    assert set(last["experts"]) == {"z", "g"}


def test_inspect_shows_summary_and_usage(run_dir) -> None:
    code, out, err = run_cli("inspect", run_dir)
    assert code == 0, err
    assert "M" in out and "seed" in out and "best" in out and "expert usage, epoch 2" in out and "█" in out
    code, out, _ = run_cli("inspect", run_dir, "--epoch", "1", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["record"]["epoch"] == 1 and data["summary"]["seed"] == 0 and "z" in data["record"]["experts"]


def test_inspect_errors(run_dir, tmp_path) -> None:
    code, _, err = run_cli("inspect", run_dir, "--epoch", "7")
    assert code == 1 and "epochs 1..2" in err and "Traceback" not in err
    code, _, err = run_cli("inspect", str(tmp_path))
    assert code == 1 and "not a run directory" in err
    code, _, err = run_cli("inspect", run_dir, "--epoch", "x")
    assert code == 2


def test_inspect_plot(run_dir, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "load.png"
    code, out, err = run_cli("inspect", run_dir, "--plot", str(png))
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_plot_without_matplotlib(run_dir, tmp_path, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code, _, err = run_cli("inspect", run_dir, "--plot", str(tmp_path / "x.png"))
    assert code == 1 and "pip install 'dsl[plot]'" in err


def test_inspect_never_imports_torch(run_dir) -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from dsl.cli import main\n"
        f"assert main(['inspect', {run_dir!r}]) == 0\n"
        f"assert main(['inspect', {run_dir!r}, '--json']) == 0\n"
        "print('IMPORTED:' + ','.join(m for m in ('torch', 'torch_geometric', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "IMPORTED:"


def test_ddp_sums_usage_over_ranks_and_prunes_alike(tmp_path) -> None:
    """Two gloo processes: the record counts both ranks' tokens; pruning masks agree."""
    spec = tmp_path / "m.dsl"
    text = SPEC.replace("CAP", "null").replace("    seed      = 0",
                                               "    seed      = 0\n    prune = magnitude(sparsity=0.5, end=1)")
    spec.write_text(text)
    out = str(tmp_path / "ddp")
    assert cmd_train(ns(file=str(spec), out=out, nproc=2, epochs=1)) == 0
    (record,) = RunDir(out).read_metrics()
    assert record["experts"]["z"]["tokens"] == 90  # 45 rows on each of the two ranks
    assert record["pruning"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    weights = RunDir(out).load_weights()[0]
    assert all("_orig" not in k and "_mask" not in k for k in weights)
