"""Global pooling: one row per graph from the node rows of a batch of graphs.

Several graphs batched into one disjoint graph are told apart by ``batch``,
where batch[n] ∈ {0, …, G-1} is the graph of node n. For graph g with nodes
V_g = {n : batch[n] = g}:

    global_add_pool:   r_g = Σ_{n ∈ V_g} x_n
    global_mean_pool:  r_g = (1 / |V_g|) Σ_{n ∈ V_g} x_n
    global_max_pool:   r_g = max_{n ∈ V_g} x_n          (per feature)

A graph without nodes (an unused id below G) gives a zero row.

Lowered to ``torch_geometric.nn.global_{add,mean,max}_pool``. The number of
graphs G is a new symbolic dim unless ``graphs=G`` is given (then every id in
``batch`` must be below G). Without ``graphs`` G is computed at run time as
``batch.max() + 1``, reading a tensor value into a Python int: a data-dependent
size. ``torch.compile(fullgraph=True)`` captures it (torch 2.13 traces it as an
unbacked size; older releases break the graph there), but ``torch.export``
refuses it (GuardOnDataDependentSymNode). With ``graphs`` both work; pass it
when the number of graphs per batch is fixed.

Shapes:
    x: [N, F], batch: [N] long -> [G, F]     (G = graphs when given, else a new dim)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field

from dsl.language.registry import BuildCall, Decl, Lowered, Params, TensorArg, register
from dsl.language.shapes import ShapeCall, ShapeError, TensorType


class PoolParams(Params):
    graphs: int | None = Field(
        None, gt=0, description="number of graphs G per batch; computed from batch when omitted"
    )


def _infer(reduce: str) -> Callable[[ShapeCall, PoolParams], list[TensorType]]:
    def infer_pool(call: ShapeCall, p: PoolParams) -> list[TensorType]:
        b = call.match("x", "N F", dtype="float")
        t = call.type("batch")
        if t.dtype != "long":
            raise ShapeError(
                f"dtype mismatch in argument `batch` of `{call.block}`",
                arg="batch",
                label=f"expected long, found {t.dtype}",
                help="`batch` holds graph numbers: declare it as `[N] long`",
                code="E0302",
            )
        call.match("batch", "N", N=b.N)
        graphs = p.graphs if p.graphs is not None else call.fresh("G")
        why = f"{call.block} {reduce} the nodes of each of {graphs} graphs"
        return [call.tensor([graphs, b.F], why=why)]

    return infer_pool


def _lower(name: str) -> Callable[[BuildCall, PoolParams], Lowered]:
    def lower_pool(call: BuildCall, p: PoolParams) -> Lowered:
        import torch_geometric.nn as pyg_nn

        target: Any = getattr(pyg_nn, name)
        return Lowered(target, kwargs={"size": p.graphs} if p.graphs is not None else {})

    return lower_pool


def _register(name: str, reduce: str) -> None:
    register(
        Decl(
            name=name,
            kind="function",
            params=PoolParams,
            inputs=(
                TensorArg("x", doc="node features [N, F]"),
                TensorArg("batch", doc="graph id of every node [N] long", index_of="graphs"),
            ),
            outputs=("y",),
            infer=_infer(reduce),
            lower=_lower(name),
            doc=__doc__ or "",
            signature="[N, F], [N] long -> [G, F]",
        )
    )


_register("global_add_pool", "sums")
_register("global_mean_pool", "averages")
_register("global_max_pool", "takes the maximum over")
