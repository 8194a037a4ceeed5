"""From an analysis to modules: the model ``dsl.compile`` returns, and the training step.

Both come from the one :class:`~dsl.checking.analysis.Analysis` of a call, so a
spec is resolved and checked once however many modules are built from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import fx

from dsl.building.compiler import BuildFailure, build_program, preserve_attribute
from dsl.building.guards import InputGuard
from dsl.building.train_step import build_train_step
from dsl.checking.analysis import Analysis
from dsl.language.errors import SpecError


def build_model(analysis: Analysis, *, return_dict: bool = False, with_aux: bool = False, guards: bool = True,
                expose: Mapping[str, Any] | None = None) -> fx.GraphModule:
    """The module of an analysis that checked; SpecError with its errors otherwise.

    ``expose``: values the spec binds but does not output, returned too (by name)."""
    if not analysis.ok or analysis.program is None:
        raise SpecError(analysis.errors or analysis.diagnostics)
    guard = InputGuard.of(analysis.program) if guards else None
    try:
        model = build_program(analysis.program, return_dict=return_dict, with_aux=with_aux, guard=guard,
                              expose=dict(expose or {}))
    except BuildFailure as e:
        raise SpecError(e.diags) from None
    preserve_attribute(model, "dsl_spec", analysis.spec)
    return model


def build_for_training(analysis: Analysis, *, guards: bool = True) -> tuple[fx.GraphModule, fx.GraphModule]:
    """(model, step): the model with every value the train section reads, and the step around it."""
    if analysis.objective is None:
        raise SpecError(analysis.errors or analysis.diagnostics)
    model = build_model(analysis, return_dict=True, with_aux=True, guards=guards, expose=analysis.objective.exposed)
    return model, build_train_step(model, analysis.objective)
