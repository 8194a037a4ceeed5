"""LSTM and GRU: recurrent layers over a sequence, batch first.

LSTM (Hochreiter & Schmidhuber, 1997), per layer and direction, for step t:

    i, f, g, o = σ(W_i x_t + U_i h_{t-1}), σ(...), tanh(...), σ(...)
    c_t = f ⊙ c_{t-1} + i ⊙ g,     h_t = o ⊙ tanh(c_t)

GRU (Cho et al., 2014): r, z = σ(...), n = tanh(W_n x_t + r ⊙ (U_n h_{t-1})),
h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}.

As ``torch.nn.LSTM``/``nn.GRU`` with ``batch_first=True`` (same initialisation).
Outputs: ``y`` (every step's top-layer state, both directions concatenated),
``state`` (each layer and direction's last h) and, for the LSTM, ``cell`` (the last
c). Binding one name keeps ``y``: ``y = LSTM(x, hidden=64)``.

torch.compile and torch.export (torch 2.13): Dynamo does not trace ``nn.LSTM``
or ``nn.GRU`` ("Attempted to wrap RNN, GRU, or LSTM"), so ``fullgraph=True``
fails on a model that has one; ``torch.compile(model)`` (``dsl train
--compile``) runs the recurrent layer as a graph break and compiles the rest.
``torch.export`` unrolls the recurrence over time: the batch dim stays dynamic,
the sequence length is fixed to the example's.

Shapes:
    LSTM: x: [B, T, F] -> y: [B, T, dirs*hidden], state: [layers*dirs, B, hidden], cell: [layers*dirs, B, hidden]
    GRU:  x: [B, T, F] -> y: [B, T, dirs*hidden], state: [layers*dirs, B, hidden]
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from dsl.language.registry import WEIGHTS, BuildCall, Decl, Params, TensorArg, register
from dsl.language.shapes import ShapeCall, TensorType


class RecurrentParams(Params):
    hidden: int = Field(gt=0, description="state size per direction")
    layers: int = Field(1, gt=0, description="stacked layers")
    bidirectional: bool = Field(False, description="also run right to left (doubles y's features)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout between layers (not after the last)")
    bias: bool = Field(True, description="learn biases")


def infer_recurrent(cell: bool) -> Any:
    def infer(call: ShapeCall, p: RecurrentParams) -> list[TensorType]:
        b = call.match("x", "B T F", dtype="float")
        dirs = 2 if p.bidirectional else 1
        why = f"{call.block}(hidden={p.hidden}{', bidirectional' if p.bidirectional else ''})"
        y = TensorType((b.B, b.T, dirs * p.hidden), "float", False, f"{why} gives {dirs}*hidden features per step")
        state = TensorType((p.layers * dirs, b.B, p.hidden), "float", False, f"{why}: the last state of each layer")
        return [y, state, state] if cell else [y, state]

    return infer


def build_recurrent(cls: str) -> Any:
    def build(call: BuildCall, p: RecurrentParams) -> Any:
        from dsl.blocks.nn import recurrent

        return getattr(recurrent, cls)(call.size("x", -1), p.hidden, p.layers, p.bidirectional, p.dropout, p.bias)

    return build


def count_recurrent(gates: int) -> Any:
    def count(call: BuildCall, p: RecurrentParams) -> int:
        dirs = 2 if p.bidirectional else 1
        total, features = 0, call.size("x", -1)
        for layer in range(p.layers):
            inputs = features if layer == 0 else dirs * p.hidden
            per_dir = gates * p.hidden * (inputs + p.hidden) + (2 * gates * p.hidden if p.bias else 0)
            total += dirs * per_dir
        return total

    return count


for _name, _outputs, _gates, _paper in (
    ("LSTM", ("y", "state", "cell"), 4, "Hochreiter & Schmidhuber, Long Short-Term Memory, Neural Computation 1997"),
    ("GRU", ("y", "state"), 3, "Cho et al., Learning Phrase Representations using RNN Encoder-Decoder, EMNLP 2014"),
):
    register(
        Decl(
            name=_name,
            kind="block",
            params=RecurrentParams,
            inputs=(TensorArg("x", doc="a sequence [B, T, F]"),),
            outputs=_outputs,
            infer=infer_recurrent(_name == "LSTM"),
            build=build_recurrent(_name),
            count_params=count_recurrent(_gates),
            prunable=frozenset({WEIGHTS}),  # weight_ih_l*, weight_hh_l*; the biases stay dense
            doc=__doc__ or "",
            paper=_paper,
            signature="[B, T, F] -> y [B, T, dirs*hidden], state [layers*dirs, B, hidden]",
        )
    )
