"""The constant side of a spec's ``train`` section: a :class:`TrainConfig`. Pure Python.

Every constant (data source arguments, optimizer, schedule, epochs, seed,
batch, grad_clip, early stopping, pruning) is evaluated by the language's one
constant evaluator (:mod:`dsl.language.constants`: the same limits and
diagnostics as params) and validated here. The loss and the metrics stay
expressions: :mod:`dsl.checking.train.objective` checks them with the model's
checker.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from dsl.checking.train.prune import Prune, resolve_prune
from dsl.checking.train.stages import Parts, Stage, resolve_stages, total_epochs
from dsl.data import Source, lookup_source, source_names
from dsl.language.constants import Const, ConstError, eval_const
from dsl.language.diagnostics import NO_SPAN, Diagnostic, Span, did_you_mean
from dsl.language.ir import Call, Expr, ListExpr, Name, Spec, Str, TrainEntry
from dsl.language.printer import expr_to_text

KEYS = ("data", "loss", "metrics", "optimizer", "schedule", "epochs", "seed", "batch", "grad_clip", "early_stop",
        "push_every", "prune", "stages", "accumulate", "precision", "loggers")
PRECISIONS = ("32", "bf16", "fp16")
LOGGERS = ("csv", "tensorboard")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class SGD(_Strict):
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    nesterov: bool = False

    @field_validator("nesterov")
    @classmethod
    def _needs_momentum(cls, v: bool, info: ValidationInfo) -> bool:
        if v and not info.data.get("momentum"):
            raise ValueError("nesterov=true needs momentum > 0")
        return v


class Adam(_Strict):
    lr: float = Field(1e-3, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)


class AdamW(Adam):
    weight_decay: float = Field(0.01, ge=0)


class RMSprop(_Strict):
    lr: float = Field(0.01, gt=0)
    alpha: float = Field(0.99, gt=0, lt=1, description="smoothing constant of the squared-gradient average")
    eps: float = Field(1e-8, gt=0)
    momentum: float = Field(0.0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    centered: bool = Field(False, description="normalise by the gradient's estimated variance")


class Cosine(_Strict):
    """Per step: half a cosine from the optimizer's lr down to ``eta_min``, after ``warmup`` epochs."""

    t_max: int | None = Field(None, gt=0, description="epochs of one half-cosine (default: all epochs after warmup)")
    eta_min: float = Field(0.0, ge=0, description="the lr at the end")
    warmup: float = Field(0.0, ge=0, description="epochs of linear warmup from 0 first")


class Step(_Strict):
    """Per epoch: multiply the lr by ``gamma`` every ``step_size`` epochs."""

    step_size: int = Field(gt=0, description="epochs between decays")
    gamma: float = Field(0.1, gt=0)


class Warmup(_Strict):
    """Per step: linear from ``start_factor`` times the lr up to the lr over ``epochs`` epochs, then constant."""

    epochs: float = Field(5, gt=0, description="epochs of linear warmup, then constant")
    start_factor: float = Field(0.1, gt=0, le=1)


class OneCycle(_Strict):
    """Per step: Smith's one-cycle policy over the whole run (torch's OneCycleLR)."""

    max_lr: float | None = Field(None, gt=0, description="the peak lr (default: the optimizer's lr)")
    pct_start: float = Field(0.3, gt=0, lt=1, description="share of the run spent rising")
    div_factor: float = Field(25.0, gt=0, description="the first lr is max_lr / div_factor")
    final_div_factor: float = Field(1e4, gt=0, description="the last lr is the first / final_div_factor")
    anneal: Literal["cos", "linear"] = "cos"


class Plateau(_Strict):
    """Per epoch: multiply the lr by ``factor`` when the monitored validation value stops improving."""

    factor: float = Field(0.1, gt=0, lt=1)
    patience: int = Field(10, ge=0, description="epochs without improvement before a cut")
    threshold: float = Field(1e-4, ge=0, description="relative change that counts as an improvement")
    min_lr: float = Field(0.0, ge=0)


class EarlyStopArgs(_Strict):
    metric: str
    patience: int = Field(10, gt=0)
    mode: Literal["max", "min"] | None = None
    min_delta: float = Field(0.0, ge=0)


OPTIMIZERS: dict[str, type[_Strict]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}
SCHEDULES: dict[str, type[_Strict]] = {"cosine": Cosine, "step": Step, "warmup": Warmup, "onecycle": OneCycle,
                                       "plateau": Plateau}
PER_EPOCH_SCHEDULES = ("step", "plateau")  # the others advance after every optimizer step


@dataclass
class Metric:
    name: str  # its short key: `name=`, else the function's name (`top5_accuracy` for accuracy(top_k=5))
    expr: Call  # the call without `name=`


@dataclass
class EarlyStop:
    metric: str  # a Metric.name or "loss"
    patience: int
    mode: Literal["max", "min"] | None  # None: the metric's own direction
    min_delta: float
    span: Span = NO_SPAN


@dataclass
class TrainConfig:
    source: Source | None = None
    source_params: Any = None
    data_span: Span = NO_SPAN
    refused_source: Source | None = None  # named, but its arguments were refused (reported)
    loss: Expr | None = None
    metrics: list[Metric] = field(default_factory=list)
    optimizer: tuple[str, Any] = ("adam", Adam())
    schedule: tuple[str, Any] | None = None
    epochs: int = 10
    seed: int = 0
    batch: int | None = None
    grad_clip: float | None = None
    early_stop: EarlyStop | None = None
    push_every: int | None = None  # ProtoPNet push every n epochs (dsl/training/hooks/push.py)
    push_span: Span = NO_SPAN
    prune: Prune | None = None  # gradual magnitude pruning (dsl/training/hooks/pruning.py)
    accumulate: int = 1  # batches whose gradients add up to one optimizer step
    precision: str = "32"  # "32" | "bf16" | "fp16": autocast dtype of the forward pass
    loggers: list[str] = field(default_factory=list)  # "csv", "tensorboard"
    stages: list[Stage] | None = None  # ProtoPNet's schedule (dsl/checking/train/stages.py)
    stages_span: Span = NO_SPAN
    stage_parts: Parts | None = None  # the model's parts the stages train, found by check_stages
    push_fields: dict[str, Any] = field(default_factory=dict)  # head module -> ReceptiveField, by check_push

    def push_epochs(self) -> list[int] | None:
        """The epochs after which the prototypes are pushed when a joint stage says so, else None."""
        if not self.stages:
            return None
        return [e for s in self.stages for e in s.push_epochs()] or None


class Constants:
    """Evaluates the section's constants against the spec's params; collects the diagnostics."""

    def __init__(self, spec: Spec, values: dict[str, Const]):
        self.spec = spec
        self.values = values
        self.diags: list[Diagnostic] = []

    def err(self, code: str, message: str, span: Span, label: str = "", help: str | None = None) -> Diagnostic:
        d = Diagnostic(code, message, span, label, help=help)
        self.diags.append(d)
        return d

    def _lookup(self, name: str, span: Span) -> Const:
        if name in self.values:
            return self.values[name]
        raise ConstError(f"`{name}` is not a constant", span, "E0207", help=did_you_mean(name, self.values))

    def const(self, e: Expr, what: str) -> Any:
        """The value of ``e``; None (and a diagnostic) when it is not a valid constant."""
        try:
            return eval_const(e, self._lookup)
        except ConstError as exc:
            message = f"{what} must be a constant: {exc.message}" if exc.code == "E0207" else exc.message
            self.err(exc.code, message, exc.span, help=exc.help)
            return None

    def kwargs(self, call: Call, what: str) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        ok = True
        for k in call.kwargs:
            v = self.const(k.value, f"`{k.name}` of `{what}`")
            ok = ok and (v is not None or k.value.kind == "none")
            out[k.name] = v
        return out if ok else None

    def validate(self, model: type[BaseModel], values: dict[str, Any], call: Call, what: str) -> Any:
        try:
            return model.model_validate(values)
        except ValidationError as exc:
            for e in exc.errors():
                key = str(e["loc"][0]) if e["loc"] else ""
                span = next((k.value.span for k in call.kwargs if k.name == key), call.span)
                if e["type"] == "extra_forbidden":  # point at the name written, not its value
                    known = [f for f in getattr(model, "model_fields", {}) if f != "base_dir"]  # dsl sets it
                    named = next((k.span for k in call.kwargs if k.name == key and k.span.known), span)
                    self.err("E0402", f"`{what}` has no argument `{key}`", named,
                             help=did_you_mean(key, known) or f"arguments: {', '.join(known)}")
                elif e["type"] == "missing":
                    self.err("E0403", f"`{what}` needs argument `{key}`", call.span)
                elif key:
                    self.err("E0401", f"invalid `{key}` for `{what}`: {e['msg']}", span)
                else:  # a rule over several arguments (val + test below 1)
                    self.err("E0401", f"invalid `{what}(...)`: {e['msg'].removeprefix('Value error, ')}", span)
            return None


def resolve_config(
    spec: Spec, constants: dict[str, Const], train_overrides: dict[str, Any] | None = None,
    data_given: bool = False,
) -> tuple[TrainConfig, list[Diagnostic]]:
    """The train section as a config, plus every problem found in its constant parts.

    ``data_given``: the caller brings the data (``dsl.train(spec, data=dataset)``), so the
    section may leave out ``data``."""
    ctx = Constants(spec, constants)
    cfg = TrainConfig()
    section = spec.train
    seen: dict[str, TrainEntry] = {}
    for e in section.entries if section is not None else ():
        if e.key not in KEYS:
            ctx.err("E0501", f"unknown train key `{e.key}`", key_span(e),
                    help=did_you_mean(e.key, KEYS) or f"keys: {', '.join(KEYS)}")
        elif e.key in seen:
            ctx.err("E0203", f"train key `{e.key}` given twice", key_span(e))
        else:
            seen[e.key] = e
    for key in ("epochs", "seed", "batch", "grad_clip", "push_every", "accumulate"):
        if key in seen:
            _scalar(ctx, cfg, seen[key])
    for key, value in (train_overrides or {}).items():
        if value is not None:
            setattr(cfg, key, value)
    if "push_every" in seen:
        cfg.push_span = key_span(seen["push_every"])
    if "data" in seen:
        _data(ctx, cfg, seen["data"])
    elif section is not None and not data_given:
        ctx.err("E0501", "the train section needs `data`", section.span, help="e.g. data = digits(batch=64)")
    if "loss" in seen:
        cfg.loss = seen["loss"].value
    elif section is not None:
        ctx.err("E0501", "the train section needs `loss`", section.span, help="e.g. loss = cross_entropy(logits, y)")
    if "metrics" in seen:
        _metrics(ctx, cfg, seen["metrics"])
    if "optimizer" in seen:
        cfg.optimizer = _choice(ctx, seen["optimizer"], OPTIMIZERS, "optimizer") or cfg.optimizer
    if "schedule" in seen:
        cfg.schedule = _choice(ctx, seen["schedule"], SCHEDULES, "schedule")
    if "early_stop" in seen:
        _early_stop(ctx, cfg, seen["early_stop"])
    if "prune" in seen:
        cfg.prune = resolve_prune(ctx, seen["prune"])
    if "precision" in seen:
        _precision(ctx, cfg, seen["precision"])
    if "loggers" in seen:
        cfg.loggers = _loggers(ctx, seen["loggers"])
    if "stages" in seen:
        _stages(ctx, cfg, seen, train_overrides or {})
    return cfg, ctx.diags


def _stages(ctx: Constants, cfg: TrainConfig, seen: dict[str, TrainEntry], overrides: dict[str, Any]) -> None:
    """``stages`` decides the run's length, optimizer and pushes: the keys that would too are refused."""
    entry = seen["stages"]
    cfg.stages_span = key_span(entry)
    for key, why in (("epochs", "the run lasts the sum of the stages' epochs"),
                     ("optimizer", "each stage has its own optimizer"),
                     ("schedule", "the joint stage sets its own learning-rate steps"),
                     ("push_every", "give it to the joint stage: joint(epochs=..., push_every=...)")):
        if key in seen:
            ctx.err("E0501", f"`{key}` cannot be combined with `stages`: {why}", key_span(seen[key]),
                    help=f"remove `{key}`")
    if overrides.get("epochs") is not None:
        ctx.err("E0501", "--epochs cannot change a run with `stages`: it lasts the sum of the stages' epochs",
                cfg.stages_span, help="change the epochs of the stages instead")
    stages = resolve_stages(ctx, entry.value)
    if stages is not None:
        cfg.stages = stages
        cfg.epochs = total_epochs(stages)
        pushing = [s for s in stages if s.push_epochs()]
        if pushing:
            cfg.push_span = pushing[0].span


def key_span(e: TrainEntry) -> Span:
    return e.key_span if e.key_span.known else e.span


def _scalar(ctx: Constants, cfg: TrainConfig, e: TrainEntry) -> None:
    v = ctx.const(e.value, f"`{e.key}`")
    if v is None:
        return
    if e.key == "grad_clip":
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            ctx.err("E0501", "`grad_clip` must be a positive number (the max gradient norm)", e.value.span)
            return
        cfg.grad_clip = float(v)
        return
    low = 0 if e.key == "seed" else 1
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        ctx.err("E0501", f"`{e.key}` must be an integer >= {low}", e.value.span, label=f"found {v!r}")
        return
    setattr(cfg, e.key, v)


def _data(ctx: Constants, cfg: TrainConfig, e: TrainEntry) -> None:
    value = e.value
    cfg.data_span = value.span
    if isinstance(value, Str):
        value = Call(func="file", args=(value,), span=value.span, func_span=value.span)
    if not isinstance(value, Call):
        ctx.err("E0502", "`data` must name a data source, e.g. digits(batch=64), or a file path",
                value.span, help=f"sources: {', '.join(source_names())}")
        return
    src = lookup_source(value.func)
    if src is None:
        span = value.func_span if value.func_span.known else value.span
        ctx.err("E0502", f"unknown data source `{value.func}`", span,
                help=did_you_mean(value.func, source_names()) or f"sources: {', '.join(source_names())}")
        return
    cfg.refused_source = src  # until its arguments pass
    values = ctx.kwargs(value, value.func)
    if values is None:
        return
    if len(value.args) > len(src.positional):
        ctx.err("E0202", f"`{src.name}` takes {len(src.positional)} positional argument(s)", value.span,
                help="pass the arguments by name")
        return
    for name, arg in zip(src.positional, value.args, strict=False):
        values[name] = ctx.const(arg, f"`{name}` of `{src.name}`")
    if cfg.batch is not None:
        if "batch" not in src.params.model_fields:
            ctx.err("E0501", f"`batch` does not apply to `{src.name}`: it yields one full graph per step", e.span)
        else:
            values["batch"] = cfg.batch
    if "base_dir" in src.params.model_fields:
        values.setdefault("base_dir", os.path.dirname(os.path.abspath(ctx.spec.file)) if ctx.spec.file else "")
    params = ctx.validate(src.params, values, value, src.name)
    if params is not None:
        cfg.source, cfg.source_params, cfg.refused_source = src, params, None


def _metrics(ctx: Constants, cfg: TrainConfig, e: TrainEntry) -> None:
    items = e.value.items if isinstance(e.value, ListExpr) else (e.value,)
    for item in items:
        if not isinstance(item, Call):
            ctx.err("E0501", "each metric must be a call such as accuracy(logits, y)", item.span)
            continue
        key = _metric_key(ctx, item)
        if key is None:
            continue
        call = item.model_copy(update={"kwargs": tuple(k for k in item.kwargs if k.name != "name")})
        if key in [m.name for m in cfg.metrics] or key == "loss":
            ctx.err("E0203", f"two values are reported as `{key}`", item.span,
                    help=f'give this metric its own key: {item.func}(..., name="{item.func}_2")')
            continue
        cfg.metrics.append(Metric(key, call))


def _metric_key(ctx: Constants, call: Call) -> str | None:
    """The metric's short key: its `name=`, else its function (``top5_accuracy`` for ``top_k=5``)."""
    named = next((k for k in call.kwargs if k.name == "name"), None)
    if named is not None:
        value = ctx.const(named.value, "`name` of a metric")
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", value):
            if value is not None:
                ctx.err("E0401", "a metric's `name` must be a word such as \"test_accuracy\"", named.value.span,
                        label=f"found {value!r}")
            return None
        return value
    top_k = next((k for k in call.kwargs if k.name == "top_k"), None)
    if call.func == "accuracy" and top_k is not None:
        k = ctx.const(top_k.value, "`top_k` of `accuracy`")
        if isinstance(k, int) and not isinstance(k, bool) and k > 1:
            return f"top{k}_accuracy"
    return call.func


def _precision(ctx: Constants, cfg: TrainConfig, e: TrainEntry) -> None:
    value = e.value.id if isinstance(e.value, Name) else ctx.const(e.value, "`precision`")
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if text not in PRECISIONS:
        if value is not None:
            ctx.err("E0501", f"`precision` must be one of {', '.join(map(repr, PRECISIONS))}", e.value.span,
                    label=f"found {value!r}", help='"bf16" on a recent GPU or the CPU, "fp16" on older GPUs')
        return
    cfg.precision = text


def _loggers(ctx: Constants, e: TrainEntry) -> list[str]:
    items = e.value.items if isinstance(e.value, ListExpr) else (e.value,)
    out: list[str] = []
    for item in items:
        name = item.id if isinstance(item, Name) else item.value if isinstance(item, Str) else None
        if name not in LOGGERS:
            ctx.err("E0501", f"unknown logger `{expr_to_text(item)}`", item.span,
                    help=did_you_mean(str(name), LOGGERS) or f"loggers: {', '.join(LOGGERS)}")
        elif name not in out:
            out.append(name)
    return out


def _choice(ctx: Constants, e: TrainEntry, table: dict[str, type[_Strict]], what: str) -> tuple[str, Any] | None:
    value = e.value
    if isinstance(value, (Str, Name)):  # `optimizer = adam` means adam()
        name = value.value if isinstance(value, Str) else value.id
        value = Call(func=name, span=value.span, func_span=value.span)
    if not isinstance(value, Call) or value.args:
        ctx.err("E0501", f"`{what}` must be one of {', '.join(table)} with keyword arguments", e.value.span)
        return None
    if value.func not in table:
        span = value.func_span if value.func_span.known else value.span
        ctx.err("E0501", f"unknown {what} `{value.func}`", span,
                help=did_you_mean(value.func, table) or f"{what}s: {', '.join(table)}")
        return None
    values = ctx.kwargs(value, value.func)
    if values is None:
        return None
    params = ctx.validate(table[value.func], values, value, value.func)
    return (value.func, params) if params is not None else None


def _early_stop(ctx: Constants, cfg: TrainConfig, e: TrainEntry) -> None:
    value = e.value
    if not isinstance(value, Call) or value.func != "early_stop":
        ctx.err("E0501", "`early_stop` must be early_stop(metric=..., patience=...)", value.span)
        return
    values: dict[str, Any] = {}
    for k in value.kwargs:
        if k.name == "metric" and isinstance(k.value, (Name, Call)):
            values["metric"] = expr_to_text(k.value)
        else:
            values[k.name] = ctx.const(k.value, f"`{k.name}` of `early_stop`")
    args = ctx.validate(EarlyStopArgs, values, value, "early_stop")
    if args is None:
        return
    span = next((k.value.span for k in value.kwargs if k.name == "metric"), value.span)
    target = _find_metric(ctx, cfg, args.metric, span)
    if target is not None:
        cfg.early_stop = EarlyStop(target, args.patience, args.mode, args.min_delta, span)


def _find_metric(ctx: Constants, cfg: TrainConfig, wanted: str, span: Span) -> str | None:
    """`early_stop(metric=...)` names a metric by its key (``val/`` in front allowed), its text, or `loss`."""
    wanted = wanted.removeprefix("val/")
    if wanted == "loss":
        return "loss"
    by_key = [m.name for m in cfg.metrics if m.name == wanted]
    if by_key:
        return by_key[0]
    exact = [m.name for m in cfg.metrics if expr_to_text(m.expr).replace(" ", "") == wanted.replace(" ", "")]
    if exact:
        return exact[0]
    by_fn = [m.name for m in cfg.metrics if m.expr.func == wanted]
    if len(by_fn) == 1:
        return by_fn[0]
    names = [m.name for m in cfg.metrics] + ["loss"]
    if len(by_fn) > 1:
        ctx.err("E0503", f"`{wanted}` names {len(by_fn)} metrics", span,
                help="write the metric out in full: " + " or ".join(f'"{n}"' for n in by_fn))
    else:
        ctx.err("E0503", f"early_stop watches `{wanted}`, which is not a metric of this train section", span,
                help=did_you_mean(wanted, [m.expr.func for m in cfg.metrics] + ["loss"])
                or f"metrics: {', '.join(names)}")
    return None
