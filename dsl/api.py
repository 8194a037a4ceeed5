"""The Python API: load, check, compile. Importing this module never imports torch."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from . import ir
from .diagnostics import Diagnostic, Span, SpecError

MAX_FILE_BYTES = 5_000_000


def _format_of(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    return "yaml" if ext in (".yaml", ".yml") else "dsl"


def loads(text: str, format: str = "dsl", file: str = "<input>") -> ir.Spec:
    """Parse spec text (``format`` is "dsl" or "yaml"); raise SpecError on mistakes."""
    if format == "yaml":
        from .frontend.yaml_front import parse_yaml

        return parse_yaml(text, file)
    if format == "dsl":
        from .frontend.text import parse_text

        return parse_text(text, file)
    raise ValueError(f"unknown spec format {format!r}: use 'dsl' or 'yaml'")


def read_source(path: str) -> str:
    try:
        size = os.path.getsize(path)
    except OSError:
        raise SpecError([Diagnostic("E0702", f"cannot read `{path}`: no such file", Span(file=path))]) from None
    if size > MAX_FILE_BYTES:
        raise SpecError([Diagnostic("E0801", f"`{path}` is {size} bytes; the limit is {MAX_FILE_BYTES}", Span(file=path))])
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError([Diagnostic("E0702", f"cannot read `{path}`: {e}", Span(file=path))]) from None


def load(path: str | os.PathLike[str]) -> ir.Spec:
    """Load a ``.dsl`` or ``.yaml`` spec from a file."""
    path = os.fspath(path)
    text = read_source(path)
    try:
        return loads(text, _format_of(path), file=path)
    except SpecError as e:
        e.sources.setdefault(path, text)
        raise


def _as_spec(spec: ir.Spec | str | os.PathLike[str]) -> ir.Spec:
    if isinstance(spec, ir.Spec):
        return spec
    return load(spec)


def analyse(spec: ir.Spec, dims: Mapping[str, int] | None = None, overrides: Mapping[str, Any] | None = None):
    """Resolve and check; return (program, diagnostics, checker)."""
    from .checker import check_resolved
    from .resolve import resolve

    res = resolve(spec, overrides or {})
    return check_resolved(res, {**_data_dims(spec, overrides), **dict(dims or {})})


def _data_dims(spec: ir.Spec, overrides: Mapping[str, Any] | None) -> dict[str, int]:
    """Sizes the train section's data declares, so shape rules see concrete numbers."""
    if spec.train is None:
        return {}
    from .train.check import data_dims

    try:
        return data_dims(spec, dict(overrides or {}))
    except Exception:  # a broken train section is diagnosed by the checker itself
        return {}


def check(spec: ir.Spec | str | os.PathLike[str], dims: Mapping[str, int] | None = None, **overrides: Any) -> list[Diagnostic]:
    """Every diagnostic of ``spec`` (sorted by position); ``[]`` when it is valid."""
    from .diagnostics import sort_diagnostics

    try:
        spec = _as_spec(spec)
    except SpecError as e:
        return e.diagnostics
    _, diags, _ = analyse(spec, dims, overrides)
    return sort_diagnostics(diags)


def compile(
    spec: ir.Spec | str | os.PathLike[str],
    dims: Mapping[str, int] | None = None,
    *,
    return_dict: bool = False,
    with_aux: bool = False,
    **overrides: Any,
):
    """Check ``spec`` and build it into a ``torch.fx.GraphModule``.

    ``dims`` binds symbolic dims (``{"F": 34}``); other keyword arguments
    override params. ``forward(**inputs)`` returns a tensor for one output and a
    dict by name for several (always a dict with ``return_dict=True``);
    ``with_aux=True`` adds the auxiliary losses under ``"aux:..."`` keys, with
    their coefficients in ``model.dsl_aux_weights``.
    """
    spec = _as_spec(spec)
    prog, diags, _ = analyse(spec, dims, overrides)
    errors = [d for d in diags if d.severity == "error"]
    if errors or prog is None:
        raise SpecError(errors or diags)
    from .compiler import BuildFailure, build_program

    try:
        model = build_program(prog, return_dict=return_dict, with_aux=with_aux)
    except BuildFailure as e:
        raise SpecError(e.diags) from None
    model.dsl_spec = spec  # type: ignore[assignment]
    return model
