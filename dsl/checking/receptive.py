"""Receptive fields: which input pixels a position of a feature map sees. Pure Python.

ProtoPNet shows a pushed prototype as the region of the training image that
its patch came from (cfchen-duke/ProtoPNet, ``receptive_field.py``:
``compute_proto_layer_rf_info`` and ``compute_rf_prototype``). The same
arithmetic, from the checked program: walking from a tensor back to the model
input, every windowed layer (convolution, pooling) with kernel k, stride s,
padding p and dilation d maps the field of its input (jump j, size r, centre of
the first position c) to

    k' = d·(k - 1) + 1,   j ← j·s,   r ← r + (k' - 1)·j,   c ← c + ((k' - 1)/2 - p)·j

(in input pixels, starting from j = 1, r = 1, c = 0.5: the centre of pixel 0).
Element-wise functions, normalisation and dropout keep the field; a sum of two
branches takes the wider one (the main path of a residual block); anything else
(reshape, attention, pooling to a fixed size) has no such field, and the
prototypes are shown as whole inputs instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dsl.checking.program import PNode, Program, Ref, arg_refs

KEEPS_FIELD = frozenset({"relu", "sigmoid", "tanh", "gelu", "elu", "silu", "leaky_relu", "softplus", "abs", "exp",
                         "log", "sqrt", "square", "clamp", "pow", "BatchNorm", "Dropout", "LayerNorm"})
CONVS = {"Conv1d": 1, "Conv2d": 2}
POOLS = {"max_pool1d": 1, "max_pool2d": 2, "avg_pool1d": 1, "avg_pool2d": 2}


@dataclass(frozen=True)
class ReceptiveField:
    """Per spatial axis: the jump between neighbouring positions, the field's size and the centre of position 0."""

    jump: tuple[float, ...]
    size: tuple[float, ...]
    start: tuple[float, ...]
    input: str  # the model input the field lies in

    def box(self, position: tuple[int, ...], lengths: tuple[int, ...]) -> list[tuple[int, int]]:
        """[(first, last + 1), ...] per axis: the input pixels position ``position`` sees, within ``lengths``."""
        out = []
        for i, (j, r, c) in enumerate(zip(self.jump, self.size, self.start, strict=True)):
            centre = c + position[i] * j
            out.append((max(0, math.floor(centre - r / 2)), min(lengths[i], math.ceil(centre + r / 2))))
        return out


def receptive_field(prog: Program, ref: Ref, axes: int) -> ReceptiveField | None:
    """The field of tensor ``ref`` (channels first, ``axes`` spatial dims) in a model input, or None."""
    nodes = {n.name: n for n in prog.nodes}
    return _field(nodes, ref, axes, depth=0)


def _field(nodes: dict[str, PNode], ref: Ref, axes: int, depth: int) -> ReceptiveField | None:
    node = nodes.get(ref.node)
    if node is None or depth > 10_000:
        return None
    if node.kind == "input":
        one = (1.0,) * axes
        return ReceptiveField(one, one, (0.5,) * axes, node.op)
    refs = arg_refs(node.args)
    if node.kind == "binop" and node.op in ("+", "-", "*") and refs:
        fields = [f for r in refs if (f := _field(nodes, r, axes, depth + 1)) is not None]
        return max(fields, key=lambda f: f.size) if fields else None
    if node.decl is None or not refs:
        return None
    name = node.decl.name
    if name in KEEPS_FIELD:
        return _field(nodes, refs[0], axes, depth + 1)
    window = _window(node, axes)
    if window is None:
        return None
    inner = _field(nodes, refs[0], axes, depth + 1)
    if inner is None:
        return None
    jump, size, start = [], [], []
    for i, (k, s, p, d) in enumerate(window):
        j, r, c = inner.jump[i], inner.size[i], inner.start[i]
        span = d * (k - 1) + 1
        jump.append(j * s)
        size.append(r + (span - 1) * j)
        start.append(c + ((span - 1) / 2 - p) * j)
    return ReceptiveField(tuple(jump), tuple(size), tuple(start), inner.input)


def _per_axis(value: object, axes: int) -> list[int]:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * axes  # type: ignore[call-overload]
    return [int(v) for v in (values if len(values) == axes else values * axes)]


def _window(node: PNode, axes: int) -> list[tuple[int, int, int, int]] | None:
    """(kernel, stride, padding, dilation) per axis of a windowed layer, or None."""
    assert node.decl is not None
    p = node.params
    name = node.decl.name
    if CONVS.get(name) == axes:
        kernel = _per_axis(p.kernel, axes)  # type: ignore[union-attr]
        dilation = _per_axis(p.dilation, axes)  # type: ignore[union-attr]
        if p.padding == "same":  # type: ignore[union-attr]
            padding = [d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=True)]
        else:
            padding = _per_axis(p.padding, axes)  # type: ignore[union-attr]
        stride = _per_axis(p.stride, axes)  # type: ignore[union-attr]
        return list(zip(kernel, stride, padding, dilation, strict=True))
    if POOLS.get(name) == axes:
        kernel = _per_axis(p.kernel, axes)  # type: ignore[union-attr]
        stride = _per_axis(p.stride if p.stride is not None else p.kernel, axes)  # type: ignore[union-attr]
        return [(k, s, 0, 1) for k, s in zip(kernel, stride, strict=True)]
    return None
