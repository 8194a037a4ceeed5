"""Example inputs for a compiled model and `torch.export` with symbolic dims as `Dim`s."""

from __future__ import annotations

from typing import Any

import torch

from .program import Program
from .shapes import Sym, TensorType


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


def example_inputs(types: dict[str, TensorType], sizes: dict[str, int] | None = None, default: int = 5,
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors matching ``types``; symbols get distinct sizes (5, 6, ...) unless given.

    Integer inputs are zeros (valid indices for any embedding or graph)."""
    sizes = dict(sizes or {})
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, t in types.items():
        shape = ([2] if t.variadic else []) + _sizes(t, sizes, default)
        if t.dtype == "float":
            out[name] = torch.randn(*shape, generator=g)
        elif t.dtype == "bool":
            out[name] = torch.ones(*shape, dtype=torch.bool)
        else:
            out[name] = torch.zeros(*shape, dtype=torch.long if t.dtype == "long" else torch.int32)
    return out


def dynamic_shapes(types: dict[str, TensorType]) -> dict[str, Any]:
    """One `torch.export.Dim` per symbolic dim name, shared across inputs."""
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


def export_program(model: torch.nn.Module, prog: Program) -> Any:
    types = prog.input_types()
    inputs = example_inputs(types)
    return torch.export.export(model, (), inputs, dynamic_shapes=dynamic_shapes(types))


def export_pt2(model: torch.nn.Module, prog: Program, path: str) -> None:
    ep = export_program(model, prog)
    torch.export.save(ep, path)
