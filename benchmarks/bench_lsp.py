"""`dsl lsp`: how soon an editor sees diagnostics, hover and completion.

A client (pygls) speaks JSON-RPC over pipes to a ``dsl lsp`` process, as an
editor does, and times on its side:

* **diagnostics after a change**: from sending ``didChange`` (the whole text,
  alternately valid and with a shape error) to receiving the
  ``publishDiagnostics`` of that version, on a warm server, each change after a
  pause as between keystrokes (target ≤ 50 ms);
* **hover** on a name, and **completion** inside ``Linear(h, `` in a text that
  does not parse (targets ≤ 20 ms each);
* for reference, the check alone in this process (parse + analyse), the floor
  under the diagnostics' latency, in wall and in CPU time (on a shared machine
  the CPU time is what the check costs; the wall time is what other processes
  leave of it).

Two generated 200-line specs (:func:`spec_200`): a typical one (266 checked
nodes) with the targets, and a dense one (every stage a block call: 728 nodes)
for the worst case, without targets.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable

from benchmarks.harness import Context, Row, Stats

NAME = "lsp"
DEVICE_INDEPENDENT = True  # the front end never touches a device
TITLE = "Language server: diagnostics, hover and completion latency (`dsl lsp`)"

URI = "file:///tmp/dsl-bench-lsp/spec.dsl"
PAUSE = 0.1  # seconds between changes: longer than the server's 50 ms window, as between keystrokes


def spec_200(dense: bool = False) -> str:
    """A valid spec of 200 lines: params, two blocks, a model, a train section.

    Typical: a stack of 4 ``Stage`` blocks (attention and an MLP) then 38 short
    stages of plain layers, 1.3 checked nodes per line. Dense: every stage calls
    the ``Stage`` block (5.5 nodes per line), the worst a 200-line spec gets."""
    lines = [
        "# A generated 200-line spec for the language server's benchmark.",
        "param hidden = 32",
        "param heads = 4",
        "",
        "block Mlp(d: int, width: int = 64) {",
        "    input x: [..., d]",
        "    h = gelu(Linear(x, out=width))",
        "    y = Linear(Dropout(h, p=0.1), out=d)",
        "    output y",
        "}",
        "",
        "block Stage(d: int) {",
        "    input x: [B, T, d]",
        "    a = MultiheadAttention(x, heads=heads)",
        "    h = LayerNorm(x + a)",
        "    y = LayerNorm(h + Mlp(h, d=d))",
        "    output y",
        "}",
        "",
        "model Big(classes: int = 2) {",
        "    input x: [B, T, 64]",
        "    h = Linear(x, out=hidden)",
        "    repeat 4 { h = Stage(h, d=hidden) }",
    ]
    stage = 0
    while len(lines) < 188:
        step = (f"    s{stage} = Stage(h, d=hidden)" if dense else f"    s{stage} = gelu(Linear(h, out=hidden))")
        lines += [f"    # stage {stage}", step, f"    h = LayerNorm(h + Dropout(s{stage}, p=0.1))", ""]
        stage += 1
    lines += [
        "    logits = Linear(mean(h, dim=1), out=classes)",
        "    output logits: [B, classes]",
        "}",
        "",
        "train {",
        "    data = mil_bags(target=9)",
        "    loss = cross_entropy(logits, y)",
        "    epochs = 3",
        "}",
    ]
    while len(lines) < 200:
        lines.insert(1, "#")
    return "\n".join(lines) + "\n"


def _broken(text: str) -> str:
    """The same spec with a shape error in its last stage."""
    return text.replace("logits = Linear(mean(h, dim=1)", "logits = Linear(mean(h, dim=1) + h")


class _Session:
    """One client and its server process; diagnostics notifications are kept by (uri, version)."""

    def __init__(self) -> None:
        from lsprotocol import types
        from pygls.lsp.client import LanguageClient

        self.types = types
        self.client = LanguageClient("dsl-bench", "1")
        self.published: dict[tuple[str, int | None], float] = {}
        self.counts: dict[tuple[str, int | None], int] = {}

        @self.client.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def _diagnostics(params: types.PublishDiagnosticsParams) -> None:
            key = (params.uri, params.version)
            self.published[key] = time.perf_counter()
            self.counts[key] = len(params.diagnostics)

    async def start(self, text: str) -> None:
        t = self.types
        await self.client.start_io(sys.executable, "-m", "dsl.cli", "lsp")
        await self.client.initialize_async(t.InitializeParams(capabilities=t.ClientCapabilities()))
        self.client.initialized(t.InitializedParams())
        self.client.text_document_did_open(t.DidOpenTextDocumentParams(t.TextDocumentItem(URI, "dsl", 0, text)))
        await self.wait(0)

    async def wait(self, version: int) -> float:
        while (URI, version) not in self.published:
            await asyncio.sleep(0.0002)
        return self.published[(URI, version)]

    async def change(self, text: str, version: int) -> float:
        t = self.types
        start = time.perf_counter()
        self.client.text_document_did_change(t.DidChangeTextDocumentParams(
            t.VersionedTextDocumentIdentifier(version=version, uri=URI), [t.TextDocumentContentChangeWholeDocument(text)]))
        return await self.wait(version) - start

    async def stop(self) -> None:
        await self.client.shutdown_async(None)
        self.client.exit(None)
        await self.client.stop()


async def _timed(call: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await call()
    return time.perf_counter() - start


def _position(text: str, needle: str, offset: int) -> tuple[int, int]:
    at = text.index(needle) + offset
    return text.count("\n", 0, at), at - (text.rfind("\n", 0, at) + 1)


async def _measure(text: str, repeats: int) -> dict[str, list[float]]:
    session = _Session()
    t = session.types
    await session.start(text)
    doc = t.TextDocumentIdentifier(URI)
    hover_at = t.Position(*_position(text, "h = LayerNorm(h + Dropout(s3", 0))
    partial = text.replace("logits = Linear(mean(h, dim=1), out=classes)", "logits = Linear(h, ")
    complete_at = t.Position(*_position(partial, "Linear(h, ", len("Linear(h, ")))
    times: dict[str, list[float]] = {"diagnostics": [], "hover": [], "completion": []}
    version = 0
    for i in range(repeats + 3):  # the first rounds warm the server up
        await asyncio.sleep(PAUSE)
        version += 1
        latency = await session.change(_broken(text) if version % 2 else text, version)
        if session.counts[(URI, version)] != version % 2:
            raise RuntimeError(f"version {version}: {session.counts[(URI, version)]} diagnostics")
        hover = await _timed(lambda: session.client.text_document_hover_async(t.HoverParams(doc, hover_at)))
        await asyncio.sleep(PAUSE)
        version += 1
        await session.change(partial, version)
        complete = await _timed(lambda: session.client.text_document_completion_async(
            t.CompletionParams(doc, complete_at)))
        if i >= 3:
            times["diagnostics"].append(latency)
            times["hover"].append(hover)
            times["completion"].append(complete)
    await session.stop()
    return times


def _check_in_process(text: str, repeats: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of parse + analyse here: the CPU time is what the check costs
    whatever else the machine runs."""
    from dsl.checking.analysis import analyse
    from dsl.language.source import loads

    wall, cpu = [], []
    for _ in range(repeats + 2):
        start, start_cpu = time.perf_counter(), time.process_time()
        analyse(loads(text, "dsl", file="/tmp/dsl-bench-lsp/spec.dsl"))
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall[2:], cpu[2:]


def run(ctx: Context) -> list[Row]:
    repeats = ctx.pick(10, max(30, ctx.repeats))
    rows: list[Row] = []
    for dense in (False, True):
        text = spec_200(dense)
        times = asyncio.run(_measure(text, repeats))
        wall, cpu = _check_in_process(text, repeats)
        case = f"200-line spec, {'dense' if dense else 'typical'}, warm server"
        limits = {"diagnostics": 0.050, "hover": 0.020, "completion": 0.020} if not dense else {}
        rows += [
            Row(case, "diagnostics after a change", Stats.of(times["diagnostics"]), limit=limits.get("diagnostics")),
            Row(case, "hover", Stats.of(times["hover"]), limit=limits.get("hover")),
            Row(case, "completion", Stats.of(times["completion"]), limit=limits.get("completion")),
            Row(case, "the check alone, in process (parse + analyse)", Stats.of(wall)),
            Row(case, "the check alone, its CPU time", Stats.of(cpu)),
        ]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    ctx.notes.append(
        f"Latencies are measured by the client, across the pipes, as an editor sees them, each change "
        f"after a {PAUSE * 1000:.0f} ms pause (typing); load average {load:.1f} on {os.cpu_count()} CPUs "
        "at the end (other processes compete for the CPU when it exceeds the CPU count).")
    return rows
