"""The Python API: load, check, compile, train, load_run. Importing this module never imports torch."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from dsl.checking.analysis import analyse
from dsl.language import ir
from dsl.language.diagnostics import Diagnostic
from dsl.language.errors import SpecError
from dsl.language.source import load, loads

__all__ = ["analyse", "check", "compile", "load", "load_run", "loads", "train"]


def _as_spec(spec: ir.Spec | str | os.PathLike[str]) -> ir.Spec:
    return spec if isinstance(spec, ir.Spec) else load(spec)


def check(
    spec: ir.Spec | str | os.PathLike[str],
    dims: Mapping[str, int] | None = None,
    *,
    max_params: int | None = None,
    **overrides: Any,
) -> list[Diagnostic]:
    """Every diagnostic of ``spec`` (sorted by position); ``[]`` when it is valid.
    ``max_params`` bounds the model's parameter count (default 1e9)."""
    try:
        spec = _as_spec(spec)
    except SpecError as e:
        return e.diagnostics
    return analyse(spec, dims, overrides, max_params).diagnostics


def compile(
    spec: ir.Spec | str | os.PathLike[str],
    dims: Mapping[str, int] | None = None,
    *,
    return_dict: bool = False,
    with_aux: bool = False,
    max_params: int | None = None,
    guards: bool = True,
    **overrides: Any,
):
    """Check ``spec`` and build it into a ``torch.fx.GraphModule``.

    ``dims`` binds symbolic dims (``{"F": 34}``); other keyword arguments
    override params. ``forward(**inputs)`` returns a tensor for one output and a
    dict by name for several (always a dict with ``return_dict=True``);
    ``with_aux=True`` adds the auxiliary losses under ``"aux:..."`` keys, with
    their coefficients in ``model.dsl_aux_weights``. A model with more than
    ``max_params`` parameters (default 1e9, estimated before anything is
    allocated) is refused with a SpecError. ``guards`` (on by default) checks
    every call's inputs against the spec and raises :class:`dsl.InputError`
    on a contradiction (:mod:`dsl.building.guards`).
    """
    spec = _as_spec(spec)
    from dsl.building.model import build_model

    return build_model(analyse(spec, dims, overrides, max_params), return_dict=return_dict, with_aux=with_aux,
                       guards=guards)


def train(spec: ir.Spec | str | os.PathLike[str], data: Any = None, out: str | os.PathLike[str] | None = None,
          **overrides: Any) -> Any:
    """Train ``spec`` as ``dsl train`` does (progress lines, checkpoints, run directory) and
    return its :class:`~dsl.training.runs.Run` (``.dir``, ``.metrics``, ``.best``, ``.model()``).

    ``data``: a source expression such as ``"digits(batch=32)"`` (replacing the train
    section's), or a ``torch.utils.data.Dataset`` of dicts. ``epochs=`` and ``seed=`` set
    those train keys; ``dims=``, ``device=``, ``quiet=`` and ``resume=`` are as on the command
    line; any other keyword overrides a param, as ``--set`` does. The same seed gives the same
    weights as ``dsl train``, bit for bit."""
    from dsl.training.runs import train as train_run

    return train_run(spec, data, out, **overrides)


def load_run(path: str | os.PathLike[str], best: bool = False) -> Any:
    """A trained run's model: eval mode, guards on, taking raw inputs as ``dsl predict`` does
    (the run's standardisation included). ``best=True``: the weights the validation split chose."""
    from dsl.training.runs import load_run as load_trained_run

    return load_trained_run(path, best)
