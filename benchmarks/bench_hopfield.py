"""Hopfield blocks: forward+backward against scaled dot-product attention.

* One-step ``Hopfield`` (compiled from a spec) against the same LayerNorms and
  projections written by hand around ``F.scaled_dot_product_attention``
  (target ≤ 1.1×).
* Cost against ``steps`` (update iterations before retrieval; the notes give the
  iterations actually run, since iteration stops early once converged).
* ``HopfieldPooling`` on variable-size bags: one masked call on bags padded to
  the largest, against the same instances without padding (bags of the mean
  size: the padding waste) and a loop over the bags one by one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.harness import Context, Row, interleave

NAME = "hopfield"
TITLE = "Hopfield: against scaled dot-product attention; steps; masked bags"

DIM, HEADS = 64, 4

SPEC = """
model H {{
    input x: [B, L, {dim}]
    y = Hopfield(x, heads={heads})
    output y
}}
"""


def hand_attention() -> Any:
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Attention(nn.Module):
        """LayerNorm(state/stored/values) + q/k/v/out projections + SDPA: the one-step Hopfield."""

        def __init__(self) -> None:
            super().__init__()
            self.ln_q, self.ln_k, self.ln_v = nn.LayerNorm(DIM), nn.LayerNorm(DIM), nn.LayerNorm(DIM)
            self.q, self.k, self.v = nn.Linear(DIM, DIM), nn.Linear(DIM, DIM), nn.Linear(DIM, DIM)
            self.o = nn.Linear(DIM, DIM)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            def split(t: torch.Tensor) -> torch.Tensor:
                return t.unflatten(-1, (HEADS, -1)).transpose(1, 2)

            q, k, v = split(self.q(self.ln_q(x))), split(self.k(self.ln_k(x))), split(self.v(self.ln_v(x)))
            o = F.scaled_dot_product_attention(q, k, v, scale=(DIM // HEADS) ** -0.5)
            return self.o(o.transpose(1, 2).flatten(2))

    return Attention()


def _step(model: Any, *args: Any, **kwargs: Any) -> Callable[[], object]:
    def step() -> object:
        model(*args, **kwargs).sum().backward()
        for p in model.parameters():
            p.grad = None
        return None

    return step


def one_step_rows(ctx: Context, torch: Any) -> list[Row]:
    import dsl

    rows: list[Row] = []
    batch, length = ctx.pick(8, 32), 128
    x = torch.randn(batch, length, DIM).to(ctx.device)
    model = dsl.compile(dsl.loads(SPEC.format(dim=DIM, heads=HEADS))).to(ctx.device)
    hand = hand_attention().to(ctx.device)
    stats = interleave({"SDPA + same projections": _step(hand, x), "dsl Hopfield": _step(model, x=x)},
                       repeats=ctx.repeats, warmup=ctx.warmup, sync=ctx.sync,
                       min_time=ctx.pick(0.01, 0.05))
    case = f"one step, B={batch}, L=S={length}, D={DIM}, heads={HEADS}"
    rows += [
        Row(case, "SDPA + same projections", stats["SDPA + same projections"]),
        Row(case, "dsl Hopfield", stats["dsl Hopfield"], baselines=["SDPA + same projections"],
            target=1.1),
    ]
    return rows


def steps_rows(ctx: Context, torch: Any) -> list[Row]:
    from dsl.blocks.nn.hopfield import Hopfield

    batch, length = ctx.pick(8, 32), 128
    x = torch.randn(batch, length, DIM).to(ctx.device)
    steps_list = ctx.pick([0, 1, 4], [0, 1, 2, 4, 8])
    models = {s: Hopfield(DIM, heads=HEADS, steps=s, eps=0.0).to(ctx.device) for s in steps_list}
    contenders = {f"steps={s}": _step(m, x) for s, m in models.items()}
    stats = interleave(contenders, repeats=ctx.repeats, warmup=ctx.warmup, sync=ctx.sync,
                       min_time=ctx.pick(0.01, 0.05))
    case = f"cost vs steps (eps=0: no early stop), B={batch}, L=S={length}"
    rows = []
    for s in steps_list:
        name = f"steps={s}"
        rows.append(Row(case, name, stats[name], baselines=["steps=0"] if s else [],
                        note=f"ran {models[s].last_steps} iterations" if s else "fused SDPA"))
    return rows


def pooling_rows(ctx: Context, torch: Any) -> list[Row]:
    from dsl.blocks.nn.hopfield import HopfieldPooling

    g = torch.Generator().manual_seed(0)
    bags, largest = ctx.pick(16, 64), 128
    sizes = torch.randint(4, largest + 1, (bags,), generator=g).tolist()
    sizes[0] = largest
    total = sum(sizes)
    mean = max(1, round(total / bags))
    padded = torch.zeros(bags, largest, DIM)
    mask = torch.ones(bags, largest, dtype=torch.bool)  # True = padding
    singles = []
    for i, n in enumerate(sizes):
        inst = torch.randn(n, DIM, generator=g)
        padded[i, :n] = inst
        mask[i, :n] = False
        singles.append(inst.unsqueeze(0).to(ctx.device))
    padded, mask = padded.to(ctx.device), mask.to(ctx.device)
    dense = torch.randn(bags, mean, DIM, generator=g).to(ctx.device)
    pool = HopfieldPooling(DIM, heads=HEADS).to(ctx.device)

    def loop() -> object:
        out = torch.cat([pool(s) for s in singles])
        out.sum().backward()
        for p in pool.parameters():
            p.grad = None
        return None

    contenders = {
        "masked, padded to the largest bag": _step(pool, padded, mask),
        "same instances, no padding (mean size)": _step(pool, dense),
        "loop over bags": loop,
    }
    stats = interleave(contenders, repeats=ctx.repeats, warmup=ctx.warmup, sync=ctx.sync,
                       min_time=ctx.pick(0.01, 0.05))
    waste = 1 - total / (bags * largest)
    case = f"HopfieldPooling, {bags} bags of 4–{largest} instances"
    ctx.notes.append(f"Bags: {total} instances padded to {bags}×{largest} = {bags * largest} slots: "
                     f"{waste:.0%} of the masked batch is padding.")
    return [
        Row(case, "masked, padded to the largest bag", stats["masked, padded to the largest bag"],
            baselines=["same instances, no padding (mean size)", "loop over bags"]),
        Row(case, "same instances, no padding (mean size)",
            stats["same instances, no padding (mean size)"]),
        Row(case, "loop over bags", stats["loop over bags"]),
    ]


def run(ctx: Context) -> list[Row]:
    torch = ctx.init_torch()
    return one_step_rows(ctx, torch) + steps_rows(ctx, torch) + pooling_rows(ctx, torch)
