"""Smoke test of the benchmark harness: it runs, interleaves and writes a report.

Timings are never asserted (the machine is shared); only that the numbers and
the report exist and are shaped right.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # benchmarks/ is not installed with the project

from benchmarks import harness  # noqa: E402
from benchmarks.harness import Context, Row, Stats, interleave  # noqa: E402


def test_interleave_runs_round_robin() -> None:
    calls: list[str] = []
    stats = interleave(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        repeats=4, warmup=1, number=1,
    )
    assert set(stats) == {"a", "b"}
    assert all(len(s.samples) == 4 and s.number == 1 for s in stats.values())
    # warm-up a, b; then rounds alternate the starting contender: ab, ba, ab, ba
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]


def test_stats_quantiles() -> None:
    s = Stats.of([4.0, 1.0, 3.0, 2.0, 5.0])
    assert (s.median, s.min, s.max, s.q1, s.q3) == (3.0, 1.0, 5.0, 2.0, 4.0)
    with pytest.raises(ValueError):
        Stats.of([])


def test_report_has_ratios_targets_and_not_run_rows(tmp_path: Path) -> None:
    rows = [
        Row("case", "base", Stats.of([2.0, 2.0])),
        Row("case", "fast", Stats.of([1.0, 1.0]), baselines=["base"], target=1.1),
        Row("case", "slow", Stats.of([4.0, 4.0]), baselines=["base"], target=1.1),
        Row("case", "gpu", None, note="not run (no GPU)"),
    ]
    section = harness.Section("demo", "Demo", rows, 0.1, notes=["a note"])
    out = tmp_path / "RESULTS.md"
    text = harness.write_report(str(out), [section], Context(quick=True), "python -m benchmarks")
    assert out.read_text() == text
    assert "0.500× base (paired 0.500×) (of minima 0.500×) (target ≤ 1.1×: met)" in text
    assert "2.000× base (paired 2.000×) (of minima 2.000×) (target ≤ 1.1×: MISSED)" in text
    assert "not run (no GPU)" in text and "* a note" in text
    assert "python -m benchmarks" in text and "machine:" in text


def test_paired_ratio_cancels_load_shared_by_a_round() -> None:
    # Round 2 ran on a loaded machine: both samples doubled. The medians' ratio is
    # pulled off 1.2 by it; the per-round ratios are all 1.2.
    a = Stats.of([1.2, 2.4, 1.2, 2.4, 2.4])
    b = Stats.of([1.0, 2.0, 1.0, 2.0, 2.0])
    assert harness.paired_ratio(a, b) == pytest.approx(1.2)
    assert harness.paired_ratio(a, Stats.of([1.0])) is None
    assert harness.paired_ratio(Stats.of([1.0]), Stats.of([1.0])) is None


def test_target_is_judged_on_the_paired_ratio(tmp_path: Path) -> None:
    # Load hit both contenders in rounds 2 and 4, and only "dsl" in round 3: the medians'
    # ratio is 2.4 / 1.0, while four rounds of five have "dsl" at 1.2x the base.
    rows = [
        Row("case", "base", Stats.of([1.0, 2.0, 1.0, 2.0, 1.0])),
        Row("case", "dsl", Stats.of([1.2, 2.4, 2.4, 2.4, 1.2]), baselines=["base"], target=1.5),
    ]
    text = harness.render_section(harness.Section("demo", "Demo", rows, 0.1))
    assert "2.400× base (paired 1.200×)" in text and "(target ≤ 1.5×: met)" in text


def test_discovery_finds_every_benchmark() -> None:
    names = {harness.module_name(m) for m in harness.discover()}
    assert {"frontend", "model", "moe", "hopfield", "gat", "train", "memory"} <= names
    with pytest.raises(SystemExit):
        harness.discover(["no-such-benchmark"])


def test_a_failing_benchmark_is_reported_not_raised() -> None:
    class Broken:
        NAME = "broken"

        @staticmethod
        def run(ctx: Context) -> list[Row]:
            raise RuntimeError("boom")

    section = harness.run_module(Broken, Context())  # type: ignore[arg-type]
    assert section.error is not None and "boom" in section.error
    assert "**Failed:**" in harness.render_section(section)


def test_one_tiny_benchmark_quick(tmp_path: Path) -> None:
    """The front end's throughput part end to end: real rows from the real checker."""
    from benchmarks import bench_frontend

    ctx = Context(quick=True, repeats=2, warmup=0)
    spec = bench_frontend.chain_spec(5)
    assert spec.count("Linear(") == 3 and spec.count("relu(") == 2
    rows = bench_frontend.throughput_rows(ctx, sizes=[10, 40])
    assert {r.case for r in rows} == {"10 nodes", "40 nodes"}
    assert all(r.stats is not None and len(r.stats.samples) >= 2 for r in rows)
    section = harness.Section("frontend", "Front end", rows, 0.0, notes=ctx.notes)
    text = harness.write_report(str(tmp_path / "r.md"), [section], ctx, "python -m benchmarks --quick")
    assert "| 40 nodes | parse+resolve+check |" in text
    assert "µs/node" in text and "Cost per node" in text


def test_guards_benchmark_quick() -> None:
    """The guards benchmark reaches the model's guard through its public methods only."""
    from benchmarks import bench_guards

    ctx = Context(quick=True, repeats=2, warmup=0)
    rows = bench_guards.run(ctx)
    assert {r.case for r in rows} >= {"classifier, batch 8", "classifier, batch 256", "the guard alone, classifier"}
    assert any("the guard alone" in note and "per call" in note for note in ctx.notes)


def test_moe_target_part_has_the_package_readme_configuration() -> None:
    """The MoE target is judged at the mixture-of-experts package's README example (dim 512,
    16 experts, hidden 4·dim, top-2, 4,096 tokens): a full run has that part, with experts
    and a dense baseline of those widths (built small here)."""
    import torch

    from benchmarks import bench_moe

    assert "package-512" in bench_moe.parts(Context(quick=False))
    assert "package-512" not in bench_moe.parts(Context(quick=True))
    assert (bench_moe.PACKAGE_DIM, bench_moe.PACKAGE_HIDDEN) == (512, 2048)
    model = bench_moe.dsl_moe(4, 2, dim=16, hidden=48)
    experts = bench_moe._moe_module(model).experts
    assert [m.out_features for m in experts[0] if hasattr(m, "out_features")] == [48, 16]
    dense = bench_moe.dense_mlp(2, dim=16, hidden=48)
    assert [m.out_features for m in dense if isinstance(m, torch.nn.Linear)] == [96, 16]
    assert bench_moe.dense_mlp(2, dim=16)[0].out_features == 64  # default experts: MLP(hidden=2D)


def test_moe_grid_notes_compare_growth_with_e_against_the_experts_floor() -> None:
    from benchmarks import bench_moe

    # (MoE, router alone, floor) µs/token at E = 4, 16, 64
    per_token = {(4, 1): (3.0, 1.0, 1.0), (16, 1): (4.0, 1.5, 1.2), (64, 1): (6.0, 2.0, 1.5)}
    note = bench_moe._growth_note(64, 1, per_token)
    assert note.startswith("D=64, k=1: dsl MoE µs/token E=4: 3.00, E=16: 4.00, E=64: 6.00;")
    assert "(MoE − router alone) E=4: 2.00, E=16: 2.50, E=64: 4.00, ×2.00 from E=4 to E=64" in note
    assert note.endswith("floor E=4: 1.00, E=16: 1.20, E=64: 1.50, ×1.50.")
    step = bench_moe.experts_floor(4, 2, tokens=32, dim=8, device="cpu")
    step()  # forward+backward of [4, 16, 8] rows through stacked [4, 8, 16] and [4, 16, 8] weights
    step()  # gradients are cleared between steps, as for every contender


def test_main_writes_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m benchmarks --only ... --out ...` with a stand-in module (no real timing)."""
    import types

    from benchmarks import __main__ as cli

    fake = types.ModuleType("benchmarks.bench_fake")
    fake.run = lambda ctx: [Row("c", "x", Stats.of([1e-3]))]  # type: ignore[attr-defined]
    monkeypatch.setattr(cli, "discover", lambda only: [fake])
    out = tmp_path / "R.md"
    assert cli.main(["--quick", "--malloc", "default", "--isolation", "none", "--only", "fake",
                     "--out", str(out)]) == 0
    text = out.read_text()
    assert "| c | x | 1 ms |" in text and "--only fake" in text
    assert "isolation: every benchmark in one process" in text


def _fake_benchmark(monkeypatch: pytest.MonkeyPatch) -> Any:
    import types

    from benchmarks import __main__ as cli

    fake = types.ModuleType("benchmarks.bench_fake")
    fake.NAME = "fake"  # type: ignore[attr-defined]
    fake.run = lambda ctx: [Row("c", "x", Stats.of([1e-3, 2e-3]), per=2.0, per_unit="token",  # type: ignore[attr-defined]
                                note="a note")]
    monkeypatch.setattr(cli, "discover", lambda only: [fake])
    return cli


def test_each_benchmark_runs_in_a_fresh_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent runs `--child NAME` once per benchmark and reads its section back as JSON
    (here the child runs in this process, through a stand-in for subprocess.run)."""
    import subprocess

    cli = _fake_benchmark(monkeypatch)
    commands: list[list[str]] = []

    def child(cmd: list[str], cwd: str, check: bool) -> subprocess.CompletedProcess[bytes]:
        commands.append(cmd)
        assert cmd[1:3] == ["-m", "benchmarks"] and cli.main(cmd[3:]) == 0
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(cli.subprocess, "run", child)
    out = tmp_path / "R.md"
    assert cli.main(["--quick", "--malloc", "default", "--only", "fake", "--out", str(out)]) == 0
    assert len(commands) == 1 and commands[0][3:5] == ["--child", "fake"] and "--quick" in commands[0]
    text = out.read_text()
    assert "| c | x | 750 µs/token |" in text and "a note" in text  # median 1.5 ms over per=2
    assert "isolation: each benchmark (and each part of one, where it has parts) in a fresh Python process" in text


def test_each_part_of_a_benchmark_runs_in_a_fresh_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A benchmark with ``parts(ctx)`` runs as one `--child NAME --part P` per part; the
    section holds every part's rows in order and each note once. Without process
    isolation, one run covers every part."""
    import subprocess

    cli = _fake_benchmark(monkeypatch)
    fake = cli.discover(None)[0]
    fake.parts = lambda ctx: ["one", "two"]

    def run(ctx: Context) -> list[Row]:
        ctx.notes.append("shared note")
        return [Row(f"case {p}", "x", Stats.of([1e-3])) for p in ("one", "two") if ctx.wants(p)]

    fake.run = run
    commands: list[list[str]] = []

    def child(cmd: list[str], cwd: str, check: bool) -> subprocess.CompletedProcess[bytes]:
        commands.append(cmd)
        assert cli.main(cmd[3:]) == 0
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(cli.subprocess, "run", child)
    out = tmp_path / "R.md"
    assert cli.main(["--quick", "--malloc", "default", "--only", "fake", "--out", str(out)]) == 0
    assert [c[c.index("--part") + 1] for c in commands] == ["one", "two"]
    text = out.read_text()
    assert text.index("| case one | x |") < text.index("| case two | x |")
    assert text.count("shared note") == 1

    whole = tmp_path / "W.md"
    assert cli.main(["--quick", "--malloc", "default", "--isolation", "none", "--only", "fake",
                     "--out", str(whole)]) == 0
    assert len(commands) == 2 and "| case one | x |" in whole.read_text() and "| case two | x |" in whole.read_text()


def test_a_dead_part_is_the_sections_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    cli = _fake_benchmark(monkeypatch)
    cli.discover(None)[0].parts = lambda ctx: ["one", "two"]

    def child(cmd: list[str], cwd: str, check: bool) -> subprocess.CompletedProcess[bytes]:
        if cmd[cmd.index("--part") + 1] == "two":
            return subprocess.CompletedProcess(cmd, -9)
        assert cli.main(cmd[3:]) == 0
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(cli.subprocess, "run", child)
    out = tmp_path / "R.md"
    assert cli.main(["--malloc", "default", "--only", "fake", "--out", str(out)]) == 1
    text = out.read_text()
    assert "| c | x |" in text and "the process of its part 'two' exited with status -9" in text


def test_a_dead_benchmark_process_is_a_failed_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    cli = _fake_benchmark(monkeypatch)
    monkeypatch.setattr(cli.subprocess, "run", lambda cmd, cwd, check: subprocess.CompletedProcess(cmd, -9))
    out = tmp_path / "R.md"
    assert cli.main(["--malloc", "default", "--only", "fake", "--out", str(out)]) == 1
    assert "exited with status -9 and no results" in out.read_text()


def test_a_section_survives_its_json_round_trip() -> None:
    section = harness.Section("alpha", "Alpha", [Row("c", "x", Stats.of([1.0, 3.0], number=4), baselines=["y"],
                                                     target=1.5, limit=2.0, unit="B", per=2.0, per_unit="token"),
                                                 Row("c", "y", None, note="not run")],
                              0.5, notes=["n"], error=None)
    back = harness.section_from_dict(json.loads(json.dumps(harness.section_to_dict(section))))
    assert back == section


def test_cuda_without_gpu_marks_rows_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    class NeedsGpu:
        NAME = "gpu"

        @staticmethod
        def run(ctx: Context) -> list[Row]:
            raise AssertionError("must not run without a GPU")

    monkeypatch.setattr(Context, "cuda_available", lambda self: False)
    section = harness.run_module(NeedsGpu, Context(device="cuda"))  # type: ignore[arg-type]
    assert section.error is None
    assert [r.note for r in section.rows] == ["not run (no GPU)"]


def test_only_replaces_its_sections_and_keeps_the_rest(tmp_path: Path) -> None:
    ctx = Context(quick=True)
    first = [harness.Section("alpha", "Alpha", [Row("c", "x", Stats.of([1.0]))], 0.1),
             harness.Section("beta", "Beta", [Row("c", "y", Stats.of([2.0]))], 0.1)]
    out = tmp_path / "R.md"
    old = harness.write_report(str(out), first, ctx, "python -m benchmarks")
    assert set(harness.section_chunks(old)) == {"alpha", "beta"}
    rerun = [harness.Section("beta", "Beta", [Row("c", "y", Stats.of([3.0]))], 0.1)]
    kept = harness.kept_sections(old, ctx, ["beta"])
    assert set(kept) == {"alpha"}
    text = harness.write_report(str(out), rerun, ctx, "python -m benchmarks --only beta", kept=kept)
    chunks = harness.section_chunks(text)
    assert list(chunks) == ["alpha", "beta"]
    assert "| c | x | 1 s |" in chunks["alpha"] and "| c | y | 3 s |" in chunks["beta"]
    assert "`alpha` kept from earlier runs" in text
    # another setup (here: not --quick) must not mix its numbers with these
    assert harness.kept_sections(old, Context(quick=False), ["beta"]) == {}


def test_notes_are_replaced_without_touching_the_numbers(tmp_path: Path) -> None:
    section = harness.Section("alpha", "Alpha", [Row("c", "x", Stats.of([1.0]))], 0.1)
    text = harness.render_report([section], Context(), "python -m benchmarks", ["old notes", ""])
    new = harness.replace_notes(text, ["new notes", ""])
    assert new is not None and "new notes" in new and "old notes" not in new
    assert harness.section_chunks(new) == harness.section_chunks(text)
    assert harness.replace_notes("# no markers", ["x"]) is None


def test_moe_naive_contender_is_the_dense_mixture_of_the_same_experts() -> None:
    """With k = E and no noise (eval), the MoE and the naive all-experts MoE agree."""
    import torch

    from benchmarks import bench_moe

    moe = bench_moe._moe_module(bench_moe.dsl_moe(4, 4, dim=16)).eval()
    with torch.no_grad():
        moe.gate.w_gate.normal_()
    x = torch.randn(10, 16)
    naive = bench_moe._Naive(moe)
    torch.testing.assert_close(naive(x)[0], moe(x)[0], atol=1e-5, rtol=1e-5)
    assert len(list(naive.parameters())) == len(list(moe.parameters()))
