"""``stages = [warm(...), joint(...), last_layer(...)]``: ProtoPNet's training schedule. Pure Python.

Chen et al. 2019 ("This Looks Like That", reference code cfchen-duke/ProtoPNet,
``main.py`` and ``train_and_test.py``) train a ProtoPNet in three stages, each
with its own optimizer over its own part of the model:

* ``warm(epochs)``: the backbone is frozen; the add-on layers and the
  prototypes learn (Adam, 3e-3 each);
* ``joint(epochs, push_every)``: everything but the last layer learns (backbone
  1e-4, add-on layers and prototypes 3e-3, weight decay 1e-3 on the backbone and
  add-on layers, the learning rates divided by 10 every ``lr_step`` = 5 epochs);
  every ``push_every`` epochs of the stage, and at its end, the prototypes are
  pushed onto their nearest training patches;
* ``last_layer(epochs)``: the last layer alone learns (1e-4), with the L1 norm
  of its wrong-class connections added to the loss (coefficient ``l1`` = 1e-4).

The parts of the model, found statically from the checked program:

* the *heads*: every ``PrototypeHead`` of the model (its ``prototypes`` and its
  ``last_layer``);
* the *add-on layers*: the layers that compute a head's input directly after
  the backbone, that is the 1x1 convolutions (``Conv1d``/``Conv2d`` with
  ``kernel=1``) and ``Linear`` layers reached from the head's input through
  element-wise functions only (ProtoPNet's two 1x1 convolutions and sigmoid);
* the *backbone*: every other weight.

With ``stages`` the run lasts the sum of the stages' epochs (``epochs`` and
``--epochs`` are refused), the optimizer is the stages' (``optimizer`` and
``schedule`` are refused) and the pushes are the joint stage's (``push_every``
as a key of its own is refused).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dsl.checking.program import PNode, Program, Ref, arg_refs
from dsl.language.diagnostics import Diagnostic, Span, did_you_mean
from dsl.language.ir import Call, Expr, ListExpr

HEAD = "PrototypeHead"
#: functions that act on each element alone: they sit between add-on layers and the head
ELEMENTWISE = frozenset({"relu", "sigmoid", "tanh", "gelu", "elu", "silu", "leaky_relu", "softplus", "abs", "exp",
                         "log", "sqrt", "square", "clamp", "pow", "Dropout"})
ADD_ON = frozenset({"Conv1d", "Conv2d", "Linear"})


class _Stage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    epochs: int = Field(gt=0, description="epochs of this stage")


class Warm(_Stage):
    add_on_lr: float = Field(3e-3, gt=0, description="learning rate of the add-on layers")
    prototype_lr: float = Field(3e-3, gt=0, description="learning rate of the prototypes")


class Joint(_Stage):
    push_every: int | None = Field(None, gt=0, description="push the prototypes every n epochs of the stage "
                                                          "(they are always pushed at its end)")
    backbone_lr: float = Field(1e-4, gt=0, description="learning rate of the backbone")
    add_on_lr: float = Field(3e-3, gt=0, description="learning rate of the add-on layers")
    prototype_lr: float = Field(3e-3, gt=0, description="learning rate of the prototypes")
    weight_decay: float = Field(1e-3, ge=0, description="weight decay of the backbone and add-on layers")
    lr_step: int = Field(5, ge=0, description="divide the learning rates by 10 every lr_step epochs (0: never)")


class LastLayer(_Stage):
    lr: float = Field(1e-4, gt=0, description="learning rate of the last layer")
    l1: float = Field(1e-4, ge=0, description="coefficient of the L1 norm of the wrong-class connections")


STAGES: dict[str, type[_Stage]] = {"warm": Warm, "joint": Joint, "last_layer": LastLayer}


@dataclass(frozen=True)
class Stage:
    name: str
    params: Any  # Warm | Joint | LastLayer
    first_epoch: int  # 1-based epoch of the run where the stage starts
    span: Span

    @property
    def last_epoch(self) -> int:
        return self.first_epoch + self.params.epochs - 1

    def push_epochs(self) -> list[int]:
        """The run's epochs after which a joint stage pushes: its last, and every push_every."""
        if not isinstance(self.params, Joint):
            return []
        every = self.params.push_every
        epochs = {self.first_epoch - 1 + n for n in range(every, self.params.epochs + 1, every)} if every else set()
        return sorted(epochs | {self.last_epoch})


@dataclass
class Parts:
    """Module names (attributes of the compiled model) of each part the stages train."""

    heads: list[str] = field(default_factory=list)
    add_on: list[str] = field(default_factory=list)


def resolve_stages(ctx: Any, expr: Expr) -> list[Stage] | None:
    """The stages of ``stages = [...]``; None (with diagnostics in ``ctx``) when they do not hold."""
    items = expr.items if isinstance(expr, ListExpr) else (expr,)
    stages: list[Stage] = []
    first = 1
    ok = True
    for item in items:
        if not isinstance(item, Call) or item.args or item.func not in STAGES:
            name = item.func if isinstance(item, Call) else ""
            span = item.func_span if isinstance(item, Call) and item.func_span.known else item.span
            ctx.err("E0501", f"unknown stage `{name}`" if name else "a stage is a call such as warm(epochs=5)", span,
                    help=did_you_mean(name, STAGES) or f"stages: {', '.join(STAGES)} with keyword arguments")
            ok = False
            continue
        values = ctx.kwargs(item, item.func)
        params = None if values is None else ctx.validate(STAGES[item.func], values, item, item.func)
        if params is None:
            ok = False
            continue
        stages.append(Stage(item.func, params, first, item.span))
        first += params.epochs
    if ok and not stages:
        ctx.err("E0501", "`stages` lists no stage", expr.span, help="e.g. stages = [warm(epochs=5), joint(epochs=20)]")
        return None
    if ok and not any(s.name == "joint" for s in stages):
        # Without a joint stage nothing pushes: the prototypes would never be training patches.
        ctx.err("E0501", "`stages` has no joint stage, so the prototypes are never pushed", expr.span,
                help="add joint(epochs=...): it trains the model and pushes the prototypes at its end")
        return None
    return stages if ok else None


def total_epochs(stages: list[Stage]) -> int:
    return sum(s.params.epochs for s in stages)


def stage_parts(prog: Program) -> Parts:
    """The heads and add-on layers of the model (see the module docstring)."""
    parts = Parts()
    producers = {n.name: n for n in prog.nodes}
    for node in prog.nodes:
        if node.decl is None or node.decl.name != HEAD or node.module is None:
            continue
        parts.heads.append(node.module)
        refs = arg_refs(node.args)
        todo: list[Ref] = refs[:1]
        while todo:
            src = producers.get(todo.pop().node)
            if src is None or src.decl is None:
                continue
            if _is_add_on(src) and src.module is not None:
                if src.module not in parts.add_on:
                    parts.add_on.append(src.module)
                todo.extend(arg_refs(src.args)[:1])
            elif src.decl.name in ELEMENTWISE:
                todo.extend(arg_refs(src.args)[:1])
    return parts


def _is_add_on(node: PNode) -> bool:
    if node.decl is None or node.decl.name not in ADD_ON:
        return False
    kernel = getattr(node.params, "kernel", 1)
    return kernel == 1 or kernel == [1, 1] or kernel == (1, 1)


def check_stages(cfg: Any, prog: Program) -> list[Diagnostic]:
    """Stages need a PrototypeHead (and, to push, class labels: see :mod:`dsl.checking.train.push`)."""
    if not cfg.stages:
        return []
    cfg.stage_parts = stage_parts(prog)
    if cfg.stage_parts.heads:
        return []
    return [Diagnostic(
        "E0501", "`stages` is ProtoPNet's schedule, and this model has no PrototypeHead at its top level",
        cfg.stages_span, help="classify with `logits, dist = PrototypeHead(z, classes=...)`, or drop `stages`",
    )]
