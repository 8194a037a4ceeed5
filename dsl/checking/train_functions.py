"""Losses and metrics the train section may call, declared statically.

Pure Python: each declaration names its tensor arguments with a shape pattern
(as block shape rules use them) and a dtype, its constant keywords, and where
its torch implementation lives (``dsl.training.functional``, imported lazily).
Every function accepts ``mask=`` (a bool tensor over the rows) to select rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["loss", "metric", "both"]


@dataclass(frozen=True)
class Arg:
    name: str
    pattern: str  # e.g. "B C"; "" for a scalar; "..." for any shape
    dtype: tuple[str, ...] = ("float",)


@dataclass(frozen=True)
class TrainFn:
    name: str
    role: Role
    args: tuple[Arg, ...]
    consts: dict[str, tuple[type, ...]] = field(default_factory=dict)  # keyword -> accepted types
    required_consts: tuple[str, ...] = ()
    mask: bool = True
    same_shape: bool = False  # the two tensors must have equal shapes (mse, l1, bce)
    needs_model: bool = False
    higher_is_better: bool = False
    doc: str = ""

    @property
    def signature(self) -> str:
        parts = [a.name for a in self.args] + [f"{k}=" for k in self.consts]
        if self.mask:
            parts.append("mask=")
        return f"{self.name}({', '.join(parts)})"


NUM = (int, float)
ROWS = ("long",)
ANY = ("float", "long", "int", "bool")

_DECLS = [
    TrainFn(
        "cross_entropy",
        "both",
        (Arg("logits", "B C"), Arg("target", "B", ROWS)),
        {"label_smoothing": NUM},
        doc="mean softmax cross-entropy over the selected rows",
    ),
    TrainFn("nll", "both", (Arg("log_probs", "B C"), Arg("target", "B", ROWS)), doc="mean negative log-likelihood of log-probabilities"),
    TrainFn("mse", "both", (Arg("input", "..."), Arg("target", "...")), same_shape=True, doc="mean squared error"),
    TrainFn("l1", "both", (Arg("input", "..."), Arg("target", "...")), same_shape=True, doc="mean absolute error"),
    TrainFn(
        "bce_with_logits",
        "both",
        (Arg("logits", "..."), Arg("target", "...", ANY)),
        {"pos_weight": NUM},
        same_shape=True,
        doc="binary cross-entropy on logits; the target is cast to float",
    ),
    TrainFn(
        "accuracy",
        "metric",
        (Arg("logits", "B C"), Arg("target", "B", ROWS)),
        higher_is_better=True,
        doc="fraction of selected rows whose argmax equals the target",
    ),
    TrainFn(
        "cluster_cost",
        "both",
        (Arg("distances", "B P"), Arg("target", "B", ROWS)),
        {"per_class": (int,)},
        required_consts=("per_class",),
        doc="ProtoPNet cluster cost: mean over rows of the distance to the nearest prototype of the row's class",
    ),
    TrainFn(
        "separation_cost",
        "both",
        (Arg("distances", "B P"), Arg("target", "B", ROWS)),
        {"per_class": (int,)},
        required_consts=("per_class",),
        doc="ProtoPNet separation cost: mean distance to the nearest prototype of another class "
        "(subtract it: `- 0.08 * separation_cost(...)`)",
    ),
    TrainFn(
        "l1_last_layer",
        "loss",
        (),
        mask=False,
        needs_model=True,
        doc="ProtoPNet's L1 penalty on the prototype head's last layer outside each class's prototypes",
    ),
]

FUNCTIONS: dict[str, TrainFn] = {d.name: d for d in _DECLS}


def lookup_fn(name: str) -> TrainFn | None:
    return FUNCTIONS.get(name)


def loss_names() -> list[str]:
    return sorted(n for n, d in FUNCTIONS.items() if d.role in ("loss", "both"))


def metric_names() -> list[str]:
    return sorted(n for n, d in FUNCTIONS.items() if d.role in ("metric", "both"))


def accepts(d: TrainFn, key: str, value: Any) -> bool:
    types = d.consts.get(key)
    if types is None:
        return False
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)
