"""Memory: peak of ``dsl.compile`` + one training step against the hand-written equivalent.

Each measurement runs in a fresh interpreter (so peaks do not mix): on CPU the
peak resident set size of the child (``VmHWM``; ``ru_maxrss`` is not used on
Linux since it can carry the peak of the parent that forked it), and ``tracemalloc``'s peak
of allocations made after ``import torch``; on CUDA ``torch.cuda.max_memory_allocated``. A
child that only imports torch gives the floor that every contender pays.
Model: ``specs/sequence.dsl`` (batch 256, 16 tokens) and its hand-written twin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from benchmarks.harness import Context, Row, Stats

NAME = "memory"
TITLE = "Memory: compile + one training step"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, resource, sys, tracemalloc
mode, device, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
import torch
tracemalloc.start()  # after torch: tracing its import would take minutes
if mode != "import torch":
    from benchmarks.bench_model import compiled, hand_sequence, inputs, step_fn
    if mode == "dsl":
        model = compiled("sequence").to(device)
    else:
        model = hand_sequence().to(device)
    opt = torch.optim.Adam(model.parameters())
    feed = inputs("sequence", batch, device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    step_fn(model, feed, positional=(mode == "hand-written"))()
    opt.step()
_, py_peak = tracemalloc.get_traced_memory()
try:  # VmHWM: this process's own peak; ru_maxrss can carry the forking parent's
    with open("/proc/self/status") as f:
        rss = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
except (OSError, StopIteration):
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
cuda = torch.cuda.max_memory_allocated() if device.startswith("cuda") else 0
print(json.dumps({"rss": rss, "py_peak": py_peak, "cuda": cuda}))
"""

MODES = ("import torch", "hand-written", "dsl")


def measure(mode: str, device: str, batch: int) -> dict[str, int]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", CHILD, mode, device, str(batch)], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"memory child ({mode}) failed: {done.stderr[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(ctx: Context) -> list[Row]:
    batch = 256
    rounds = ctx.pick(2, 3)
    results: dict[str, list[dict[str, int]]] = {m: [] for m in MODES}
    for _ in range(rounds):  # interleaved, like the timings
        for mode in MODES:
            results[mode].append(measure(mode, ctx.device, batch))
    rows: list[Row] = []
    case = f"peak RSS, sequence.dsl, batch {batch}"
    for mode in MODES:
        rows.append(Row(case, mode, Stats.of(r["rss"] for r in results[mode]), unit="B",
                        baselines=["hand-written"] if mode == "dsl" else []))
    case = "tracemalloc peak after import torch"
    for mode in MODES:
        rows.append(Row(case, mode, Stats.of(r["py_peak"] for r in results[mode]), unit="B",
                        baselines=["hand-written"] if mode == "dsl" else []))
    if ctx.device.startswith("cuda"):
        case = "torch.cuda.max_memory_allocated"
        for mode in MODES[1:]:
            rows.append(Row(case, mode, Stats.of(r["cuda"] for r in results[mode]), unit="B",
                            baselines=["hand-written"] if mode == "dsl" else []))
    else:
        rows.append(Row("torch.cuda.max_memory_allocated", "dsl", None, note="not run (no GPU)"))

    def med(mode: str, key: str) -> float:
        return Stats.of(r[key] for r in results[mode]).median

    floor = med("import torch", "rss")
    ctx.notes.append(
        f"Above the `import torch` floor: hand-written +{(med('hand-written', 'rss') - floor) / 2**20:.0f} MiB, "
        f"dsl +{(med('dsl', 'rss') - floor) / 2**20:.0f} MiB (the dsl figure includes importing "
        "pydantic, lark and the block registry)."
    )
    return rows
