"""Export a compiled model: `torch.export` (.pt2, symbolic dims as `Dim`s), ONNX, and the
helpers they share (example inputs, numerical checks). The standalone Python file lives in
:mod:`dsl.exporting.python`.

Every export is checked numerically against the compiled module on fresh random inputs
whose symbolic dims have *other* sizes than the ones traced, so a dim that was silently
specialised shows up as an error instead of a wrong file. Blocks known not to export to
a format are refused up front with a diagnostic at the call (:func:`unsupported`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from dsl.checking.program import PNode, Program
from dsl.language.diagnostics import Diagnostic
from dsl.language.errors import DslError
from dsl.language.shapes import Sym, TensorType

TRACE_SIZE = 5  # symbolic dims get 5, 6, 7, ... while tracing
CHECK_SIZE = 7  # ... and 7, 8, 9, ... in the numerical check, so specialisation is caught
ONNX_OPSET = 18


class ExportError(DslError):
    """The model cannot be written in the requested form; ``message`` says why, ``help`` what to do.

    ``diagnostics`` (when not empty) point at the spec nodes responsible."""

    def __init__(self, message: str, help: str | None = None, diagnostics: list[Diagnostic] | None = None):
        super().__init__(message)
        self.message, self.help = message, help
        self.diagnostics = diagnostics or []

    def to_diagnostics(self, span: Any = None) -> list[Diagnostic]:
        if self.diagnostics:
            return self.diagnostics
        from dsl.language.diagnostics import NO_SPAN

        return [Diagnostic("E0603", self.message, span or NO_SPAN, help=self.help)]


# --------------------------------------------------------------------------- inputs


def _sizes(t: TensorType, sizes: dict[str, int], default: int) -> list[int]:
    out = []
    for d in t.shape:
        if isinstance(d, int):
            out.append(d)
        elif isinstance(d, Sym) and d.name is not None:
            out.append(sizes.setdefault(d.name, default + len(sizes)))
        elif isinstance(d, Sym):
            out.append(int(d.substitute({s: sizes.setdefault(s, default + len(sizes)) for s in d.symbols})))  # type: ignore[arg-type]
        else:
            out.append(default)
    return out


def example_inputs(types: dict[str, TensorType], sizes: dict[str, int] | None = None, default: int = TRACE_SIZE,
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors matching ``types``; symbols get distinct sizes (5, 6, ...) unless given.

    Integer inputs are zeros (valid indices for any embedding or graph). Boolean inputs are
    random with both values in every row of the last axis: a mask means "keep" in some specs
    and "padding" in others, and one that hides every position has no defined output
    (softmax over nothing, a mean of nothing), so exports could not agree on it."""
    sizes = dict(sizes or {})
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, t in types.items():
        shape = ([2] if t.variadic else []) + _sizes(t, sizes, default)
        if t.dtype == "float":
            out[name] = torch.randn(*shape, generator=g)
        elif t.dtype == "bool":
            out[name] = _mixed_mask(shape, g)
        else:
            out[name] = torch.zeros(*shape, dtype=torch.long if t.dtype == "long" else torch.int32)
    return out


def _mixed_mask(shape: list[int], g: torch.Generator) -> torch.Tensor:
    mask = torch.rand(*shape, generator=g) < 0.5
    if shape and shape[-1] >= 2:
        mask[..., 0], mask[..., 1] = True, False
    return mask


def dynamic_shapes(types: dict[str, TensorType]) -> dict[str, Any]:
    """One `torch.export.Dim` per symbolic dim name, shared across inputs.

    A dim written as a plain symbol (``N``) becomes ``Dim("N", min=2)`` (min 2: torch
    specialises sizes 0 and 1); fixed sizes, ``_`` and compound dims (``T*D``) stay static."""
    from torch.export import Dim

    dims: dict[str, Any] = {}
    spec: dict[str, Any] = {}
    for name, t in types.items():
        entry: dict[int, Any] = {}
        offset = 1 if t.variadic else 0
        for i, d in enumerate(t.shape):
            if isinstance(d, Sym) and d.name is not None:
                if d.name not in dims:
                    dims[d.name] = Dim(d.name, min=2)
                entry[i + offset] = dims[d.name]
        spec[name] = entry or None
    return spec


def symbolic_dims(types: dict[str, TensorType]) -> list[str]:
    """The names that :func:`dynamic_shapes` turns into ``Dim``s, in order of appearance."""
    seen: dict[str, None] = {}
    for t in types.values():
        for d in t.shape:
            if isinstance(d, Sym) and d.name is not None:
                seen.setdefault(d.name)
    return list(seen)


# --------------------------------------------------------------------------- what cannot export


@dataclass(frozen=True)
class Limitation:
    formats: tuple[str, ...]
    reason: str
    help: str


def _pool_without_graphs(node: PNode) -> bool:
    return node.op.startswith("global_") and getattr(node.params, "graphs", 1) is None


# Blocks (by registry name) that a format cannot express, and why. Checked before exporting,
# so the user gets a diagnostic at the call instead of a converter's stack trace.
LIMITATIONS: dict[str, Limitation] = {
    "MoE": Limitation(
        ("onnx",),
        "MoE dispatch is data dependent: tokens are sorted by expert (a stable sort ONNX lacks)"
        " and each expert's batch size is read from the router's output",
        "export to pt2 (torch.export handles the data-dependent sizes), or use the dense `Gate`",
    ),
}
POOL_LIMITATION = Limitation(
    ("onnx", "pt2"),
    "without `graphs=`, the number of graphs is read from the data (batch.max() + 1),"
    " which an exported graph would freeze to the example's value",
    "pass the number of graphs per batch, e.g. graphs=32",
)


def _nodes(prog: Program) -> Iterator[tuple[Program, PNode]]:
    """Every node with its program, including the nodes inside user blocks."""
    todo, seen = [prog], set()
    while todo:
        p = todo.pop()
        if id(p) in seen:
            continue
        seen.add(id(p))
        for node in p.nodes:
            yield p, node
        # user blocks called in the graph; a user block used as a value (an MoE expert) is
        # built per copy and not visited: torch's own error covers it
        todo.extend(m.program for m in p.modules.values() if m.program is not None)


def unsupported(prog: Program, fmt: str) -> list[Diagnostic]:
    """Diagnostics (E0603) for every call of a block that ``fmt`` cannot express."""
    out: list[Diagnostic] = []
    seen: set[tuple[str, str]] = set()
    programs = {id(p): p for p, _ in _nodes(prog)}
    for p in programs.values():
        for m in p.modules.values():
            lim = LIMITATIONS.get(m.decl.name) if m.decl is not None else None
            if lim is not None and fmt in lim.formats and (m.decl.name, str(m.span)) not in seen:  # type: ignore[union-attr]
                seen.add((m.decl.name, str(m.span)))  # type: ignore[union-attr]
                out.append(Diagnostic("E0603", f"`{m.decl.name}` cannot be exported to {fmt}: {lim.reason}",  # type: ignore[union-attr]
                                      m.span, help=lim.help))
        for node in p.nodes:
            if node.kind == "function" and _pool_without_graphs(node) and fmt in POOL_LIMITATION.formats:
                out.append(Diagnostic("E0603", f"`{node.op}` cannot be exported to {fmt}: {POOL_LIMITATION.reason}",
                                      node.span, help=POOL_LIMITATION.help))
    return out


# --------------------------------------------------------------------------- numerical checks


def flat_outputs(out: Any) -> list[torch.Tensor]:
    """A model's outputs as a list: one tensor, a tuple, or a dict in its order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return list(out.values())
    return list(out)


def max_abs_diff(expected: list[torch.Tensor], actual: list[Any]) -> float:
    """The largest |expected - actual| over all outputs; inf where shapes differ or where
    one side is infinite (or NaN) and the other is not."""
    return max((abs_diff(e, a) for e, a in zip(expected, actual, strict=True)), default=0.0)


def abs_diff(expected: torch.Tensor, actual: Any) -> float:
    """max |expected - actual| of one output (:func:`max_abs_diff`'s rules)."""
    e = expected.detach().to(torch.float64)
    a = torch.as_tensor(actual).detach().to(torch.float64)
    if e.shape != a.shape:
        return math.inf
    finite = torch.isfinite(e)
    if not torch.equal(finite, torch.isfinite(a)) or not torch.equal(e[~finite].nan_to_num(), a[~finite].nan_to_num()):
        return math.inf
    return float((e[finite] - a[finite]).abs().max()) if finite.any() else 0.0


def check_inputs(prog: Program) -> dict[str, torch.Tensor]:
    """Inputs for numerical checks: symbolic dims sized differently from the traced example."""
    return example_inputs(prog.input_types(), default=CHECK_SIZE, seed=1)


def reference_outputs(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    model.eval()
    with torch.no_grad():
        return flat_outputs(model(**inputs))


# --------------------------------------------------------------------------- torch.export (.pt2)


def export_program(model: torch.nn.Module, prog: Program) -> Any:
    """``torch.export.export`` with one ``Dim`` per symbolic input dim; an ExportError if it fails."""
    problems = unsupported(prog, "pt2")
    if problems:
        raise ExportError(problems[0].message, problems[0].help, problems)
    types = prog.input_types()
    model.eval()
    try:
        with _quiet():
            return torch.export.export(model, (), example_inputs(types), dynamic_shapes=dynamic_shapes(types))
    except Exception as e:  # torch's own message says which dim or op; keep its first lines
        raise ExportError(f"torch.export failed: {_first_lines(e)}", _specialised_help(e, types)) from None


def export_pt2(model: torch.nn.Module, prog: Program, path: str) -> float:
    """Write ``path`` (.pt2); return the max abs difference to ``model`` on other sizes."""
    ep = export_program(model, prog)
    torch.export.save(ep, path)
    inputs = check_inputs(prog)
    return max_abs_diff(reference_outputs(model, inputs), pt2_outputs(path, inputs))


def pt2_outputs(path: str, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The outputs of the program saved at ``path`` on ``inputs``."""
    loaded = torch.export.load(path)
    try:
        with torch.no_grad():
            return flat_outputs(loaded.module()(**inputs))
    except Exception as e:
        raise ExportError(f"the exported program fails on inputs of other sizes: {_first_lines(e)}") from None


# --------------------------------------------------------------------------- ONNX


def onnx_missing() -> str | None:
    """None when the ONNX exporter's packages are installed; else the install hint."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        return f"ONNX export needs {' and '.join(missing)}: pip install 'dsl[onnx]'"
    return None


def export_onnx(model: torch.nn.Module, prog: Program, path: str) -> float | None:
    """Write ``path`` (.onnx) through torch.onnx's dynamo exporter, symbolic dims dynamic.

    Returns the max abs difference to ``model`` on inputs of other sizes, computed with
    onnxruntime; None when onnxruntime is not installed (the file is still written)."""
    write_onnx(model, prog, path)
    return onnx_check(model, prog, path)


def write_onnx(model: torch.nn.Module, prog: Program, path: str) -> None:
    """Write ``path`` (.onnx), unchecked; an ExportError for what ONNX cannot express."""
    problems = unsupported(prog, "onnx")
    if problems:
        raise ExportError(problems[0].message, problems[0].help, problems)
    types = prog.input_types()
    outputs = list(prog.outputs)
    model.eval()
    try:
        with _quiet():
            program = torch.onnx.export(
                model, (), kwargs=example_inputs(types), dynamic_shapes=dynamic_shapes(types),
                input_names=list(types), output_names=outputs, opset_version=ONNX_OPSET,
                dynamo=True, external_data=False, verbose=False,
            )
            assert program is not None
            program.save(path)
    except Exception as e:
        raise ExportError(f"torch.onnx could not convert the model: {_first_lines(e)}",
                          "export to pt2 or python instead; docs/EXPORT.md lists what converts") from None


def onnx_check(model: torch.nn.Module, prog: Program, path: str) -> float | None:
    """Max abs difference between ``model`` and the ONNX file under onnxruntime, or None."""
    inputs = check_inputs(prog)
    actual = onnx_outputs(path, inputs)
    return None if actual is None else max_abs_diff(reference_outputs(model, inputs), actual)


def onnx_outputs(path: str, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor] | None:
    """The outputs of the ONNX file under onnxruntime (CPU) on ``inputs``; None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    # an input the graph never reads (e.g. a mask unused after tracing) is dropped by the exporter
    feed = {k: v.numpy() for k, v in inputs.items() if k in wanted}
    try:
        actual = session.run(None, feed)
    except Exception as e:
        raise ExportError(f"onnxruntime fails on inputs of other sizes: {_first_lines(e)}") from None
    return [torch.from_numpy(a) for a in actual]


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep the exporters' progress lines and warnings off the user's terminal."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _first_lines(e: BaseException, n: int = 3) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = " ".join(lines[:n]) or type(e).__name__
    return text[:500]


def _specialised_help(e: BaseException, types: dict[str, TensorType]) -> str | None:
    text = str(e)
    names = [n for n in symbolic_dims(types) if n in text]
    if names:
        return (f"the model fixes the size of {', '.join(names)}; bind it with --dim "
                + " ".join(f"{n}=..." for n in names) + " so that it is exported as a constant")
    return None


__all__ = [
    "ExportError", "example_inputs", "dynamic_shapes", "export_program", "export_pt2", "export_onnx",
    "onnx_check", "onnx_missing", "unsupported", "max_abs_diff", "abs_diff", "flat_outputs", "LIMITATIONS",
    "pt2_outputs", "onnx_outputs", "write_onnx",
]
