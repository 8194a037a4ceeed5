"""The train section against the model: data fields, the sizes they bind, model inputs. Pure Python.

A data source declares its fields statically (:mod:`dsl.data`). Before the
model is checked, :func:`data_dims` reads the concrete sizes those fields give
the model's symbolic input dims (``x: [N, F]`` and ``karate()`` give N=34,
F=34), so shape rules see numbers. After it, :func:`bind_inputs` unifies each
model input with the field of the same name, reporting any disagreement at the
``data`` entry with a note at the input's declaration. Then the values the data
declares against what the model does with them: a slice bound the data fixes past
its rows (:func:`bounds_the_data_breaks`), and warnings for labels past a class
loss's classes and ids past an index bound (:func:`labels_past_the_classes`,
:func:`indices_past_their_bound`).
"""

from __future__ import annotations

from typing import Any

from dsl.checking.input_rules import index_rules
from dsl.checking.program import Program
from dsl.checking.train.config import TrainConfig
from dsl.checking.train.labels import label_rules
from dsl.checking.train.objective import Objective
from dsl.language import ir
from dsl.language.constants import Const
from dsl.language.diagnostics import Diagnostic, Span, did_you_mean
from dsl.language.shapes import DimConflict, DimEnv, Sym, TensorType


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


def data_sizes(cfg: TrainConfig, diags: list[Diagnostic]) -> dict[str, int]:
    """Sizes the source declares besides its fields (``N_<column>``: a column's categories)."""
    if cfg.source is None or cfg.source.sizes is None:
        return {}
    try:
        return cfg.source.sizes(cfg.source_params)
    except (ValueError, OSError) as exc:  # its fields were read: a problem here is rare (the file changed)
        diags.append(Diagnostic(getattr(exc, "code", "E0703"), f"bad data file: {exc}",
                                getattr(exc, "span", None) or cfg.data_span))
        return {}


def data_ranges(cfg: TrainConfig) -> dict[str, int]:
    """The bounds the source declares on its integer fields' values (``digits()``: y < 10)."""
    if cfg.source is None or cfg.source.ranges is None:
        return {}
    try:
        return cfg.source.ranges(cfg.source_params)
    except (ValueError, OSError):  # the file's problem is reported where its fields are read
        return {}


def data_dims(model: ir.BlockDef | None, fields: dict[str, TensorType] | None,
              consts: dict[str, Const], features_only: bool = False) -> dict[str, int]:
    """Concrete sizes the data gives the model inputs' symbolic dims, by symbol name.

    ``features_only``: only the last axis of float fields (the sizes weights are made
    from); the others (rows, nodes, edges, lengths) stay symbolic."""
    if model is None or not fields:
        return {}
    out: dict[str, int] = {}
    for decl in model.inputs:
        if decl.name not in fields or decl.shape is None:
            continue
        written = [d for d in decl.shape.dims if not isinstance(d, ir.Ellipsis_)]
        field = fields[decl.name]
        f = field.shape
        n = min(len(written), len(f))
        pairs = list(zip(written[len(written) - n:], f[len(f) - n:], strict=True))
        if features_only:
            pairs = pairs[-1:] if field.dtype == "float" else []
        for d, size in pairs:
            if isinstance(d, ir.Name) and d.id[:1].isupper() and d.id not in consts and isinstance(size, int):
                out.setdefault(d.id, size)
    return out


def fresh_fields(fields: dict[str, TensorType], env: DimEnv, source: str) -> dict[str, TensorType]:
    """The fields with their symbols renamed apart from the model's (B in the data is not the model's B)."""
    names = sorted({s for t in fields.values() for d in t.shape if isinstance(d, Sym) for s in d.symbols})
    fresh = {n: env.fresh(n) for n in names}
    out = {}
    for k, t in fields.items():
        shape = tuple(d.substitute(fresh) if isinstance(d, Sym) else d for d in t.shape)
        out[k] = TensorType(shape, t.dtype, t.variadic, f"data field `{k}` of {source} is {t}")
    return out


def bind_inputs(model: ir.BlockDef | None, cfg: TrainConfig, fields: dict[str, TensorType],
                model_inputs: dict[str, TensorType], env: DimEnv) -> list[Diagnostic]:
    """Unify every model input with the data field of its name; the problems found."""
    diags: list[Diagnostic] = []
    src = f"{cfg.source.name}()" if cfg.source else "the data"
    declared = {i.name: i.span for i in (model.inputs if model is not None else ())}
    for name, t in model_inputs.items():
        where = declared.get(name)
        if name not in fields:
            d = Diagnostic("E0503", f"model input `{name}` has no field of the same name in {src}", cfg.data_span,
                           label=f"fields: {', '.join(fields)}", help=did_you_mean(name, fields))
            if where is not None:
                d.note(f"`{name}` is declared here as {t}", where)
            diags.append(d)
            continue
        f = fields[name]
        if f.dtype != t.dtype:
            d = Diagnostic("E0302", f"dtype mismatch: model input `{name}` is {t.dtype}, the data gives {f.dtype}",
                           cfg.data_span, label=f"the data's `{name}` is {f.dtype}").note(f.why or "")
            if where is not None:
                d.note(f"`{name}` is declared as {t}", where)
            diags.append(d)
        problem = _unify_shapes(name, t, f, env, cfg.data_span)
        if problem is not None:
            problem.note(f.why or "")
            if where is not None:
                problem.note(f"`{name}` is declared as {t}", where)
            diags.append(problem)
    return diags


def _unify_shapes(name: str, t: TensorType, f: TensorType, env: DimEnv, span: Span) -> Diagnostic | None:
    if not t.variadic and not f.variadic and len(t.shape) != len(f.shape):
        return Diagnostic("E0303", f"rank mismatch for model input `{name}`", span,  # f's symbols are renamed
                          label=f"expected {env.resolve_type(t)}, found {len(f.shape)} dims")
    n = min(len(t.shape), len(f.shape))
    for a, b in zip(t.shape[len(t.shape) - n:], f.shape[len(f.shape) - n:], strict=True):
        try:
            env.unify(a, b)
        except DimConflict:
            return Diagnostic("E0301", f"shape mismatch for model input `{name}`", span,
                              label=f"expected {env.resolve_type(t)}, found {env.resolve_type(f)}")
    return None


def describe_dims(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


def bounds_the_data_breaks(prog: Program, env: DimEnv, data_span: Span, source: str) -> list[Diagnostic]:
    """A slice such as ``pos[:T]`` whose bound the data fixes past the rows it reads (E0307),
    found now rather than by the runtime guard on the first batch."""
    out = []
    for b in prog.bounds:
        size = env.resolve(b.size)
        if isinstance(size, int) and size > b.upper:
            out.append(Diagnostic("E0307", f"the slice reads past the {b.upper} entries of its dim: {source} "
                                  f"makes {b.size} = {size}", b.span).note(f"{b.size} is bound by {source} here",
                                                                           data_span))
    return out


def labels_past_the_classes(objective: Objective, ranges: dict[str, int], cfg: TrainConfig,
                            source: str) -> list[Diagnostic]:
    """A class loss that scores fewer classes than the data's labels run to (``digits()`` into
    ``Linear(out=5)``). A warning: the model itself is sound (``dsl.compile(spec, classes=3)``
    builds a three-class variant), but ``dsl train`` refuses the data when it loads (E0703)."""
    out = []
    for rule in label_rules(objective):
        top = ranges.get(rule.field)
        if top is not None and top > rule.classes:
            out.append(Diagnostic(
                "E0703", f"`{rule.loss}` scores {rule.classes} classes, but `{rule.field}` of {source} runs to "
                f"{top - 1}", rule.span, label=f"{rule.classes} classes",
                help=f"give the scores a last dim of {top}; training would stop at the first such label",
                severity="warning").note(f"`{rule.field}` comes from {source} here", cfg.data_span))
    return out


def indices_past_their_bound(prog: Program, ranges: dict[str, int], cfg: TrainConfig,
                             source: str) -> list[Diagnostic]:
    """A data field whose declared range runs past the indices a block takes from it
    (``chars()`` ids into ``Embedding(num=64)``): a warning, as for labels; the runtime guard
    refuses the first such batch."""
    spans = {name: prog.node(ref.node).span for name, ref in prog.inputs.items()}
    out = []
    for rule in index_rules(prog):
        top = ranges.get(rule.input)
        if top is not None and isinstance(rule.bound, int) and rule.rows_of is None and top > rule.bound:
            out.append(Diagnostic(
                "E0703", f"`{rule.input}` of {source} holds values up to {top - 1}, but `{rule.block}` takes indices "
                f"below {rule.bound} ({rule.what})", rule.span or spans.get(rule.input, cfg.data_span),
                help=f"raise the bound to {top}; the runtime guard would refuse the first batch that reaches it",
                severity="warning").note(f"`{rule.input}` comes from {source} here", cfg.data_span))
    return out
