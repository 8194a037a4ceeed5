"""``python -m benchmarks``: run every benchmark and write benchmarks/RESULTS.md.

``--only NAME...`` reruns some benchmarks and replaces their sections in the existing
report, keeping the others when it was written with the same machine, versions and
settings (otherwise the report holds only the new sections). ``--notes`` puts the
current benchmarks/NOTES.md into the report without running anything. Each benchmark
runs in a fresh Python process, and so does each part of a benchmark that has parts
(``--isolation none``: all in this one), so that the heap, caches and threads one
leaves behind cannot change the next one's numbers, and a full run and ``--only``
measure the same thing."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from types import ModuleType

from benchmarks.harness import (
    Context,
    Section,
    command_line,
    discover,
    kept_sections,
    merge_sections,
    module_name,
    module_parts,
    render_section,
    replace_notes,
    run_module,
    section_chunks,
    section_from_dict,
    section_to_dict,
    steady_malloc,
    write_report,
)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "RESULTS.md")
PREAMBLE_FILE = os.path.join(HERE, "NOTES.md")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    p.add_argument("--quick", action="store_true", help="small sizes and few repeats")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where tensors live")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds per case")
    p.add_argument("--warmup", type=int, default=None, help="untimed rounds before timing")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: stable on a shared machine; 0: torch's default)")
    p.add_argument("--malloc", choices=["steady", "default"], default="steady",
                   help="steady (default): pin glibc's malloc so timings do not depend on what ran "
                        "before; default: leave it as it is")
    p.add_argument("--isolation", choices=["process", "none"], default="process",
                   help="process (default): each benchmark (each part of one) in a fresh Python process, so that what "
                        "one leaves behind (heap, caches) cannot slow the next; none: all in this one")
    p.add_argument("--out", default=DEFAULT_OUT, help="report file (markdown)")
    # internal: run one benchmark (in a child process) and write its section as JSON
    p.add_argument("--child", metavar="NAME", help=argparse.SUPPRESS)
    p.add_argument("--part", help=argparse.SUPPRESS)  # internal: with --child, one part of it
    p.add_argument("--section-json", metavar="PATH", help=argparse.SUPPRESS)
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument("--notes", action="store_true",
                   help="only rewrite the report's notes from benchmarks/NOTES.md (runs nothing)")
    return p.parse_args(argv)


def preamble() -> list[str]:
    """Hand-written context kept next to the numbers (profiling notes, before/after)."""
    if not os.path.exists(PREAMBLE_FILE):
        return []
    with open(PREAMBLE_FILE, encoding="utf-8") as f:
        return [f.read().rstrip(), ""]


def earlier_sections(path: str, ctx: Context, sections: Sequence[Section]) -> dict[str, str]:
    """With ``--only``: the other sections of the report already at ``path``, so that
    rerunning one benchmark updates its section and keeps the rest."""
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        old = f.read()
    kept = kept_sections(old, ctx, [s.name for s in sections])
    if not kept and section_chunks(old):
        print(f"[benchmarks] {path} was written on another machine, versions or settings: "
              "its other sections are dropped", file=sys.stderr)
    return kept


def refresh_notes(path: str) -> int:
    """``--notes``: put the current benchmarks/NOTES.md into the report at ``path``."""
    try:
        with open(path, encoding="utf-8") as f:
            text = replace_notes(f.read(), preamble())
    except OSError as exc:
        print(f"[benchmarks] cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 1
    if text is None:
        print(f"[benchmarks] {path} has no marked notes: run the benchmarks to rewrite it",
              file=sys.stderr)
        return 1
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"[benchmarks] notes of {path} rewritten", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.notes:
        return refresh_notes(args.out)
    modules = discover([args.child] if args.child else args.only)
    if args.list:
        for m in modules:
            print(f"{module_name(m):12} {getattr(m, 'TITLE', '')}")
        return 0
    args.repeats = args.repeats or (5 if args.quick else 15)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    if args.threads:
        # Before torch is imported, so that its thread pools (and subprocesses') agree.
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        os.environ["MKL_NUM_THREADS"] = str(args.threads)
    malloc = steady_malloc() if args.malloc == "steady" else "system default"
    ctx = Context(quick=args.quick, device=args.device, repeats=args.repeats, warmup=args.warmup,
                  threads=args.threads or None, malloc=malloc,
                  isolation="none" if args.child else args.isolation, part=args.part)
    if args.child:
        return run_child(modules[0], ctx, args.section_json)
    sections = []
    for m in modules:
        name = module_name(m)
        print(f"[benchmarks] {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        if args.isolation == "process":
            section = merge_sections([run_in_child(m, args, part) for part in module_parts(m, ctx) or [None]])
        else:
            section = run_module(m, ctx)
            print(render_section(section), flush=True)
        sections.append(section)
        status = "FAILED" if section.error else "done"
        print(f"[benchmarks] {name} {status} in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr, flush=True)
    kept = earlier_sections(args.out, ctx, sections) if args.only else {}
    write_report(args.out, sections, ctx, command_line(argv), preamble(), kept)
    print(f"[benchmarks] wrote {args.out}", file=sys.stderr)
    return 1 if any(s.error for s in sections) else 0


def run_child(module: ModuleType, ctx: Context, path: str | None) -> int:
    """``--child NAME``: run one benchmark, print its section, write it as JSON to ``path``."""
    section = run_module(module, ctx)
    print(render_section(section), flush=True)
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(section_to_dict(section), f)
    return 0


def child_command(name: str, args: argparse.Namespace, path: str, part: str | None = None) -> list[str]:
    """The command line that runs benchmark ``name`` (or one part of it) alone, with this
    run's settings."""
    cmd = [sys.executable, "-m", "benchmarks", "--child", name, "--section-json", path,
           "--device", args.device, "--repeats", str(args.repeats), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--malloc", args.malloc]
    return cmd + (["--quick"] if args.quick else []) + (["--part", part] if part is not None else [])


def run_in_child(module: ModuleType, args: argparse.Namespace, part: str | None = None) -> Section:
    """Run one benchmark (or one part of it) in a fresh Python process and read back its
    section; a process that dies (a crash, the OOM killer) becomes the section's error."""
    name = module_name(module)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dsl-bench-") as tmp:
        path = os.path.join(tmp, "section.json")
        done = subprocess.run(child_command(name, args, path, part), cwd=os.path.dirname(HERE), check=False)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                return section_from_dict(json.load(f))
    what = "the benchmark's process" if part is None else f"the process of its part {part!r}"
    return Section(name, getattr(module, "TITLE", name), [], time.perf_counter() - start,
                   error=f"{what} exited with status {done.returncode} and no results")


if __name__ == "__main__":
    raise SystemExit(main())
