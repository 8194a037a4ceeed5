"""The train section's loss and metrics, checked by the model's own checker.

The loss is an expression over the values the model binds (every one, not
only its outputs) and the fields of the data: ``cross_entropy(logits, y) +
0.8 * cluster_cost(dist, y, per_class=2)``. It is checked exactly as a model
statement is (same functions, same shape rules, same diagnostics) into an
:class:`Objective`: a small program whose inputs are the model values and data
fields it reads, and whose outputs are the loss and the tensors each metric
takes. The compiler turns it into the training step's second half
(:func:`dsl.building.train_step.build_train_step`), so a loss is evaluated by
the same generated code as the model, not by an interpreter of its own.

The loss must be a scalar that depends differentiably on a model output
(``loss = accuracy(logits, y)`` is an error with its span).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dsl.checking.program import PNode, Program, Ref, arg_refs
from dsl.checking.scope import POISON, Poison, Scope, TensorVal
from dsl.checking.train.config import TrainConfig
from dsl.checking.train.metrics import AVERAGES, METRICS, MetricDecl, lookup_metric
from dsl.language import ir
from dsl.language.constants import ConstError, eval_const
from dsl.language.diagnostics import Diagnostic, Span, did_you_mean
from dsl.language.shapes import ShapeCall, ShapeError, TensorType

if TYPE_CHECKING:
    from dsl.checking.checker import Checker

LOSS = "loss"


@dataclass
class MetricUse:
    """One metric of the section: ``name`` as written, the objective outputs its tensors are
    (for a declared metric: its arguments, then ``mask`` when given; for a loss used as a
    metric: its value) and its constant keywords."""

    name: str
    decl: MetricDecl | None
    outputs: list[str]
    consts: dict[str, Any]
    higher_is_better: bool
    span: Span
    classes: int | None = None  # the class dim of its scores, when the checker knows it


@dataclass
class Objective:
    program: Program  # inputs: the model values and data fields it reads; outputs: LOSS and the metrics'
    exposed: dict[str, Ref]  # model values it reads, by name -> their refs in the model program
    fields: list[str]  # data fields it reads that are not model inputs
    metrics: list[MetricUse] = field(default_factory=list)
    reads_model: bool = False  # a term (l1_last_layer) needs the whole model


def check_objective(checker: Checker, cfg: TrainConfig, model: Program, model_scope: Scope,
                    fields: dict[str, TensorType]) -> Objective | None:
    """The objective of ``cfg``; None when its loss or a metric does not check (diagnosed)."""
    obj = Program(name="Objective", env=checker.env, span=cfg.data_span)
    scope = Scope(consts=dict(model_scope.consts), const_spans=dict(model_scope.const_spans))
    sources: dict[str, str] = {}  # objective input -> "model" (a value it computes) | "input" | "data"
    for name, value in model_scope.names.items():
        if isinstance(value, TensorVal):
            _add_input(obj, scope, name, value.type, value.span)
            sources[name] = "input" if model.inputs.get(name) == value.ref else "model"
    for name, t in fields.items():
        if name not in scope.names:
            _add_input(obj, scope, name, t, cfg.data_span)
            sources[name] = "data"
    before = len(checker.diags)
    heads = _prototype_heads(model, model_scope)
    if cfg.loss is not None:
        _loss(checker, _with_head_classes(checker, cfg.loss, heads, scope), scope, obj)
    metrics = [m for i, spec in enumerate(cfg.metrics)
               if (m := _metric(checker, i, spec.name, _with_head_classes(checker, spec.expr, heads, scope), scope,
                                obj))]
    if len(checker.diags) > before:
        return None
    _prune_inputs(obj)
    if cfg.loss is not None and not _differentiable(obj, obj.outputs[LOSS], sources):
        checker.error("E0501", "the loss does not depend differentiably on a model output", cfg.loss.span,
                      label="no gradient reaches the model through this expression",
                      help="train on a loss function of a model output, e.g. cross_entropy(logits, y)")
        return None
    _early_stop_direction(cfg, metrics)
    exposed = {name: model_scope.names[name].ref for name in obj.inputs if sources.get(name) == "model"}  # type: ignore[union-attr]
    reads_model = any(n.decl is not None and n.decl.reads_model for n in obj.nodes)
    return Objective(obj, exposed, [n for n in obj.inputs if sources.get(n) == "data"], metrics, reads_model)


PROTOTYPE_COSTS = ("cluster_cost", "separation_cost")


def _prototype_heads(model: Program, model_scope: Scope) -> dict[str, int]:
    """The model values that are a PrototypeHead's distances, with that head's ``per_class``."""
    heads: dict[str, int] = {}
    for name, value in model_scope.names.items():
        if not isinstance(value, TensorVal) or value.ref.index != 1:
            continue
        node = model.node(value.ref.node)
        if node.decl is not None and node.decl.name == "PrototypeHead" and node.params is not None:
            heads[name] = node.params.per_class  # type: ignore[attr-defined]
    return heads


def _written_const(expr: ir.Expr, scope: Scope) -> Any:
    """The value of a constant expression, or None when it is not one (the checker says why later)."""

    def lookup(name: str, span: Span) -> Any:
        if name not in scope.consts:
            raise ConstError(f"unknown name `{name}`", span)
        return scope.consts[name]

    try:
        return eval_const(expr, lookup)
    except ConstError:
        return None


def _with_head_classes(checker: Checker, expr: ir.Expr, heads: dict[str, int], scope: Scope) -> Any:
    """``expr`` with each prototype cost on a head's distances told that head's ``per_class``.

    The map from prototypes to classes belongs to the head, so the loss does not
    restate it; a ``per_class=`` written anyway must agree (E0501 otherwise).
    """
    if isinstance(expr, ir.Call) and expr.func in PROTOTYPE_COSTS and expr.args:
        first = expr.args[0]
        per_class = heads.get(first.id) if isinstance(first, ir.Name) else None
        written = expr.kwarg("per_class")
        if per_class is not None and written is None:
            keyword = ir.Keyword(name="per_class", value=ir.Num(value=per_class, span=first.span), span=first.span)
            return expr.model_copy(update={"kwargs": (*expr.kwargs, keyword)})
        if per_class is not None and written is not None and _written_const(written, scope) not in (None, per_class):
            checker.error("E0501", f"`per_class` disagrees with the PrototypeHead that produced `{first.id}`",  # type: ignore[union-attr]
                          written.span, label=f"the head has per_class={per_class}",
                          help="leave `per_class` out: the prototype costs take it from the head")
            kept = tuple(k for k in expr.kwargs if k.name != "per_class")  # one diagnostic, not two
            keyword = ir.Keyword(name="per_class", value=ir.Num(value=per_class, span=written.span), span=written.span)
            return expr.model_copy(update={"kwargs": (*kept, keyword)})
        return expr
    update = {}
    for field_name in type(expr).model_fields:
        value = getattr(expr, field_name)
        if isinstance(value, ir.Node):
            new = _with_head_classes(checker, value, heads, scope)  # type: ignore[arg-type]
        elif isinstance(value, tuple) and any(isinstance(v, ir.Node) for v in value):
            new = tuple(_with_head_classes(checker, v, heads, scope) if isinstance(v, ir.Node) else v
                        for v in value)  # type: ignore[arg-type]
        else:
            continue
        if new is not value and new != value:
            update[field_name] = new
    return expr.model_copy(update=update) if update else expr


def _early_stop_direction(cfg: TrainConfig, metrics: list[MetricUse]) -> None:
    """``early_stop`` without ``mode=`` follows its metric: max for accuracy, min for a loss."""
    es = cfg.early_stop
    if es is not None and es.mode is None:
        watched = next((m for m in metrics if m.name == es.metric), None)
        es.mode = "max" if watched is not None and watched.higher_is_better else "min"


def _add_input(obj: Program, scope: Scope, name: str, t: TensorType, span: Span) -> None:
    node = obj.add(PNode(obj.unique(name), "input", name, span, types=[t], var=name))
    obj.inputs[name] = Ref(node.name)
    scope.names[name] = TensorVal(Ref(node.name), t, span, name)


def _loss(checker: Checker, expr: ir.Expr, scope: Scope, obj: Program) -> None:
    metric = _metric_call_in(expr, checker.registry)
    if metric is not None:
        fspan = metric.func_span if metric.func_span.known else metric.span
        checker.error("E0501", f"`{metric.func}` is a metric, not a loss: it has no gradient to train on", fspan,
                      help="list it under `metrics = [...]`, and train on a loss such as cross_entropy(logits, y)")
        return
    value = checker.tensor_expr(expr, scope, obj, var=LOSS)
    if isinstance(value, Poison):
        return
    if not isinstance(value, TensorVal):
        checker.error("E0501", "the loss is a constant: it needs at least one loss term", expr.span,
                      help="e.g. loss = cross_entropy(logits, y)")
        return
    t = checker.env.resolve_type(value.type)
    if t.variadic or t.shape or t.dtype != "float":
        d = checker.error("E0501", f"the loss must be a float scalar, found {t}", expr.span,
                          help="reduce it, e.g. mean(...), or use a loss function such as cross_entropy(logits, y)")
        checker.explain(d, value)
        return
    obj.outputs[LOSS] = value.ref


def _metric_call_in(expr: ir.Expr, functions: Any) -> ir.Call | None:
    """A call of a declared metric anywhere in ``expr`` (metrics have no gradient), unless
    the metric is also a loss function (``mse``)."""
    for node in expr.walk():
        if isinstance(node, ir.Call) and node.func in METRICS and node.func not in functions:
            return node
    return None


def unknown_functions(cfg: TrainConfig, known: Any) -> list[Diagnostic]:
    """The loss's and metrics' unknown function names, found without the model's types: when the
    model or the data has errors the objective is not checked, and a misspelt loss must not wait
    for them to be fixed. ``known``: the block registry."""
    out: list[Diagnostic] = []

    def unknown(call: ir.Call, kind: str, code: str, choices: list[str]) -> None:
        span = call.func_span if call.func_span.known else call.span
        out.append(Diagnostic(code, f"unknown {kind} `{call.func}`", span,
                              help=did_you_mean(call.func, choices)))

    tops = [m.expr for m in cfg.metrics]
    for call in tops:
        if call.func not in METRICS and known.get(call.func) is None:
            unknown(call, "metric", "E0503", [*METRICS, *known])
    for expr in [*([cfg.loss] if cfg.loss is not None else []), *tops]:
        for node in expr.walk():
            if isinstance(node, ir.Call) and node not in tops and known.get(node.func) is None \
                    and node.func not in METRICS and not node.func[:1].isupper():
                unknown(node, "block or function", "E0201", list(known))
    return out


def _metric(checker: Checker, index: int, name: str, call: ir.Call, scope: Scope, obj: Program) -> MetricUse | None:
    decl = lookup_metric(call.func)
    if decl is None:
        return _loss_as_metric(checker, index, name, call, scope, obj)
    fspan = call.func_span if call.func_span.known else call.span
    if len(call.args) != len(decl.args):
        checker.error("E0202", f"`{call.func}` takes {len(decl.args)} tensor argument(s), got {len(call.args)}", fspan,
                      help=f"usage: {decl.signature}")
        return None
    inputs: dict[str, TensorVal] = {}
    spans: dict[str, Span] = {}
    for arg, e in zip(decl.args, call.args, strict=True):
        value = checker.tensor_expr(e, scope, obj)
        if not isinstance(value, TensorVal):
            checker.not_tensor(value, e)
            return None
        inputs[arg.name], spans[arg.name] = value, e.span
    consts: dict[str, Any] = {}
    for kw in call.kwargs:
        if kw.name == "mask":
            value = checker.tensor_expr(kw.value, scope, obj)
            if not isinstance(value, TensorVal):
                checker.not_tensor(value, kw.value)
                return None
            inputs["mask"], spans["mask"] = value, kw.value.span
        elif kw.name in decl.consts:
            v = _const(checker, kw, scope, call.func, decl)
            if isinstance(v, Poison):
                return None
            consts[kw.name] = v
        else:
            checker.error("E0402", f"`{call.func}` has no argument `{kw.name}`", kw.span,
                          help=did_you_mean(kw.name, [*decl.consts, "mask"]) or f"usage: {decl.signature}")
            return None
    if not _metric_shapes(checker, decl, call, inputs, spans):
        return None
    outputs = []
    for arg, value in inputs.items():
        key = f"metric{index}.{arg}"
        obj.outputs[key] = value.ref
        outputs.append(key)
    scores = checker.env.resolve_type(inputs[decl.args[0].name].type)
    classes = scores.shape[-1] if decl.args[0].pattern.endswith("C") and scores.shape else None
    if isinstance(classes, int) and classes < 2 and call.func != "perplexity":
        checker.error("E0401", f"`{call.func}` scores classes along the last dim, but `{decl.args[0].name}` "
                      f"is {scores}: one class", call.args[0].span,
                      help="a classifier gives [B, C] scores with C >= 2; for a regression output "
                           "use mse(...) or mae(...)")
        return None
    if isinstance(classes, int) and consts.get("top_k", 1) > classes:
        checker.error("E0401", f"`top_k` of `accuracy` is {consts['top_k']}, but there are {classes} classes",
                      next(k.value.span for k in call.kwargs if k.name == "top_k"))
        return None
    return MetricUse(name, decl, outputs, consts, decl.higher_is_better, call.span,
                     classes if isinstance(classes, int) else None)


def _loss_as_metric(checker: Checker, index: int, name: str, call: ir.Call, scope: Scope,
                    obj: Program) -> MetricUse | None:
    """A registered scalar function (a loss) reported as a metric: its mean over the split."""
    if checker.registry.get(call.func) is None:
        fspan = call.func_span if call.func_span.known else call.span
        checker.error("E0503", f"unknown metric `{call.func}`", fspan,
                      help=did_you_mean(call.func, [*METRICS, *checker.registry]) or f"metrics: {', '.join(METRICS)}")
        return None
    value = checker.tensor_expr(call, scope, obj)
    if not isinstance(value, TensorVal):
        return None
    t = checker.env.resolve_type(value.type)
    if t.variadic or t.shape:
        checker.error("E0501", f"a metric must be a scalar or a declared metric; `{call.func}` gives {t}", call.span,
                      help=f"metrics: {', '.join(METRICS)}, or any loss function")
        return None
    key = f"metric{index}"
    obj.outputs[key] = value.ref
    return MetricUse(name, None, [key], {}, False, call.span)


def _const(checker: Checker, kw: ir.Keyword, scope: Scope, func: str, decl: MetricDecl) -> Any:
    try:
        v = eval_const(kw.value, lambda n, s: checker.lookup_const(scope, n, s))
    except ConstError as e:
        checker.error(e.code, e.message, e.span, help=e.help)
        return POISON
    types = decl.consts[kw.name]
    if (isinstance(v, bool) and bool not in types) or not isinstance(v, types):
        want = " or ".join(t.__name__ for t in types)
        checker.error("E0401", f"`{kw.name}` of `{func}` must be {want}", kw.value.span, label=f"found {v!r}")
        return POISON
    if kw.name == "average" and v not in AVERAGES:
        checker.error("E0401", f"`average` of `{func}` must be one of {', '.join(AVERAGES)}", kw.value.span,
                      label=f"found {v!r}")
        return POISON
    if kw.name == "top_k" and v < 1:
        checker.error("E0401", "`top_k` of `accuracy` must be at least 1", kw.value.span, label=f"found {v!r}")
        return POISON
    return v


def _metric_shapes(checker: Checker, decl: MetricDecl, call: ir.Call, inputs: dict[str, TensorVal],
                   spans: dict[str, Span]) -> bool:
    shape_call = ShapeCall(call.func, {k: v.type for k, v in inputs.items()}, checker.env)
    try:
        lead: Any = None
        for arg in decl.args:
            bindings = shape_call.match(arg.name, arg.pattern, dtype=arg.dtype)
            t = shape_call.type(arg.name)
            this_lead = t.shape[:-1] if arg.pattern.endswith("C") else t.shape
            if lead is None:
                lead = this_lead
            else:
                _unify_lead(shape_call, arg.name, lead, this_lead, t)
            del bindings
        if "mask" in inputs:
            shape_call.match("mask", "...", dtype="bool")
            m = shape_call.type("mask")
            _unify_lead(shape_call, "mask", lead[: len(m.shape)], m.shape, m)
    except ShapeError as exc:
        why = exc.help
        if why is None and exc.code == "E0303" and decl.args[0].pattern.endswith("C"):
            why = (f"`{call.func}` reads scores with the classes last: [B, C] for targets [B] (two classes: "
                   "[B, 2]); one number per row is a regression output, for mse(...) or mae(...)")
        d = checker.error(exc.code, exc.message, spans.get(exc.arg or "", call.span), label=exc.label, help=why)
        if exc.arg in inputs:
            checker.explain(d, inputs[exc.arg])
        return False
    return True


def _unify_lead(call: ShapeCall, name: str, want: Any, got: Any, t: TensorType) -> None:
    if len(want) != len(got):
        raise ShapeError(f"shape mismatch in argument `{name}` of `{call.block}`", arg=name,
                         label=f"expected leading dims [{', '.join(map(str, want))}], found {t}", code="E0303")
    for a, b in zip(want, got, strict=True):
        call.unify(a, b, arg=name, what=f"`{name}` must have the rows of the first argument")


def _prune_inputs(obj: Program) -> None:
    """Drop the inputs nothing reads: the objective takes only the values it uses."""
    used = {r.node for n in obj.nodes for r in [*arg_refs(n.args), *n.kwargs.values()]}
    used |= {r.node for r in obj.outputs.values()}
    unused = {name for name, ref in obj.inputs.items() if ref.node not in used}
    obj.nodes = [n for n in obj.nodes if not (n.kind == "input" and n.op in unused)]
    for name in unused:
        del obj.inputs[name]


def _differentiable(obj: Program, target: Ref, sources: dict[str, str]) -> bool:
    """Whether a gradient flows from ``target`` back to a model value."""
    flows: set[str] = set()
    for node in obj.nodes:
        if node.kind == "input":
            t = node.types[0] if node.types else None
            if sources.get(node.op) == "model" and t is not None and t.dtype == "float":
                flows.add(node.name)
            continue
        if node.decl is not None and not node.decl.differentiable:
            continue
        if node.decl is not None and node.decl.reads_model:
            flows.add(node.name)
            continue
        if any(r.node in flows for r in [*arg_refs(node.args), *node.kwargs.values()]):
            flows.add(node.name)
    return target.node in flows
