"""The Python API: load, check, compile. Importing this module never imports torch."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from dsl.language import ir
from dsl.language.diagnostics import Diagnostic, Span, SpecError

MAX_FILE_BYTES = 5_000_000


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while parsing or checking.

    Both build many long-lived objects (parse trees, IR nodes, spans) and little
    cyclic garbage; every full collection walks all of them, which made a
    10,000-node spec cost O(n²) (benchmarks/RESULTS.md). Mercurial pauses the
    collector around its parsers for the same reason.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _format_of(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    return "yaml" if ext in (".yaml", ".yml") else "dsl"


def loads(text: str, format: str = "dsl", file: str = "<input>") -> ir.Spec:
    """Parse spec text (``format`` is "dsl" or "yaml"); raise SpecError on mistakes."""
    if format == "yaml":
        from dsl.language.yaml_form import parse_yaml

        with _gc_paused():
            return parse_yaml(text, file)
    if format == "dsl":
        from dsl.language.text import parse_text

        with _gc_paused():
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
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise SpecError([Diagnostic("E0702", f"cannot read `{path}`: {e.strerror or e}", Span(file=path))]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        span = Span(file=path, line=line, col=col, end_line=line, end_col=col + 1)
        raise SpecError([Diagnostic("E0702", f"cannot read `{path}`: byte 0x{data[e.start]:02x} is not UTF-8 text",
                                    span, label="not UTF-8")],
                        {path: data.decode("utf-8", errors="replace")}) from None


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


def analyse(
    spec: ir.Spec,
    dims: Mapping[str, int] | None = None,
    overrides: Mapping[str, Any] | None = None,
    max_params: int | None = None,
):
    """Resolve and check; return (program, diagnostics, checker).

    A model that checks is then sized (:mod:`dsl.checking.budget`): more parameters than
    ``max_params`` (default ``DEFAULT_MAX_PARAMS``, 1e9), activations over the
    memory limit or a dimension over ``MAX_DIM`` add an error.
    """
    from dsl.checking.budget import DEFAULT_MAX_PARAMS, check_budget
    from dsl.checking.checker import check_resolved
    from dsl.language.resolve import resolve

    with _gc_paused():
        res = resolve(spec, overrides or {})
        prog, diags, checker = check_resolved(res, {**_data_dims(spec, overrides), **dict(dims or {})})
    if prog is not None and not any(d.severity == "error" for d in diags):
        diags.extend(check_budget(prog, DEFAULT_MAX_PARAMS if max_params is None else max_params))
    from dsl.language.registry import plugin_diagnostics

    diags.extend(plugin_diagnostics())  # a broken plugin is a warning on every check, never fatal
    return prog, diags, checker


def _data_dims(spec: ir.Spec, overrides: Mapping[str, Any] | None) -> dict[str, int]:
    """Sizes the train section's data declares, so shape rules see concrete numbers."""
    if spec.train is None:
        return {}
    from dsl.checking.train import data_dims

    try:
        return data_dims(spec, dict(overrides or {}))
    except Exception:  # a broken train section is diagnosed by the checker itself
        return {}


def check(
    spec: ir.Spec | str | os.PathLike[str],
    dims: Mapping[str, int] | None = None,
    *,
    max_params: int | None = None,
    **overrides: Any,
) -> list[Diagnostic]:
    """Every diagnostic of ``spec`` (sorted by position); ``[]`` when it is valid.
    ``max_params`` bounds the model's parameter count (default 1e9)."""
    from dsl.language.diagnostics import sort_diagnostics

    try:
        spec = _as_spec(spec)
    except SpecError as e:
        return e.diagnostics
    _, diags, _ = analyse(spec, dims, overrides, max_params)
    return sort_diagnostics(diags)


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
    prog, diags, _ = analyse(spec, dims, overrides, max_params)
    errors = [d for d in diags if d.severity == "error"]
    if errors or prog is None:
        raise SpecError(errors or diags)
    from dsl.building.compiler import BuildFailure, build_program, preserve_attribute

    try:
        model = build_program(prog, return_dict=return_dict, with_aux=with_aux)
    except BuildFailure as e:
        raise SpecError(e.diags) from None
    preserve_attribute(model, "dsl_spec", spec)
    if guards:
        from dsl.building.guards import install_guards, symbolic_program

        install_guards(model, prog, symbolic_program(spec, dims, overrides))
    return model
