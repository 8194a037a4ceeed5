"""The benchmark harness: interleaved timing, rows, discovery and the report.

Usage (a benchmark module is ``benchmarks/bench_<name>.py``)::

    from benchmarks.harness import Context, Row, interleave

    NAME = "example"                      # optional; defaults to the module suffix
    TITLE = "What this measures"          # optional section heading

    def run(ctx: Context) -> list[Row]:
        stats = interleave(
            {"dsl": lambda: f(x), "torch": lambda: g(x)},
            repeats=ctx.repeats, warmup=ctx.warmup, sync=ctx.sync,
        )
        return [
            Row("forward, batch 8", "torch", stats["torch"]),
            Row("forward, batch 8", "dsl", stats["dsl"], baselines=["torch"], target=1.10),
        ]

* ``interleave`` runs the contenders round-robin (A, B, C, A, B, C, ...) after a
  warm-up, so slow drifts of a shared machine hit every contender alike. Each
  sample times ``number`` back-to-back calls (calibrated so one sample lasts at
  least ``min_time`` seconds) and :class:`Stats` holds the time *per call*.
* A :class:`Row` is one measured contender inside a group (``case``). Its
  ``baselines`` name other contenders of the same case; the report shows the
  ratio ``median / baseline median`` and checks it against ``target``.
  ``limit`` is an absolute bound on the median. ``unit="B"`` rows hold bytes instead of seconds; ``per``/``per_unit`` turn a
  time into e.g. µs per token. A row with ``stats=None`` is shown as not run,
  with its ``note`` (e.g. "not run (no GPU)").
* With ``--device cuda`` and no GPU, a module's rows read "not run (no GPU)",
  unless it sets ``DEVICE_INDEPENDENT = True`` (it measures the CPU-only front end).
* ``python -m benchmarks`` discovers every ``bench_*`` module by listing this
  package, calls ``run(ctx)``, and writes the report (:func:`write_report`). Each
  section is marked with its benchmark's name, so that ``--only`` can replace its
  own sections in an earlier report and keep the rest (:func:`kept_sections`).

This module imports neither torch nor the project, so it is cheap to import.
"""

from __future__ import annotations

import datetime as _dt
import gc
import importlib
import os
import pkgutil
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any

PACKAGE = "benchmarks"


# --------------------------------------------------------------------------- stats


@dataclass(frozen=True)
class Stats:
    """Summary of repeated measurements of one contender (seconds per call, or bytes)."""

    samples: tuple[float, ...]
    number: int = 1  # calls timed per sample

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    @property
    def q1(self) -> float:
        return _quantile(self.samples, 0.25)

    @property
    def q3(self) -> float:
        return _quantile(self.samples, 0.75)

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @classmethod
    def of(cls, values: Iterable[float], number: int = 1) -> Stats:
        """Stats over already measured values (e.g. peak bytes of several runs)."""
        vals = tuple(float(v) for v in values)
        if not vals:
            raise ValueError("Stats.of needs at least one value")
        return cls(vals, number)


def paired_ratio(a: Stats, b: Stats) -> float | None:
    """The median over rounds of a's sample / b's sample, for two contenders of one
    :func:`interleave` call (sample i of each was taken in round i, back to back).

    Load that comes and goes on a shared machine slows both samples of a round alike,
    so it cancels in their ratio; the ratio of the two medians only cancels it when
    it hits both contenders' samples in the same proportions. None when the samples
    cannot be paired (different counts, or a single sample)."""
    if len(a.samples) != len(b.samples) or len(a.samples) < 2 or min(b.samples) <= 0:
        return None
    return statistics.median(x / y for x, y in zip(a.samples, b.samples, strict=True))


def _quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), without numpy."""
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


# --------------------------------------------------------------------------- timing


def _time_calls(fn: Callable[[], object], number: int, sync: Callable[[], None] | None) -> float:
    """Seconds for ``number`` back-to-back calls of ``fn`` (synchronising the device once)."""
    if sync is not None:
        sync()
    start = time.perf_counter()
    for _ in range(number):
        fn()
    if sync is not None:
        sync()
    return time.perf_counter() - start


def calibrate(
    fn: Callable[[], object],
    min_time: float,
    sync: Callable[[], None] | None = None,
    max_number: int = 1_000_000,
) -> int:
    """Number of calls so that one sample lasts at least ``min_time`` seconds."""
    number = 1
    while number < max_number:
        t = _time_calls(fn, number, sync)
        if t >= min_time:
            return number
        # Grow towards the target with some margin, at least doubling.
        grow = int(min_time / max(t, 1e-9) * 1.2) + 1
        number = min(max_number, max(number * 2, grow))
    return number


def interleave(
    contenders: dict[str, Callable[[], object]],
    repeats: int = 15,
    warmup: int = 2,
    *,
    min_time: float = 0.02,
    number: int | dict[str, int] | None = None,
    sync: Callable[[], None] | None = None,
    gc_collect: bool = True,
) -> dict[str, Stats]:
    """Time contenders round-robin and return per-call :class:`Stats` by name.

    ``warmup`` untimed rounds run first (JIT, caches, allocator). ``number``
    fixes the calls per sample (one int for all, or a dict by name); ``None``
    calibrates each contender so a sample lasts at least ``min_time`` seconds.
    ``sync`` (e.g. ``torch.cuda.synchronize``) is called around every sample.
    The garbage collector is paused while timing, as ``timeit`` does.
    """
    if not contenders:
        return {}
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    names = list(contenders)
    for _ in range(max(0, warmup)):
        for name in names:
            contenders[name]()
    if isinstance(number, int):
        numbers = dict.fromkeys(names, number)
    elif isinstance(number, dict):
        numbers = {n: number.get(n) or calibrate(contenders[n], min_time, sync) for n in names}
    else:
        numbers = {n: calibrate(contenders[n], min_time, sync) for n in names}
    samples: dict[str, list[float]] = {n: [] for n in names}
    was_enabled = gc.isenabled()
    try:
        for r in range(repeats):
            # Rotate the starting contender so none always runs right after another.
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                if gc_collect:
                    gc.collect()
                gc.disable()
                try:
                    t = _time_calls(contenders[name], numbers[name], sync)
                finally:
                    if was_enabled:
                        gc.enable()
                samples[name].append(t / numbers[name])
    finally:
        if was_enabled:
            gc.enable()
    return {n: Stats(tuple(samples[n]), numbers[n]) for n in names}


# --------------------------------------------------------------------------- allocator

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's upper bound for M_MMAP_THRESHOLD on 64-bit


def steady_malloc() -> str:
    """Pin glibc's malloc so that timings do not depend on what ran before; describe it.

    By default glibc serves blocks above a threshold that adapts to past frees with
    fresh ``mmap``s, and returns the top of the heap to the system whenever enough of it
    is free. A step that allocates and frees the same large buffers then page-faults them
    in again on every call or not, depending on the allocator's history: a dense MLP step
    measured 400-500 page faults and 5.5-6.1 ms in one process, 51 and 5.1 ms in another
    (benchmarks/NOTES.md). Fixing the threshold at its maximum and never trimming keeps
    freed memory mapped, so every contender runs on warm pages, as a caching allocator
    (jemalloc, tcmalloc, CUDA's) would give it. The interpreter is not restarted;
    ``--malloc default`` keeps glibc's behaviour. Returns what was done, for the report."""
    import ctypes
    import ctypes.util

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "system default (not glibc)"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    ok = all(libc.mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX),
        (_M_TRIM_THRESHOLD, 2**31 - 1),
        (_M_TOP_PAD, 64 * 2**20),
    ))
    return "glibc, steady (mallopt: mmap threshold 32 MiB, no trimming)" if ok else "glibc default (mallopt failed)"


# --------------------------------------------------------------------------- rows


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@dataclass
class Row:
    """One contender of one case, as it appears in the report."""

    case: str  # what is measured, e.g. "forward+backward, batch 8"
    name: str  # the contender, e.g. "dsl", "hand-written"
    stats: Stats | None  # None: not run (see note)
    baselines: list[str] = field(default_factory=list)  # contender names of the same case
    target: float | None = None  # max ratio against the first baseline
    limit: float | None = None  # max median, in the row's unit (after ``per``)
    unit: str = "s"  # "s" (auto-scaled time), "B" (bytes, auto-scaled), or any label
    per: float = 1.0  # divide values by this (e.g. tokens) ...
    per_unit: str = ""  # ... and say so in the unit ("token")
    note: str = ""

    def value(self, x: float) -> float:
        return x / self.per


@dataclass
class Section:
    """The rows one benchmark module produced."""

    name: str
    title: str
    rows: list[Row]
    seconds: float
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    when: str = field(default_factory=utc_now)  # when it finished, for merged reports


def section_to_dict(section: Section) -> dict[str, Any]:
    """A section as plain JSON data (a benchmark run in a child process sends it back so)."""
    return asdict(section)


def section_from_dict(data: dict[str, Any]) -> Section:
    """The inverse of :func:`section_to_dict`."""
    rows = []
    for row in data["rows"]:
        stats = row["stats"]
        rows.append(Row(**{**row, "stats": None if stats is None else Stats(tuple(stats["samples"]), stats["number"])}))
    return Section(**{**data, "rows": rows})


# --------------------------------------------------------------------------- context


@dataclass
class Context:
    """What a benchmark's ``run`` receives."""

    quick: bool = False
    device: str = "cpu"
    repeats: int = 15
    warmup: int = 2
    threads: int | None = 1  # torch intra-op threads (None: torch's default)
    malloc: str = "system default"  # how the allocator was set up (see steady_malloc)
    isolation: str = "none"  # "process": each benchmark module ran in a fresh Python process
    notes: list[str] = field(default_factory=list)  # free text the module adds to its section
    part: str | None = None  # the one part of the module's parts() to run (None: all of them)

    def init_torch(self) -> Any:
        """Import torch with the context's thread count applied; return the module."""
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        return torch

    @property
    def sync(self) -> Callable[[], None] | None:
        """Device synchronisation for timing (None on CPU)."""
        if self.device.startswith("cuda"):
            import torch

            return torch.cuda.synchronize
        return None

    def pick(self, quick: Any, full: Any) -> Any:
        """``quick`` in --quick mode, ``full`` otherwise."""
        return quick if self.quick else full

    def wants(self, part: str) -> bool:
        """Whether this run covers ``part``, one of the module's ``parts(ctx)``."""
        return self.part is None or self.part == part

    def cuda_available(self) -> bool:
        try:
            import torch
        except ImportError:
            return False
        return bool(torch.cuda.is_available())


# --------------------------------------------------------------------------- discovery


def discover(only: Sequence[str] | None = None) -> list[ModuleType]:
    """Every ``bench_*`` module of the package (sorted), or those named in ``only``."""
    pkg = importlib.import_module(PACKAGE)
    names = sorted(
        m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name.startswith("bench_")
    )
    if only:
        wanted = {o.removeprefix("bench_") for o in only}
        unknown = wanted - {n.removeprefix("bench_") for n in names}
        if unknown:
            raise SystemExit(
                f"unknown benchmark(s): {', '.join(sorted(unknown))}; "
                f"known: {', '.join(n.removeprefix('bench_') for n in names)}"
            )
        names = [n for n in names if n.removeprefix("bench_") in wanted]
    return [importlib.import_module(f"{PACKAGE}.{n}") for n in names]


def module_name(module: ModuleType) -> str:
    return getattr(module, "NAME", module.__name__.rsplit(".", 1)[-1].removeprefix("bench_"))


def module_parts(module: ModuleType, ctx: Context) -> list[str]:
    """The parts a benchmark module splits into (its optional ``parts(ctx)``; none: one
    whole). With process isolation each part runs in a fresh process of its own, so
    that one part's heap and caches cannot change the next part's numbers either."""
    parts = getattr(module, "parts", None)
    return list(parts(ctx)) if parts is not None else []


def merge_sections(sections: Sequence[Section]) -> Section:
    """One section from the sections of a module's parts, in order: their rows, their
    notes (each once), their time, and every part's error. One section stays as it is."""
    if len(sections) == 1:
        return sections[0]
    first, last = sections[0], sections[-1]
    notes: list[str] = []
    for s in sections:
        notes += [n for n in s.notes if n not in notes]
    errors = [s.error for s in sections if s.error]
    return Section(first.name, first.title, [r for s in sections for r in s.rows],
                   sum(s.seconds for s in sections), notes, "\n".join(errors) if errors else None, last.when)


def run_module(module: ModuleType, ctx: Context) -> Section:
    """Run one benchmark module; an exception becomes the section's error, not a crash."""
    import traceback

    name = module_name(module)
    title = getattr(module, "TITLE", name)
    ctx.notes = []
    if (ctx.device.startswith("cuda") and not getattr(module, "DEVICE_INDEPENDENT", False)
            and not ctx.cuda_available()):
        return Section(name, title, [Row("every case", "—", None, note="not run (no GPU)")], 0.0)
    if "torch" in sys.modules and ctx.threads:
        sys.modules["torch"].set_num_threads(ctx.threads)  # a module may have changed it
    start = time.perf_counter()
    try:
        rows = list(module.run(ctx))
        error = None
    except Exception:  # a failing benchmark must not lose the others' results
        rows = []
        error = traceback.format_exc(limit=6)
    return Section(name, title, rows, time.perf_counter() - start, list(ctx.notes), error)


# --------------------------------------------------------------------------- formatting


def fmt_value(x: float, unit: str) -> str:
    """A value with a readable unit: 1.23 ms, 45.6 µs, 12.3 MiB."""
    if unit == "s":
        for scale, label in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")):
            if abs(x) >= scale or label == "ns":
                return f"{x / scale:.3g} {label}"
    if unit == "B":
        for scale, label in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"), (1, "B")):
            if abs(x) >= scale or label == "B":
                return f"{x / scale:.3g} {label}"
    return f"{x:.4g} {unit}".rstrip()


def _row_cells(row: Row, by_name: dict[str, Row]) -> list[str]:
    if row.stats is None:
        return [row.case, row.name, row.note or "not run", "", ""]
    s = row.stats
    med = fmt_value(row.value(s.median), row.unit)
    if row.per_unit:
        med += f"/{row.per_unit}"
    spread = (
        f"IQR {fmt_value(row.value(s.q1), row.unit)}–{fmt_value(row.value(s.q3), row.unit)}; "
        f"min–max {fmt_value(row.value(s.min), row.unit)}–{fmt_value(row.value(s.max), row.unit)}"
        if len(s.samples) > 1
        else "1 sample"
    )
    ratios = []
    if row.limit is not None:
        ok = row.value(s.median) <= row.limit
        ratios.append(f"limit ≤ {fmt_value(row.limit, row.unit)}: {'met' if ok else 'MISSED'}")
    for i, b in enumerate(row.baselines):
        base = by_name.get(b)
        if base is None or base.stats is None or base.stats.median == 0:
            ratios.append(f"vs {b}: n/a")
            continue
        ratio = (row.value(s.median)) / base.value(base.stats.median)
        text = f"{ratio:.3f}× {b}"
        paired = paired_ratio(s, base.stats) if row.unit != "B" else None
        if paired is not None:
            paired *= base.per / row.per
            text += f" (paired {paired:.3f}×)"
        if len(s.samples) > 1 and base.stats.min > 0:
            # Ratio of the fastest samples: on a busy machine the least disturbed ones.
            text += f" (of minima {row.value(s.min) / base.value(base.stats.min):.3f}×)"
        if i == 0 and row.target is not None:
            judged = ratio if paired is None else paired
            text += f" (target ≤ {row.target:g}×: {'met' if judged <= row.target else 'MISSED'})"
        ratios.append(text)
    note = row.note
    return [row.case, row.name, med, spread, "; ".join(ratios) + (f" — {note}" if note else "")]


def render_section(section: Section) -> str:
    lines = [f"## {section.title}", ""]
    lines.append(f"`--only {section.name}` · {section.seconds:.1f} s · {section.when}")
    lines.append("")
    if section.error:
        lines += ["**Failed:**", "", "```", section.error.rstrip(), "```", ""]
    if section.rows:
        lines.append("| case | contender | median | spread | ratio |")
        lines.append("|---|---|---|---|---|")
        by_case: dict[str, dict[str, Row]] = {}
        for row in section.rows:
            by_case.setdefault(row.case, {})[row.name] = row
        for row in section.rows:
            cells = _row_cells(row, by_case[row.case])
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    for note in section.notes:
        lines.append(f"* {note}")
    if section.notes:
        lines.append("")
    return "\n".join(lines)


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str:
    """An installed distribution's version, read from its metadata (no import)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def machine_lines(device: str) -> list[str]:
    """Machine and versions, one markdown bullet each."""
    lines = [
        f"* machine: {cpu_model()}, {os.cpu_count()} logical cores, {platform.system()} "
        f"{platform.release()}",
        f"* python {platform.python_version()}",
        f"* torch {_version('torch')}",
        f"* torch_geometric {_version('torch-geometric')}",
    ]
    if device.startswith("cuda"):
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none available"
        lines.append(f"* GPU: {gpu}")
    return lines


def settings_lines(ctx: Context) -> list[str]:
    """Machine, versions and run settings: what must match for sections to share a report."""
    return [
        *machine_lines(ctx.device),
        f"* device: {ctx.device}; torch threads: {ctx.threads or 'default'}; repeats: "
        f"{ctx.repeats}; warm-up rounds: {ctx.warmup}; quick: {ctx.quick}",
        f"* malloc: {ctx.malloc}",
        "* isolation: " + ("each benchmark (and each part of one, where it has parts) in a fresh "
                           "Python process" if ctx.isolation == "process"
                           else "every benchmark in one process"),
    ]


NOTES_MARK = "<!-- notes: benchmarks/NOTES.md -->"
_SECTION_PREFIX = "<!-- section: "
_SECTION_MARK = _SECTION_PREFIX + "{} -->"
_SECTION_SPLIT = re.compile("^" + re.escape(_SECTION_PREFIX) + r"([\w-]+) -->\n", re.MULTILINE)


def section_chunks(text: str) -> dict[str, str]:
    """The rendered sections of a report (:func:`render_report`), by benchmark name."""
    parts = _SECTION_SPLIT.split(text)
    return {name: chunk.rstrip() + "\n" for name, chunk in zip(parts[1::2], parts[2::2])}


def kept_sections(old_report: str, ctx: Context, replaced: Iterable[str]) -> dict[str, str]:
    """The sections of an earlier report that a partial run (``--only``) keeps: all but
    ``replaced``, and none when the earlier report has other machine, versions or settings
    (numbers from different setups must not share a table of ratios)."""
    if not set(settings_lines(ctx)) <= set(old_report.splitlines()):
        return {}
    skip = set(replaced)
    return {name: chunk for name, chunk in section_chunks(old_report).items() if name not in skip}


def replace_notes(report: str, preamble: Sequence[str]) -> str | None:
    """``report`` with its notes (the hand-written part between the header and the
    sections) replaced by ``preamble``; None if the report has no marked notes."""
    start = report.find(NOTES_MARK)
    end = report.find(_SECTION_PREFIX)
    if start < 0 or end < start:
        return None
    notes = "\n".join([NOTES_MARK, *preamble]).rstrip()
    return report[:start] + notes + "\n\n" + report[end:]


def render_report(
    sections: Sequence[Section],
    ctx: Context,
    command: str,
    preamble: Sequence[str] = (),
    kept: dict[str, str] | None = None,
) -> str:
    """The whole markdown report. ``kept``: rendered sections of an earlier run on the same
    machine and settings (:func:`kept_sections`), merged in by name."""
    now = utc_now()
    origin = f"Generated by `{command}` on {now}."
    if kept:
        origin = (f"Sections {', '.join(f'`{s.name}`' for s in sections)} regenerated by `{command}` "
                  f"on {now}; {', '.join(f'`{n}`' for n in sorted(kept))} kept from earlier runs "
                  "with the same machine, versions and settings (each section's first line gives "
                  "its time).")
    head = [
        "# Benchmark results",
        "",
        origin,
        "",
        *settings_lines(ctx),
        "",
        "Contenders of a case run interleaved (round-robin after warm-up); the median is per "
        "call, the spread is the interquartile range and min–max of the samples; the ratio "
        "is this median over the baseline's median. In brackets: *paired*, the median over "
        "rounds of the two contenders' ratio within a round (their samples are taken back to "
        "back, so load that comes and goes cancels), and *of minima*, the ratio of the two "
        "fastest samples. Targets on time are checked on the paired ratio (on the ratio of "
        "medians where samples cannot be paired, e.g. bytes).",
        "",
        NOTES_MARK,
        *preamble,
    ]
    chunks = dict(kept or {})
    chunks.update({s.name: render_section(s) for s in sections})
    body = [_SECTION_MARK.format(name) + "\n" + chunks[name].rstrip() + "\n" for name in sorted(chunks)]
    return "\n".join(head).rstrip() + "\n\n" + "\n".join(body).rstrip() + "\n"


def write_report(
    path: str,
    sections: Sequence[Section],
    ctx: Context,
    command: str,
    preamble: Sequence[str] = (),
    kept: dict[str, str] | None = None,
) -> str:
    """Render and write the report; return its text."""
    text = render_report(sections, ctx, command, preamble, kept)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return text


def command_line(argv: Sequence[str] | None = None) -> str:
    """How the benchmarks were invoked, for the report."""
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python -m benchmarks", *args])
