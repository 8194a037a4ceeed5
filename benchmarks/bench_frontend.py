"""Front end: ``dsl check`` start-up against bare Python, and checker throughput.

* Wall time of ``dsl check specs/classifier.dsl`` in a fresh interpreter, interleaved
  with ``python -c pass`` and ``python -c "import torch"`` (targets: within 0.3 s of
  bare Python, far under ``import torch``). Bytecode caching is on (into a scratch
  ``PYTHONPYCACHEPREFIX``), as after a normal install, even where the caller's
  environment sets ``PYTHONDONTWRITEBYTECODE``.
* Parse, then resolve + check, of generated chains of 100, 1,000 and 10,000
  ``Linear``/``relu`` statements (targets: linear growth, 1,000 nodes < 0.5 s).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable

from benchmarks.harness import Context, Row, Stats, interleave

NAME = "frontend"
DEVICE_INDEPENDENT = True  # the front end never touches a device
TITLE = "Front end: `dsl check` start-up and checker throughput"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_SPEC = os.path.join(ROOT, "specs", "classifier.dsl")


def chain_spec(nodes: int, width: int = 16) -> str:
    """A valid spec of ``nodes`` statements alternating ``Linear`` and ``relu``."""
    lines = ["model Chain {", f"    input x: [B, {width}]", f"    h = Linear(x, out={width})"]
    for i in range(1, nodes):
        lines.append("    h = relu(h)" if i % 2 else f"    h = Linear(h, out={width})")
    lines += [f"    output h: [B, {width}]", "}", ""]
    return "\n".join(lines)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(tempfile.gettempdir(), "dsl-bench-pycache")
    return env


def _dsl_command() -> list[str]:
    """The installed ``dsl`` script next to this interpreter, else ``python -m dsl.cli``."""
    script = os.path.join(os.path.dirname(sys.executable), "dsl")
    if os.path.exists(script) or shutil.which("dsl") == script:
        return [script]
    return [sys.executable, "-m", "dsl.cli"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _subprocess(cmd: list[str], env: dict[str, str], cpu: list[float]) -> Callable[[], object]:
    """Run ``cmd``; append the CPU seconds (user+sys) it used to ``cpu``.

    CPU time is far less sensitive than wall time to other processes on a busy
    machine, so it is reported next to the wall time.
    """

    def run() -> object:
        before = _children_cpu()
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True)
        cpu.append(_children_cpu() - before)
        if done.returncode != 0:
            raise RuntimeError(f"{cmd} failed: {done.stderr.decode(errors='replace')[-500:]}")
        return done

    return run


def startup_rows(ctx: Context) -> list[Row]:
    env = _env()
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "dsl check classifier.dsl": [*_dsl_command(), "check", SMALL_SPEC],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
    }
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    contenders = {name: _subprocess(cmd, env, cpu[name]) for name, cmd in commands.items()}
    repeats = ctx.pick(max(3, ctx.repeats), max(5, min(ctx.repeats, 12)))
    stats = interleave(contenders, repeats=repeats, warmup=1, number=1)
    cpu_stats = {name: Stats.of(times[-repeats:]) for name, times in cpu.items()}  # no warm-up
    rows: list[Row] = []
    for case, table in (("wall time of a fresh process", stats),
                        ("CPU time (user+sys) of the same runs", cpu_stats)):
        gap = table["dsl check classifier.dsl"].median - table["python -c pass"].median
        ctx.notes.append(
            f"{case}: `dsl check` − `python -c pass` = {gap:.3f} s (target ≤ 0.3 s: "
            f"{'met' if gap <= 0.3 else 'MISSED'})."
        )
        rows += [
            Row(case, "python -c pass", table["python -c pass"]),
            Row(case, "dsl check classifier.dsl", table["dsl check classifier.dsl"],
                baselines=["python -c pass", 'python -c "import torch"']),
            Row(case, 'python -c "import torch"', table['python -c "import torch"'],
                baselines=["python -c pass"]),
        ]
    return rows


def throughput_rows(ctx: Context, sizes: list[int] | None = None) -> list[Row]:
    from dsl.api import analyse, loads

    def parse(text: str) -> object:
        return loads(text)

    def check(spec: object) -> object:
        analysis = analyse(spec)  # type: ignore[arg-type]
        prog, diags = analysis.program, analysis.diagnostics
        errors = [d for d in diags if d.severity == "error"]
        if errors:
            raise RuntimeError(f"generated spec does not check: {errors[0]}")
        return prog

    sizes = sizes or ctx.pick([100, 1000], [100, 1000, 10000])
    rows: list[Row] = []
    per_node: dict[int, float] = {}
    for n in sizes:
        text = chain_spec(n)
        spec = loads(text)
        repeats = max(3, ctx.repeats // (4 if n >= 10000 else 1))
        stats = interleave(
            {"parse": lambda t=text: parse(t), "resolve+check": lambda s=spec: check(s),
             "parse+resolve+check": lambda t=text: check(parse(t))},
            repeats=repeats, warmup=1, number=1,
        )
        case = f"{n:,} nodes"
        rows += [
            Row(case, "parse", stats["parse"], per=n, per_unit="node"),
            Row(case, "resolve+check", stats["resolve+check"], per=n, per_unit="node"),
            Row(case, "parse+resolve+check", stats["parse+resolve+check"],
                limit=0.5 if n == 1000 else None),
        ]
        per_node[n] = stats["parse+resolve+check"].median / n
    base = per_node[sizes[0]]
    growth = ", ".join(f"{n:,}: {per_node[n] * 1e6:.0f} µs/node ({per_node[n] / base:.2f}×)"
                       for n in sizes)
    ctx.notes.append(f"Cost per node of parse+resolve+check (linear growth = flat): {growth}.")
    return rows


def run(ctx: Context) -> list[Row]:
    return startup_rows(ctx) + throughput_rows(ctx)

