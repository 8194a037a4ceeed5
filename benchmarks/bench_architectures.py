"""The language of DESIGN §9 against the same networks by hand (forward+backward, batch 256).

Targets: a compiled conv net and a compiled LSTM model ≤ 1.03× the hand-written
module; slicing a learned tensor by a size read from the inputs (``pos[:T]``) and
reshaping by sizes (``reshape(x, [B, T, heads, d // heads])``) cost nothing
measurable against the hand-written ``pos[: x.size(1)]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.harness import Context, Row, interleave

NAME = "architectures"
TITLE = "Convolution, recurrence and sizes as values vs hand-written PyTorch (forward+backward)"

BATCH = 256
SEQ = 32

CONV = """model ConvNet {
    input x: [B, 1, 8, 8]
    f = relu(BatchNorm(Conv2d(x, out=32, kernel=3, padding=1)))
    f = max_pool2d(relu(Conv2d(f, out=32, kernel=3, padding=1)), 2)
    logits = Linear(flatten(f, start=1), out=10)
    output logits
}
"""

LSTM = """model LstmLM(vocab: int = 96, d: int = 64) {
    input tokens: [B, T] long
    h, state, cell = LSTM(Embedding(tokens, num=vocab, dim=d), hidden=d)
    logits = Linear(h, out=vocab)
    output logits
}
"""

SIZES = """model Positions(d: int = 64, heads: int = 4) {
    input x: [B, T, d]
    pos = Parameter([128, d], std=0.02)
    h = x + pos[:T]
    y = permute(reshape(h, [B, T, heads, d // heads]), [0, 2, 1, 3])
    output y
}
"""
# The same model with the sizes written as numbers: what reading them from the inputs costs.
CONSTANT_SIZES = SIZES.replace("pos[:T]", f"pos[:{SEQ}]").replace("[B, T, heads", f"[{BATCH}, {SEQ}, heads")


def hand_conv() -> Any:
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(1), nn.Linear(32 * 4 * 4, 10),
    )


def hand_lstm() -> Any:
    import torch
    from torch import nn

    class LstmLM(nn.Module):
        def __init__(self, vocab: int = 96, d: int = 64):
            super().__init__()
            self.emb = nn.Embedding(vocab, d)
            self.rnn = nn.LSTM(d, d, batch_first=True)
            self.out = nn.Linear(d, vocab)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            h, _ = self.rnn(self.emb(tokens))
            return self.out(h)

    return LstmLM()


def hand_sizes() -> Any:
    import torch
    from torch import nn

    class Positions(nn.Module):
        def __init__(self, d: int = 64, heads: int = 4):
            super().__init__()
            self.heads = heads
            self.pos = nn.Parameter(torch.randn(128, d) * 0.02)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, t, d = x.shape
            h = x + self.pos[:t]
            return h.reshape(b, t, self.heads, d // self.heads).permute(0, 2, 1, 3)

    return Positions()


def feed(name: str, device: str) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(0)
    if name == "conv net":
        return {"x": torch.randn(BATCH, 1, 8, 8, generator=g).to(device)}
    if name == "LSTM":
        return {"tokens": torch.randint(0, 96, (BATCH, SEQ), generator=g).to(device)}
    return {"x": torch.randn(BATCH, SEQ, 64, generator=g).to(device)}


CASES: dict[str, tuple[str, Callable[[], Any]]] = {
    "conv net": (CONV, hand_conv),
    "LSTM": (LSTM, hand_lstm),
    "pos[:T] and reshape by sizes": (SIZES, hand_sizes),
}


def step_fn(model: Any, inputs: dict[str, Any], positional: bool) -> Callable[[], object]:
    args = list(inputs.values())

    def step() -> object:
        out = model(*args) if positional else model(**inputs)
        out.float().sum().backward()
        for p in model.parameters():
            p.grad = None
        return None

    return step


def run(ctx: Context) -> list[Row]:
    ctx.init_torch()
    import dsl

    rows: list[Row] = []
    for case, (text, hand_fn) in CASES.items():
        model = dsl.compile(dsl.loads(text)).to(ctx.device).train()
        hand = hand_fn().to(ctx.device).train()
        inputs = feed(case, ctx.device)
        contenders = {"hand-written": step_fn(hand, inputs, positional=True),
                      "dsl": step_fn(model, inputs, positional=False)}
        if text is SIZES:
            constant = dsl.compile(dsl.loads(CONSTANT_SIZES)).to(ctx.device).train()
            contenders["dsl, sizes as numbers"] = step_fn(constant, inputs, positional=False)
        stats = interleave(contenders, repeats=3 * ctx.repeats, warmup=ctx.warmup + 2, sync=ctx.sync,
                           min_time=ctx.pick(0.01, 0.05))
        label = f"{case}, batch {BATCH}"
        rows.append(Row(label, "hand-written", stats["hand-written"]))
        if "dsl, sizes as numbers" in stats:
            # what reading sizes from the inputs costs: the same spec with pos[:32] and [256, 32, ...]
            rows += [
                Row(label, "dsl, sizes as numbers", stats["dsl, sizes as numbers"], baselines=["hand-written"]),
                Row(label, "dsl", stats["dsl"], baselines=["dsl, sizes as numbers", "hand-written"], target=1.03,
                    note="sizes read from the inputs, against the same spec with the sizes as numbers"),
            ]
        else:
            rows.append(Row(label, "dsl", stats["dsl"], baselines=["hand-written"], target=1.03,
                            note="dsl.compile, runtime input guards on"))
    return rows
