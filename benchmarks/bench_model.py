"""Compiled models: forward+backward of example specs against the same networks by hand.

Targets: ≤ 1.03× the hand-written PyTorch module at batch 256, ≤ 1.10× at batch 8
(where per-call overhead shows). ``dsl.compile`` installs runtime input guards by
default; a second dsl contender compiles with ``guards=False`` to separate their cost. Then the ``torch.compile`` speed-up of each
compiled spec (eager GraphModule vs ``torch.compile(model)``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from benchmarks.harness import Context, Row, interleave

NAME = "model"
TITLE = "Compiled model vs hand-written PyTorch (forward+backward)"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEQ_LEN = 16
SIAMESE_F = 32


def _spec(name: str) -> str:
    return os.path.join(ROOT, "specs", f"{name}.dsl")


def hand_classifier() -> Any:
    from torch import nn

    return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def hand_sequence() -> Any:
    import torch
    from torch import nn

    class Layer(nn.Module):
        def __init__(self, d: int, heads: int = 4):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q = self.ln1(x)
            x = x + self.attn(q, q, q, need_weights=False)[0]
            return x + self.mlp(self.ln2(x))

    class Encoder(nn.Module):
        def __init__(self, vocab: int = 100, dim: int = 32, classes: int = 5, layers: int = 2):
            super().__init__()
            self.emb = nn.Embedding(vocab, dim)
            self.layers = nn.ModuleList(Layer(dim) for _ in range(layers))
            self.head = nn.Linear(dim, classes)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            h = self.emb(tokens)
            for layer in self.layers:
                h = layer(h)
            return self.head(h.mean(dim=1))

    return Encoder()


def hand_siamese() -> Any:
    import torch
    from torch import nn

    class Siamese(nn.Module):
        def __init__(self, f: int = SIAMESE_F, width: int = 32):
            super().__init__()
            self.enc = nn.Sequential(nn.Linear(f, 64), nn.GELU(), nn.Linear(64, width))

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
            za, zb = self.enc(a), self.enc(b)
            return {"score": (za * zb).sum(dim=-1), "za": za}

    return Siamese()


def inputs(name: str, batch: int, device: str) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(0)
    if name == "classifier":
        return {"x": torch.randn(batch, 64, generator=g).to(device)}
    if name == "sequence":
        return {"tokens": torch.randint(0, 100, (batch, SEQ_LEN), generator=g).to(device)}
    if name == "siamese":
        return {"a": torch.randn(batch, SIAMESE_F, generator=g).to(device),
                "b": torch.randn(batch, SIAMESE_F, generator=g).to(device)}
    raise KeyError(name)


HAND: dict[str, Callable[[], Any]] = {
    "classifier": hand_classifier,
    "sequence": hand_sequence,
    "siamese": hand_siamese,
}
DIMS = {"siamese": {"F": SIAMESE_F}}


def compiled(name: str, guards: bool = True) -> Any:
    import dsl

    return dsl.compile(_spec(name), dims=DIMS.get(name), guards=guards)


def _loss(out: Any) -> Any:
    if isinstance(out, dict):
        return sum(v.float().sum() for v in out.values())
    return out.float().sum()


def step_fn(model: Any, feed: dict[str, Any], positional: bool) -> Callable[[], object]:
    """One forward+backward; gradients are dropped (set to None) as an optimiser would."""
    args = list(feed.values())

    def step() -> object:
        out = model(*args) if positional else model(**feed)
        _loss(out).backward()
        for p in model.parameters():
            p.grad = None
        return None

    return step


def eager_rows(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    for name in HAND:
        for batch in (256, 8):
            dsl_model = compiled(name).to(ctx.device)
            unguarded = compiled(name, guards=False).to(ctx.device)
            hand = HAND[name]().to(ctx.device)
            feed = inputs(name, batch, ctx.device)
            stats = interleave(
                {"hand-written": step_fn(hand, feed, positional=True),
                 "dsl": step_fn(dsl_model, feed, positional=False),
                 "dsl, guards=False": step_fn(unguarded, feed, positional=False)},
                # A step is 0.1-0.4 ms, so a sample is a fraction of a second and the machine's
                # slower drifts (±1%) reach the paired ratio, whose target margin is 3%: three
                # times the usual rounds steady its median (as the training-loop benchmark does).
                repeats=3 * ctx.repeats, warmup=ctx.warmup + 2, sync=ctx.sync,
                min_time=ctx.pick(0.01, 0.05),
            )
            case = f"{name}, batch {batch}"
            target = 1.03 if batch == 256 else 1.10
            rows += [
                Row(case, "hand-written", stats["hand-written"]),
                Row(case, "dsl", stats["dsl"], baselines=["hand-written"], target=target,
                    note="default: runtime input guards on"),
                Row(case, "dsl, guards=False", stats["dsl, guards=False"],
                    baselines=["hand-written"], target=target),
            ]
    return rows


def torch_compile_rows(ctx: Context) -> list[Row]:
    import torch

    names = ctx.pick(["classifier"], list(HAND))
    rows: list[Row] = []
    for name in names:
        model = compiled(name).to(ctx.device)
        try:
            fast = torch.compile(model)
            feed = inputs(name, 256, ctx.device)
            step_fn(fast, feed, positional=False)()  # compile outside the timed region
        except Exception as exc:  # noqa: BLE001 - a compiler failure is a result to report
            rows.append(Row(f"{name}, batch 256", "torch.compile", None,
                            note=f"failed: {type(exc).__name__}: {str(exc)[:120]}"))
            continue
        stats = interleave(
            {"eager": step_fn(model, feed, positional=False),
             "torch.compile": step_fn(fast, feed, positional=False)},
            repeats=ctx.repeats, warmup=ctx.warmup + 2, sync=ctx.sync, min_time=ctx.pick(0.01, 0.05),
        )
        case = f"torch.compile: {name}, batch 256"
        rows += [
            Row(case, "eager", stats["eager"]),
            Row(case, "torch.compile", stats["torch.compile"], baselines=["eager"]),
        ]
        speedup = stats["eager"].median / stats["torch.compile"].median
        ctx.notes.append(f"`torch.compile` speed-up on {name}: {speedup:.2f}×.")
    if ctx.quick:
        ctx.notes.append("--quick: torch.compile measured on classifier only.")
    return rows


def run(ctx: Context) -> list[Row]:
    ctx.init_torch()
    return eager_rows(ctx) + torch_compile_rows(ctx)
