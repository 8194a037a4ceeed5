"""Static checking of the ``train`` section. Pure Python: no torch.

``check_train`` binds each model input to the data field of the same name
(unifying their dims, so the compiler learns sizes such as ``F = 64`` from the
data), and checks the loss and metric expressions against the model's outputs
and the data's fields with the same shape patterns block rules use.
"""

from __future__ import annotations

from typing import Any

from dsl.checking.train_config import TrainConfig, resolve_train
from dsl.checking.train_exprs import NotConstant, const_value, param_values
from dsl.checking.train_functions import FUNCTIONS, TrainFn, accepts, lookup_fn
from dsl.language.diagnostics import Diagnostic, Span, did_you_mean
from dsl.language.ir import BinOp, Call, Ellipsis_, Expr, Name, Num, Spec, UnaryOp
from dsl.language.shapes import DimConflict, DimEnv, ShapeCall, ShapeError, Sym, TensorType, dim_str
from dsl.training.hooks.push import check_push


def data_fields(cfg: TrainConfig, diags: list[Diagnostic]) -> dict[str, TensorType] | None:
    """The source's declared fields, or None when unknown (a .pt file, or an error)."""
    if cfg.source is None:
        return None
    try:
        return cfg.source.field_types(cfg.source_params)
    except FileNotFoundError as exc:
        diags.append(Diagnostic("E0702", f"data file not found: {exc}", cfg.data_span))
    except ValueError as exc:
        span = getattr(exc, "span", None)  # a DataError knows the line and column in a .csv
        code = getattr(exc, "code", "E0401")
        diags.append(Diagnostic(code, f"bad data file: {exc}", span or cfg.data_span))
    except (OSError, KeyError) as exc:
        diags.append(Diagnostic("E0401", f"cannot read the data file: {exc}", cfg.data_span))
    return None


def _fresh_fields(fields: dict[str, TensorType], env: DimEnv) -> dict[str, TensorType]:
    """Rename the data's symbols apart from the model's (B in the data is not the model's B)."""
    names = sorted({s for t in fields.values() for d in t.shape if isinstance(d, Sym) for s in d.symbols})
    fresh = {n: env.fresh(n) for n in names}
    out = {}
    for k, t in fields.items():
        shape = tuple(d.substitute(fresh) if isinstance(d, Sym) else d for d in t.shape)
        out[k] = TensorType(shape, t.dtype, t.variadic, f"data field `{k}` is {t}")
    return out


def _input_span(spec: Spec, name: str) -> Span | None:
    if spec.model is None:
        return None
    for i in spec.model.inputs:
        if i.name == name:
            return i.span
    return None


def _bind_inputs(
    spec: Spec,
    cfg: TrainConfig,
    declared: dict[str, TensorType],
    fields: dict[str, TensorType],
    model_inputs: dict[str, TensorType],
    env: DimEnv,
    diags: list[Diagnostic],
) -> None:
    src = f"{cfg.source.name}()" if cfg.source else "the data"
    for name, t in model_inputs.items():
        where = _input_span(spec, name)
        if name not in fields:
            d = Diagnostic("E0503", f"model input `{name}` has no field of the same name in {src}", cfg.data_span,
                           label=f"fields: {', '.join(fields)}", help=did_you_mean(name, fields))
            if where is not None:
                d.note(f"`{name}` is declared here as {t}", where)
            diags.append(d)
            continue
        f = fields[name]
        why = f"data field `{name}` of {src} is {declared[name]}"
        if f.dtype != t.dtype:
            d = Diagnostic("E0302", f"dtype mismatch: model input `{name}` is {t.dtype}, the data gives {f.dtype}",
                           cfg.data_span, label=f"`{name}` is {f}").note(why)
            if where is not None:
                d.note(f"`{name}` is declared as {t}", where)
            diags.append(d)
        _unify_shapes(name, t, f, env, why, where, cfg.data_span, diags)


def _unify_shapes(
    name: str, t: TensorType, f: TensorType, env: DimEnv, why: str, where: Span | None, span: Span,
    diags: list[Diagnostic],
) -> None:
    if not t.variadic and not f.variadic and len(t.shape) != len(f.shape):
        d = Diagnostic("E0303", f"rank mismatch for model input `{name}`", span,
                       label=f"expected {env.resolve_type(t)}, found {f}").note(why)
        if where is not None:
            d.note(f"`{name}` is declared as {t}", where)
        diags.append(d)
        return
    n = min(len(t.shape), len(f.shape))
    for a, b in zip(t.shape[len(t.shape) - n:], f.shape[len(f.shape) - n:], strict=False):
        try:
            env.unify(a, b)
        except DimConflict:
            d = Diagnostic("E0301", f"shape mismatch for model input `{name}`", span,
                           label=f"expected {env.resolve_type(t)}, found {env.resolve_type(f)}").note(why)
            if where is not None:
                d.note(f"`{name}` is declared as {t}", where)
            diags.append(d)
            return


class _ExprChecker:
    """Types loss and metric expressions: tensors (names), constants, and scalar terms."""

    def __init__(self, names: dict[str, TensorType], consts: dict[str, Any], env: DimEnv, diags: list[Diagnostic]):
        self.names = names
        self.consts = consts
        self.env = env
        self.diags = diags

    def err(self, code: str, message: str, span: Span, label: str = "", help: str | None = None) -> None:
        self.diags.append(Diagnostic(code, message, span, label, help=help))

    def scalar(self, e: Expr, what: str) -> str | None:
        """Check a loss expression: 'scalar' (a term), 'const', or None after an error."""
        if isinstance(e, Num):
            return "const"
        if isinstance(e, Name):
            if e.id in self.consts:
                return "const"
            if e.id in self.names:
                self.err("E0501", f"{what} must be a scalar: `{e.id}` is a tensor {self.names[e.id]}", e.span,
                         help="call a loss on it, e.g. cross_entropy(logits, y)")
                return None
            self._unknown(e)
            return None
        if isinstance(e, UnaryOp):
            return self.scalar(e.operand, what)
        if isinstance(e, BinOp):
            if e.op not in ("+", "-", "*", "/"):
                self.err("E0501", f"`{e.op}` is not allowed in {what}", e.span)
                return None
            a, b = self.scalar(e.left, what), self.scalar(e.right, what)
            if a is None or b is None:
                return None
            return "const" if a == b == "const" else "scalar"
        if isinstance(e, Call):
            return "scalar" if self.call(e, role="loss") else None
        self.err("E0501", f"{what} must be an expression of loss terms", e.span)
        return None

    def _unknown(self, e: Name) -> None:
        self.err("E0503", f"unknown name `{e.id}` in the train section", e.span,
                 label="not a model output or data field",
                 help=did_you_mean(e.id, list(self.names) + list(self.consts)) or
                 f"model outputs and data fields: {', '.join(self.names)}")

    def call(self, c: Call, role: str) -> bool:
        d = lookup_fn(c.func)
        span = c.func_span if c.func_span.known else c.span
        if d is None:
            pool = [n for n, f in FUNCTIONS.items() if role == "loss" or f.role != "loss"]
            self.err("E0503", f"unknown {role} function `{c.func}`", span,
                     help=did_you_mean(c.func, pool) or f"{role}es: {', '.join(sorted(pool))}"
                     if role == "loss" else did_you_mean(c.func, pool) or f"metrics: {', '.join(sorted(pool))}")
            return False
        if role == "metric" and d.role == "loss":
            self.err("E0501", f"`{c.func}` is a loss term, not a metric", span)
            return False
        if len(c.args) != len(d.args):
            self.err("E0202", f"`{c.func}` takes {len(d.args)} tensor argument(s), got {len(c.args)}", c.span,
                     help=f"usage: {d.signature}")
            return False
        ok = True
        inputs: dict[str, TensorType] = {}
        spans: dict[str, Span] = {}
        for spec_arg, a in zip(d.args, c.args, strict=False):
            t = self._tensor(a)
            if t is None:
                ok = False
                continue
            inputs[spec_arg.name] = t
            spans[spec_arg.name] = a.span
        ok = self._kwargs(d, c, inputs, spans) and ok
        return ok and self._shapes(d, c, inputs, spans)

    def _tensor(self, a: Expr) -> TensorType | None:
        if not isinstance(a, Name):
            self.err("E0501", "loss and metric arguments must name a model output or data field", a.span)
            return None
        if a.id in self.names:
            return self.names[a.id]
        self._unknown(a)
        return None

    def _kwargs(self, d: TrainFn, c: Call, inputs: dict[str, TensorType], spans: dict[str, Span]) -> bool:
        ok = True
        for k in c.kwargs:
            if k.name == "mask" and d.mask:
                t = self._tensor(k.value)
                if t is None:
                    ok = False
                else:
                    inputs["mask"], spans["mask"] = t, k.value.span
                continue
            if k.name not in d.consts:
                known = list(d.consts) + (["mask"] if d.mask else [])
                self.err("E0402", f"`{c.func}` has no argument `{k.name}`", k.value.span,
                         help=did_you_mean(k.name, known) or f"usage: {d.signature}")
                ok = False
                continue
            try:
                v = const_value(k.value, self.consts)
            except NotConstant as exc:
                self.err("E0207", f"`{k.name}` of `{c.func}` must be a constant: {exc}", k.value.span)
                ok = False
                continue
            if not accepts(d, k.name, v):
                want = " or ".join(t.__name__ for t in d.consts[k.name])
                self.err("E0401", f"`{k.name}` of `{c.func}` must be {want}", k.value.span, label=f"found {v!r}")
                ok = False
        given = {k.name for k in c.kwargs}
        for need in d.required_consts:
            if need not in given:
                self.err("E0403", f"`{c.func}` needs `{need}=`", c.span, help=f"usage: {d.signature}")
                ok = False
        return ok

    def _shapes(self, d: TrainFn, c: Call, inputs: dict[str, TensorType], spans: dict[str, Span]) -> bool:
        call = ShapeCall(c.func, inputs, self.env)
        try:
            rows: Any = None
            for arg in d.args:
                b = call.match(arg.name, arg.pattern, dtype=arg.dtype, **({"B": rows} if rows is not None else {}))
                rows = b.get("B", rows)
            if d.same_shape:
                self._same(call, d.args[0].name, d.args[1].name)
            if "mask" in inputs:
                lead = rows if rows is not None else self._first_dim(call, d.args[0].name)
                call.match("mask", "B", dtype="bool", **({"B": lead} if lead is not None else {}))
        except ShapeError as exc:
            span = spans.get(exc.arg or "", c.span)
            t = inputs.get(exc.arg or "")
            d_ = Diagnostic(exc.code, exc.message, span, exc.label, help=exc.help)
            if t is not None and t.why:
                d_.note(t.why)
            self.diags.append(d_)
            return False
        return True

    def _first_dim(self, call: ShapeCall, name: str) -> Any:
        t = call.type(name)
        return None if t.variadic or not t.shape else t.shape[0]

    def _same(self, call: ShapeCall, a: str, b: str) -> None:
        ta, tb = call.type(a), call.type(b)
        if not ta.variadic and not tb.variadic and len(ta.shape) != len(tb.shape):
            raise ShapeError(f"`{call.block}` needs `{a}` and `{b}` of the same shape", arg=b,
                             label=f"expected {ta}, found {tb}", code="E0301")
        for x, y in zip(reversed(ta.shape), reversed(tb.shape), strict=False):
            try:
                self.env.unify(x, y)
            except DimConflict:
                raise ShapeError(f"`{call.block}` needs `{a}` and `{b}` of the same shape", arg=b,
                                 label=f"expected {ta}, found {tb}", code="E0301") from None


def check_train(
    spec: Spec,
    model_inputs: dict[str, TensorType],
    model_outputs: dict[str, TensorType],
    env: DimEnv,
    overrides: dict[str, Any] | None = None,
) -> list[Diagnostic]:
    """Every problem in ``spec.train`` (empty when valid or absent); binds dims in ``env``."""
    if spec.train is None:
        return []
    cfg, diags = resolve_train(spec, overrides)
    diags.extend(check_push(spec, cfg, overrides))
    declared = data_fields(cfg, diags)
    fields = _fresh_fields(declared, env) if declared is not None else None
    if fields is not None:
        _bind_inputs(spec, cfg, declared or {}, fields, model_inputs, env, diags)
    names = dict(fields or {})
    names.update(model_outputs)  # an output shadows a data field of the same name
    if fields is None and cfg.source is not None:
        return diags  # fields unknown until load time (.pt): only the constant parts are checked
    if fields is None:
        return diags
    consts = param_values(spec, overrides)
    checker = _ExprChecker(names, consts, env, diags)
    if cfg.loss is not None:
        kind = checker.scalar(cfg.loss, "the loss")
        if kind == "const":
            checker.err("E0501", "the loss is a constant: it needs at least one loss term", cfg.loss.span)
    for m in cfg.metrics:
        checker.call(m.expr, role="metric")
    return diags


def _declared_dims(spec: Spec, name: str, consts: dict[str, Any]) -> list[tuple[Any, bool]] | None:
    """The model input's declared dims as (symbol name | int | None), and whether `...` leads."""
    if spec.model is None:
        return None
    for i in spec.model.inputs:
        if i.name != name or i.shape is None:
            continue
        out: list[tuple[Any, bool]] = []
        for d in i.shape.dims:
            if isinstance(d, Ellipsis_):
                out.append((None, True))
            elif isinstance(d, Name) and d.id[:1].isupper() and d.id not in consts:
                out.append((d.id, False))
            else:
                out.append((None, False))
        return out
    return None


def data_dims(spec: Spec, overrides: dict[str, Any] | None = None) -> dict[str, int]:
    """Concrete dims the data binds: model input ``x: [N, F]`` and ``karate()`` give N=34, F=34."""
    if spec.train is None or spec.model is None:
        return {}
    cfg, diags = resolve_train(spec, overrides)
    fields = data_fields(cfg, diags)
    if not fields:
        return {}
    consts = param_values(spec, overrides)
    out: dict[str, int] = {}
    for i in spec.model.inputs:
        dims = _declared_dims(spec, i.name, consts)
        if dims is None or i.name not in fields:
            continue
        dims = [d for d in dims if not d[1]]
        f = fields[i.name].shape
        n = min(len(dims), len(f))
        for (sym, _), size in zip(dims[len(dims) - n:], f[len(f) - n:], strict=False):
            if sym is not None and isinstance(size, int):
                out.setdefault(sym, size)
    return out


def train_config(spec: Spec, overrides: dict[str, Any] | None = None,
                 train_overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The resolved config; raises SpecError with every problem of the constant parts."""
    from dsl.language.diagnostics import SpecError

    cfg, diags = resolve_train(spec, overrides, train_overrides)
    if diags:
        raise SpecError(diags)
    return cfg


def describe_dims(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={dim_str(v)}" for k, v in d.items())
