"""GAT: the compiled ``GAT`` block against PyG's ``GATConv`` called directly.

Forward+backward on the same stochastic-block-model graph (4 communities,
average degree 10, 80% of edges inside a community), with E from 10⁴ up to
10⁶ edges (10⁵ in --quick). Target: ≤ 1.02× PyG; the notes give the cost per
edge (flat = linear scaling).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.harness import Context, Row, interleave

NAME = "gat"
TITLE = "GAT: against PyG GATConv on SBM graphs"

FEATURES, OUT, HEADS = 32, 16, 4
BLOCKS, DEGREE, P_IN = 4, 10, 0.8

SPEC = f"""
model G {{
    input x: [N, {FEATURES}]
    input edge_index: [2, E] long
    h = GAT(x, edge_index, out={OUT}, heads={HEADS})
    output h
}}
"""


def sbm_graph(edges: int, seed: int = 0) -> tuple[Any, Any, int]:
    """(x [N, F], edge_index [2, E], N): a sparse SBM sampled edge by edge.

    Each edge picks a source uniformly; its target is in the source's community
    with probability ``P_IN``, otherwise uniform over all nodes. Sampling edges
    (not node pairs) keeps a 10⁶-edge graph cheap to make.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    nodes = max(BLOCKS, edges // DEGREE)
    per_block = nodes // BLOCKS
    nodes = per_block * BLOCKS
    src = torch.randint(0, nodes, (edges,), generator=g)
    inside = torch.rand(edges, generator=g) < P_IN
    same = (src // per_block) * per_block + torch.randint(0, per_block, (edges,), generator=g)
    anywhere = torch.randint(0, nodes, (edges,), generator=g)
    dst = torch.where(inside, same, anywhere)
    x = torch.randn(nodes, FEATURES, generator=g)
    return x, torch.stack([src, dst]), nodes


def _step(fn: Callable[[], Any], params: Callable[[], Any]) -> Callable[[], object]:
    def step() -> object:
        fn().sum().backward()
        for p in params():
            p.grad = None
        return None

    return step


def run(ctx: Context) -> list[Row]:
    torch = ctx.init_torch()
    from torch_geometric.nn import GATConv

    import dsl

    sizes = ctx.pick([10_000, 100_000], [10_000, 100_000, 1_000_000])
    rows: list[Row] = []
    per_edge: dict[int, float] = {}
    for edges in sizes:
        x, edge_index, nodes = sbm_graph(edges)
        x, edge_index = x.to(ctx.device), edge_index.to(ctx.device)
        torch.manual_seed(0)
        model = dsl.compile(dsl.loads(SPEC)).to(ctx.device)
        conv = GATConv(FEATURES, OUT, heads=HEADS).to(ctx.device)
        conv.load_state_dict({k.removeprefix("h.conv."): v for k, v in model.state_dict().items()})
        # Below 10⁶ edges, twice the rounds and samples of 0.2 s (several calls each): one
        # call's noise on this CPU is larger than the target's 2%.
        small = edges < 1_000_000
        repeats = 2 * ctx.repeats if small else max(3, ctx.repeats // 2)
        stats = interleave(
            {"PyG GATConv": _step(lambda c=conv, x=x, ei=edge_index: c(x, ei), conv.parameters),
             "dsl GAT": _step(lambda m=model, x=x, ei=edge_index: m(x=x, edge_index=ei),
                              model.parameters)},
            repeats=repeats, warmup=ctx.warmup, sync=ctx.sync,
            min_time=ctx.pick(0.01, 0.2 if small else 0.05),
        )
        case = f"SBM, N={nodes:,}, E={edges:,}"
        rows += [
            Row(case, "PyG GATConv", stats["PyG GATConv"], per=edges, per_unit="edge"),
            Row(case, "dsl GAT", stats["dsl GAT"], per=edges, per_unit="edge",
                baselines=["PyG GATConv"], target=1.02),
        ]
        per_edge[edges] = stats["dsl GAT"].median / edges
    line = ", ".join(f"E={e:,}: {t * 1e9:.0f} ns/edge" for e, t in per_edge.items())
    ctx.notes.append(f"dsl GAT forward+backward per edge: {line}.")
    return rows
