"""One analysis of a spec: resolve, the train section's constants and data, the model, the objective.

Every entry point (``dsl.check``, ``dsl.compile``, ``dsl check``, ``dsl
train``, the tools) runs this once per call and reads what it needs from the
:class:`Analysis`: the checked model program, the train config, the objective
and every diagnostic, sorted. Pure Python.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dsl.checking.budget import DEFAULT_MAX_PARAMS, check_budget
from dsl.checking.checker import Checker
from dsl.checking.program import Program
from dsl.checking.train.config import TrainConfig, resolve_config
from dsl.checking.train.objective import Objective, check_objective, unknown_functions
from dsl.checking.train.overrides import route_overrides
from dsl.checking.train.prune import check_prune
from dsl.checking.train.push import check_push, check_push_rows
from dsl.checking.train.section import (
    bind_inputs,
    bounds_the_data_breaks,
    data_dims,
    data_fields,
    data_ranges,
    data_sizes,
    fresh_fields,
    indices_past_their_bound,
    labels_past_the_classes,
)
from dsl.checking.train.stages import check_stages
from dsl.language import ir
from dsl.language.diagnostics import Diagnostic, sort_diagnostics
from dsl.language.registry import plugin_diagnostics
from dsl.language.resolve import ParamValue, Resolved, resolve
from dsl.language.shapes import TensorType
from dsl.language.source import gc_paused


@dataclass
class Analysis:
    spec: ir.Spec
    resolved: Resolved
    program: Program | None = None
    config: TrainConfig | None = None  # the train section's constants, when the spec has one
    fields: dict[str, TensorType] | None = None  # the data's fields, when the source declares them
    data_dims: dict[str, int] = field(default_factory=dict)  # sizes the data binds
    data_sizes: dict[str, int] = field(default_factory=dict)  # constants the data declares (N_<column>)
    feature_dims: dict[str, int] = field(default_factory=dict)  # those of them the model is checked with
    objective: Objective | None = None
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def ok(self) -> bool:
        return self.program is not None and not self.errors

    @property
    def constants(self) -> dict[str, Any]:
        return self.resolved.constants()

    @property
    def overrides(self) -> dict[str, Any]:
        """The ``--set`` values that took effect, by param name."""
        values = {**self.resolved.params, **self.resolved.model_args}
        return {k: v.value for k, v in values.items() if v.origin == "override"}


def analyse(
    spec: ir.Spec,
    dims: Mapping[str, int] | None = None,
    overrides: Mapping[str, Any] | None = None,
    max_params: int | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    fields: Mapping[str, TensorType] | None = None,
    loader: Callable[[str], ir.Spec] | None = None,
    sizes: Mapping[str, int] | None = None,
) -> Analysis:
    """Resolve and check ``spec`` once; a model that checks is then sized (:mod:`dsl.checking.budget`).

    ``dims`` binds symbolic dims; ``overrides`` replaces params, and train keys
    and optimizer, schedule or data arguments (:mod:`dsl.checking.train.overrides`);
    ``max_params`` bounds the parameter count (default 1e9); ``train_overrides``
    replaces train keys (``epochs``, ``seed``); ``fields`` gives the data's fields
    when its source cannot declare them (a ``.pt`` file, read when training starts)
    and, with ``sizes`` (the constants it declares, ``N_<column>``), in place of reading
    the data (a trained run's own record); ``loader`` reads the files the spec ``use``s
    (default: from disk; an editor passes its unsaved texts).
    """
    with gc_paused():
        spec, params, routed = route_overrides(spec, dict(overrides or {}), _param_names(spec, loader))
        res = resolve(spec, params, loader)
        result = Analysis(spec, res, diagnostics=[*res.diagnostics, *routed])
        if spec.train is not None:
            _train_constants(result, dict(train_overrides or {}), fields, sizes)
        checker = Checker(res, dict(dims or {}), result.feature_dims, _data_unread(result))
        result.program = checker.check_model()
        if result.program is not None and result.config is not None:
            _train_section(result, checker)
        result.diagnostics = checker.diags + result.diagnostics[len(res.diagnostics):]
    if result.ok and result.program is not None:
        result.diagnostics.extend(check_budget(result.program, DEFAULT_MAX_PARAMS if max_params is None else max_params))
    result.diagnostics.extend(plugin_diagnostics())  # a broken plugin is a warning on every check, never fatal
    result.diagnostics = sort_diagnostics(result.diagnostics)
    return result


def _param_names(spec: ir.Spec, loader: Callable[[str], ir.Spec] | None) -> Callable[[], set[str]]:
    """A lazy set of every param name (the spec's, its model's, those of files it uses)."""
    names: list[set[str]] = []

    def get() -> set[str]:
        if not names:
            res = resolve(spec, None, loader)
            names.append(set(res.params) | {p.name for p in (spec.model.params if spec.model else ())})
        return names[0]

    return get


def _train_constants(result: Analysis, train_overrides: dict[str, Any],
                     fields: Mapping[str, TensorType] | None, sizes: Mapping[str, int] | None) -> None:
    """The train section's config and its data's fields, and the sizes they give the model's dims."""
    cfg, diags = resolve_config(result.spec, result.constants, train_overrides, data_given=fields is not None)
    result.config = cfg
    result.diagnostics.extend(diags)
    result.fields = dict(fields) if fields is not None else data_fields(cfg, result.diagnostics)
    if result.fields is not None:
        _bind_sizes(result, dict(sizes) if fields is not None and sizes is not None
                    else data_sizes(cfg, result.diagnostics))
    result.data_dims = data_dims(result.resolved.model, result.fields, result.constants)
    result.feature_dims = data_dims(result.resolved.model, result.fields, result.constants, features_only=True)


def _data_unread(result: Analysis) -> bool:
    """The train section's source declares sizes (``N_<column>``) but its data could not be read."""
    cfg = result.config
    source = None if cfg is None else cfg.source or cfg.refused_source
    return source is not None and source.sizes is not None and result.fields is None


def _bind_sizes(result: Analysis, sizes: dict[str, int]) -> None:
    """Sizes the data declares (``N_color``: the categories of a column) become constants of the model."""
    cfg = result.config
    assert cfg is not None
    for name, size in sizes.items():
        if name in result.resolved.params or name in result.resolved.model_args:
            source = f"`{cfg.source.name}()`" if cfg.source else "the data"
            result.diagnostics.append(Diagnostic(
                "E0203", f"`{name}` is a param of this spec and a size that {source} declares",
                cfg.data_span, help=f"rename the param: the data sets `{name}` = {size}"))
            continue
        result.resolved.params[name] = ParamValue(size, cfg.data_span, "data")
        result.data_sizes[name] = size


def _train_section(result: Analysis, checker: Checker) -> None:
    """Model inputs against the data, then the loss and metrics."""
    assert result.config is not None and result.program is not None
    cfg, prog = result.config, result.program
    checker.diags.extend(check_push(cfg, prog))
    checker.diags.extend(check_stages(cfg, prog))
    checker.diags.extend(check_prune(cfg, prog))
    if result.fields is None:  # unknown until load time (a .pt file), or the data has errors
        checker.diags.extend(unknown_functions(cfg, checker.registry))
        return
    source = f"{cfg.source.name}()" if cfg.source else "the data"
    fields = fresh_fields(result.fields, checker.env, source)
    bound = set(checker.env.value)
    checker.diags.extend(bind_inputs(result.resolved.model, cfg, fields, prog.input_types(), checker.env))
    for name in set(checker.env.value) - bound:  # sizes only the data gives (N, E): the guard leaves them free
        checker.env.origin[name] = "data"
    checker.diags.extend(bounds_the_data_breaks(prog, checker.env, cfg.data_span, source))
    if any(d.severity == "error" for d in checker.diags) or checker.model_scope is None:
        checker.diags.extend(unknown_functions(cfg, checker.registry))  # the objective waits for the rest
        return
    result.objective = check_objective(checker, cfg, prog, checker.model_scope, fields)
    ranges = data_ranges(cfg)
    checker.diags.extend(indices_past_their_bound(prog, ranges, cfg, source))
    if result.objective is not None:
        checker.diags.extend(labels_past_the_classes(result.objective, ranges, cfg, source))
        checker.diags.extend(check_push_rows(cfg, prog, {**fields, **result.objective.program.input_types()}))
