"""GAT, GATv2 and the global pools: shapes, numerics against PyG and against a
dense implementation of the papers' equations, attention, equivariance, compile
and export."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers import build, infer
from torch import Tensor

from dsl.language.shapes import ShapeError, Sym

N_NODES, N_FEAT, EDGE_DIM = 7, 5, 3
# Edges j -> i as (source, target). Node 2 has a self loop already (the layer
# must replace it by exactly one loop); node 6 has no incoming edge.
EDGES = [
    (0, 1),
    (1, 0),
    (1, 2),
    (2, 3),
    (3, 1),
    (4, 1),
    (5, 4),
    (0, 4),
    (2, 2),
    (3, 5),
    (6, 0),
    (5, 0),
    (4, 3),
]
N_EDGES = len(EDGES)

CONFIGS: list[dict[str, Any]] = [
    {"out": 4},
    {"out": 3, "heads": 3},
    {"out": 3, "heads": 3, "concat": False},
    {"out": 4, "heads": 2, "edge_dim": EDGE_DIM},
    {"out": 4, "heads": 2, "residual": True},
    {"out": 4, "heads": 2, "self_loops": False},
    {"out": 4, "bias": False, "negative_slope": 0.05},
    {
        "out": 2,
        "heads": 2,
        "concat": False,
        "edge_dim": EDGE_DIM,
        "residual": True,
        "self_loops": False,
    },
]
V2_ONLY: list[dict[str, Any]] = [
    {"out": 4, "heads": 2, "share_weights": True},
    {"out": 3, "heads": 2, "share_weights": True, "edge_dim": EDGE_DIM, "bias": False},
]
CASES = [("GAT", c) for c in CONFIGS] + [("GATv2", c) for c in CONFIGS + V2_ONLY]


def case_id(case: tuple[str, dict[str, Any]]) -> str:
    name, cfg = case
    return name + "-" + "-".join(f"{k}={v}" for k, v in cfg.items())


@pytest.fixture
def graph() -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_NODES, N_FEAT, generator=g)
    edge_index = torch.tensor(EDGES, dtype=torch.long).t().contiguous()
    edge_attr = torch.randn(N_EDGES, EDGE_DIM, generator=g)
    return x, edge_index, edge_attr


def make(name: str, cfg: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    """Build the block's module through the registry, with random (non-zero) weights."""
    torch.manual_seed(seed)
    kw = dict(cfg)
    if cfg.get("edge_dim"):
        kw["edge_attr"] = f"[{N_EDGES}, {EDGE_DIM}]"
    module = build(name, f"[{N_NODES}, {N_FEAT}]", f"[2, {N_EDGES}] long", **kw)
    with torch.no_grad():  # PyG initialises the bias to zero: make it count
        for p in module.parameters():
            if p.dim() == 1:
                p.normal_()
    return module.eval()


def run(module: torch.nn.Module, cfg: dict[str, Any], x: Tensor, ei: Tensor, ea: Tensor) -> Tensor:
    return module(x, ei, ea) if cfg.get("edge_dim") else module(x, ei)


# --------------------------------------------------------------------------- reference: PyG


def pyg_twin(name: str, cfg: dict[str, Any], module: torch.nn.Module) -> torch.nn.Module:
    """PyG's own layer with the same hyperparameters and weights."""
    from torch_geometric.nn import GATConv, GATv2Conv

    kw = {
        "heads": cfg.get("heads", 1),
        "concat": cfg.get("concat", True),
        "negative_slope": cfg.get("negative_slope", 0.2),
        "add_self_loops": cfg.get("self_loops", True),
        "edge_dim": cfg.get("edge_dim"),
        "bias": cfg.get("bias", True),
        "residual": cfg.get("residual", False),
    }
    if name == "GATv2":
        ref = GATv2Conv(N_FEAT, cfg["out"], share_weights=cfg.get("share_weights", False), **kw)
    else:
        ref = GATConv(N_FEAT, cfg["out"], **kw)
    state = {k.removeprefix("conv."): v for k, v in module.state_dict().items()}
    ref.load_state_dict(state)  # strict: parameter sets must agree
    return ref.eval()


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_pyg(
    case: tuple[str, dict[str, Any]], graph: tuple[Tensor, Tensor, Tensor]
) -> None:
    name, cfg = case
    x, ei, ea = graph
    module = make(name, cfg)
    ref = pyg_twin(name, cfg, module)
    want = ref(x, ei, ea) if cfg.get("edge_dim") else ref(x, ei)
    torch.testing.assert_close(run(module, cfg, x, ei, ea), want, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- reference: the equations


def dense_edges(cfg: dict[str, Any], ei: Tensor, ea: Tensor) -> tuple[Tensor, Tensor]:
    """Adjacency mask[i, j] (edge j -> i) and edge features feat[i, j], self loops
    replaced by one per node whose feature is the mean over the node's other
    incoming edges (zero without any)."""
    mask = torch.zeros(N_NODES, N_NODES, dtype=torch.bool)
    feat = torch.zeros(N_NODES, N_NODES, EDGE_DIM)
    mask[ei[1], ei[0]] = True
    feat[ei[1], ei[0]] = ea
    if cfg.get("self_loops", True):
        eye = torch.eye(N_NODES, dtype=torch.bool)
        mask &= ~eye
        feat = feat * mask.unsqueeze(-1)
        count = mask.sum(1, keepdim=True).clamp(min=1)
        loop_feat = feat.sum(1) / count
        mask |= eye
        feat[eye] = loop_feat
    return mask, feat


def dense_reference(
    name: str, cfg: dict[str, Any], module: torch.nn.Module, x: Tensor, ei: Tensor, ea: Tensor
) -> tuple[Tensor, Tensor]:
    """Output and α[i, j, head], written from the GAT / GATv2 equations."""
    conv: Any = module.conv
    heads, out = cfg.get("heads", 1), cfg["out"]
    slope = cfg.get("negative_slope", 0.2)
    mask, feat = dense_edges(cfg, ei, ea)
    with_edges = bool(cfg.get("edge_dim"))
    we = (feat @ conv.lin_edge.weight.t()).view(N_NODES, N_NODES, heads, out) if with_edges else 0.0
    if name == "GAT":
        # e_ij = LeakyReLU(aᵀ [W h_i ‖ W h_j] (+ a_eᵀ W_e e_ji)), with a = [a_dst ‖ a_src]
        wh = (x @ conv.lin.weight.t()).view(N_NODES, heads, out)
        score_i = (wh * conv.att_dst).sum(-1)  # [N, H]
        score_j = (wh * conv.att_src).sum(-1)
        logits = score_i[:, None, :] + score_j[None, :, :]  # [i, j, H]
        if with_edges:
            logits = logits + (we * conv.att_edge).sum(-1)
        logits = F.leaky_relu(logits, slope)
        message = wh
    else:
        # e_ij = aᵀ LeakyReLU(W_r h_i + W_l h_j (+ W_e e_ji))
        xl = F.linear(x, conv.lin_l.weight, conv.lin_l.bias).view(N_NODES, heads, out)
        xr = F.linear(x, conv.lin_r.weight, conv.lin_r.bias).view(N_NODES, heads, out)
        z = xr[:, None] + xl[None, :] + we  # [i, j, H, C]
        logits = (F.leaky_relu(z, slope) * conv.att).sum(-1)
        message = xl
    logits = logits.masked_fill(~mask.unsqueeze(-1), float("-inf"))
    alpha = torch.softmax(logits, dim=1).nan_to_num(0.0)  # a node without in-edges gets 0
    h = torch.einsum("ijh,jhc->ihc", alpha, message)
    y = h.reshape(N_NODES, heads * out) if cfg.get("concat", True) else h.mean(1)
    if cfg.get("residual"):
        y = y + x @ conv.res.weight.t()
    if cfg.get("bias", True):
        y = y + conv.bias
    return y, alpha


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_equations(
    case: tuple[str, dict[str, Any]], graph: tuple[Tensor, Tensor, Tensor]
) -> None:
    name, cfg = case
    x, ei, ea = graph
    module = make(name, cfg, seed=1)
    with torch.no_grad():
        want, alpha = dense_reference(name, cfg, module, x, ei, ea)
        got = run(module, cfg, x, ei, ea)
        edges, got_alpha = module.attention(x, ei, ea if cfg.get("edge_dim") else None)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    # attention(): the same α as the equations, edge by edge
    torch.testing.assert_close(got_alpha, alpha[edges[1], edges[0]], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["GAT", "GATv2"])
@pytest.mark.parametrize("self_loops", [True, False])
def test_attention_sums_to_one(
    name: str, self_loops: bool, graph: tuple[Tensor, Tensor, Tensor]
) -> None:
    x, ei, _ = graph
    module = make(name, {"out": 3, "heads": 2, "self_loops": self_loops})
    edges, alpha = module.attention(x, ei)
    assert alpha.shape == (edges.size(1), 2)
    totals = torch.zeros(N_NODES, 2).index_add_(0, edges[1], alpha)
    has_in = torch.zeros(N_NODES, dtype=torch.bool)
    has_in[edges[1]] = True
    torch.testing.assert_close(totals[has_in], torch.ones(int(has_in.sum()), 2))
    if self_loops:  # the existing loop 2 -> 2 is replaced, and every node gets one
        loops = edges[0] == edges[1]
        assert has_in.all() and int(loops.sum()) == N_NODES
        assert edges.size(1) == N_EDGES - 1 + N_NODES
    else:
        assert not has_in[6] and edges.size(1) == N_EDGES


@pytest.mark.parametrize("case", [CASES[3], CASES[-1]], ids=case_id)
def test_node_permutation_equivariance(
    case: tuple[str, dict[str, Any]], graph: tuple[Tensor, Tensor, Tensor]
) -> None:
    name, cfg = case
    x, ei, ea = graph
    module = make(name, cfg)
    perm = torch.randperm(N_NODES, generator=torch.Generator().manual_seed(3))
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(N_NODES)
    order = torch.randperm(N_EDGES, generator=torch.Generator().manual_seed(4))  # edge order too
    with torch.no_grad():
        y = run(module, cfg, x, ei, ea)
        y_perm = run(module, cfg, x[perm], inverse[ei][:, order], ea[order])
    torch.testing.assert_close(y_perm, y[perm], rtol=0, atol=1e-5)


def test_attention_dropout_only_in_training(graph: tuple[Tensor, Tensor, Tensor]) -> None:
    x, ei, _ = graph
    module = make("GAT", {"out": 4, "heads": 2, "dropout": 0.5})
    twin = make("GAT", {"out": 4, "heads": 2})
    twin.load_state_dict(module.state_dict())
    torch.testing.assert_close(module(x, ei), twin(x, ei))  # eval: no dropout
    module.train()
    torch.manual_seed(0)
    assert not torch.allclose(module(x, ei), twin(x, ei))


def test_attention_is_not_part_of_forward(graph: tuple[Tensor, Tensor, Tensor]) -> None:
    x, ei, _ = graph
    module = make("GAT", {"out": 4})
    y = module(x, ei)
    assert isinstance(y, Tensor) and y.shape == (N_NODES, 4)
    x.requires_grad_(True)
    _, alpha = module.attention(x, ei)
    assert not alpha.requires_grad  # inspection only: no graph kept


def test_gat_state_dict_layout() -> None:
    module = make("GAT", {"out": 4, "heads": 2, "edge_dim": EDGE_DIM, "residual": True})
    assert set(module.state_dict()) == {
        "conv.lin.weight",
        "conv.att_src",
        "conv.att_dst",
        "conv.lin_edge.weight",
        "conv.att_edge",
        "conv.res.weight",
        "conv.bias",
    }
    assert module.conv.lin.weight.shape == (8, N_FEAT)


# --------------------------------------------------------------------------- shape rules


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_shape_rule_agrees_with_module(
    case: tuple[str, dict[str, Any]], graph: tuple[Tensor, Tensor, Tensor]
) -> None:
    name, cfg = case
    x, ei, ea = graph
    kw = dict(cfg)
    if cfg.get("edge_dim"):
        kw["edge_attr"] = f"[{N_EDGES}, {EDGE_DIM}]"
    (t,) = infer(name, f"[{N_NODES}, {N_FEAT}]", f"[2, {N_EDGES}] long", **kw)
    y = run(make(name, cfg), cfg, x, ei, ea)
    assert t.concrete() == tuple(y.shape) and t.dtype == "float"


def test_shape_rule_symbolic_and_why() -> None:
    (t,) = infer("GAT", "[N, F]", "[2, E] long", out=16, heads=4)
    assert t.shape == (Sym("N"), 64)
    assert t.why == "GAT(out=16, heads=4) concatenates 4 heads"
    (t,) = infer("GATv2", "[N, 8]", "[2, E] long", out=16, heads=4, concat=False)
    assert t.shape == (Sym("N"), 16) and "averages 4 heads" in (t.why or "")
    (t,) = infer("GAT", "[N, 8]", "[2, E] long", edge_attr="[E, 2]", out=5, edge_dim=2)
    assert t.shape == (Sym("N"), 5)


def test_edge_index_must_be_long() -> None:
    with pytest.raises(ShapeError) as err:
        infer("GAT", "[N, 8]", "[2, E]", out=4)
    e = err.value
    assert e.code == "E0302" and e.arg == "edge_index"
    assert e.label == "expected long, found float"
    assert e.help is not None and "[2, E] long" in e.help


@pytest.mark.parametrize(
    ("shapes", "kw", "code", "arg"),
    [
        (("[N, 8] long", "[2, E] long"), {}, "E0302", "x"),
        (("[N, 8]", "[3, E] long"), {}, "E0301", "edge_index"),
        (("[N, 8]", "[E] long"), {}, "E0303", "edge_index"),
        (("[B, N, 8]", "[2, E] long"), {}, "E0303", "x"),
        (("[N, 8]", "[2, E] long"), {"edge_dim": 3}, "E0202", "edge_dim"),
        (("[N, 8]", "[2, E] long"), {"edge_attr": "[E, 3]"}, "E0403", "edge_attr"),
        (("[N, 8]", "[2, 10] long"), {"edge_dim": 3, "edge_attr": "[9, 3]"}, "E0301", "edge_attr"),
        (("[N, 8]", "[2, E] long"), {"edge_dim": 3, "edge_attr": "[E, 4]"}, "E0301", "edge_attr"),
    ],
)
def test_shape_rule_errors(
    shapes: tuple[str, str], kw: dict[str, Any], code: str, arg: str
) -> None:
    with pytest.raises(ShapeError) as err:
        infer("GATv2", *shapes, out=4, **kw)
    assert (err.value.code, err.value.arg) == (code, arg)


def test_bad_hyperparameters_rejected() -> None:
    from helpers import params
    from pydantic import ValidationError

    for bad in (
        {"out": 0},
        {"out": 4, "heads": 0},
        {"out": 4, "dropout": 1.0},
        {"out": 4, "edge_dim": 0},
    ):
        with pytest.raises(ValidationError):
            params("GAT", **bad)
    with pytest.raises(ValidationError):
        params("GAT", out=4, share_weights=True)  # GATv2 only


def test_declarations_do_not_import_torch() -> None:
    code = "import sys, dsl.blocks.gat, dsl.blocks.pool; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- pools

POOLS = {"global_add_pool": "sum", "global_mean_pool": "mean", "global_max_pool": "max"}


@pytest.mark.parametrize("name", sorted(POOLS))
def test_pool_shapes(name: str) -> None:
    (t,) = infer(name, "[N, 16]", "[N] long")
    assert t.shape[1] == 16 and isinstance(t.shape[0], Sym)
    assert t.shape[0] not in (Sym("N"), Sym("F"))  # a new dim, not one of the inputs
    (t,) = infer(name, "[N, 16]", "[N] long", graphs=3)
    assert t.shape == (3, 16)
    with pytest.raises(ShapeError) as err:
        infer(name, "[N, 16]", "[N]")
    assert (err.value.code, err.value.arg) == ("E0302", "batch")
    with pytest.raises(ShapeError) as err:
        infer(name, "[7, 16]", "[6] long")
    assert (err.value.code, err.value.arg) == ("E0301", "batch")


def test_pool_fresh_dims_are_distinct() -> None:
    from dsl.language.shapes import DimEnv

    env = DimEnv()
    (a,) = infer("global_mean_pool", "[N, 4]", "[N] long", env=env)
    (b,) = infer("global_max_pool", "[N, 4]", "[N] long", env=env)
    assert a.shape[0] != b.shape[0]


def manual_pool(x: Tensor, batch: Tensor, graphs: int, reduce: str) -> Tensor:
    rows = []
    for g in range(graphs):
        part = x[batch == g]
        if len(part) == 0:
            rows.append(torch.zeros(x.size(1)))
        elif reduce == "sum":
            rows.append(part.sum(0))
        elif reduce == "mean":
            rows.append(part.mean(0))
        else:
            rows.append(part.max(0).values)
    return torch.stack(rows)


def call_lowered(name: str, x: Tensor, batch: Tensor, **kw: Any) -> Tensor:
    low = build(name, f"[{x.size(0)}, {x.size(1)}]", f"[{batch.size(0)}] long", **kw)
    return low.target(x, batch, *low.args, **low.kwargs)


@pytest.mark.parametrize("name", sorted(POOLS))
def test_pool_values(name: str) -> None:
    x = torch.randn(9, 4, generator=torch.Generator().manual_seed(0))
    batch = torch.tensor([0, 0, 1, 1, 1, 3, 3, 3, 3])  # graph 2 is empty
    reduce = POOLS[name]
    got = call_lowered(name, x, batch)
    torch.testing.assert_close(got, manual_pool(x, batch, 4, reduce))
    got = call_lowered(name, x, batch, graphs=5)  # one trailing empty graph
    assert got.shape == (5, 4)
    torch.testing.assert_close(got, manual_pool(x, batch, 5, reduce))


def test_pool_lowering_passes_size() -> None:
    from torch_geometric.nn import global_mean_pool

    low = build("global_mean_pool", "[9, 4]", "[9] long", graphs=3)
    assert low.target is global_mean_pool and low.kwargs == {"size": 3} and not low.pack
    assert build("global_mean_pool", "[9, 4]", "[9] long").kwargs == {}


class PoolModule(torch.nn.Module):
    def __init__(self, graphs: int | None) -> None:
        super().__init__()
        kw = {"graphs": graphs} if graphs else {}
        self.low = build("global_max_pool", "[7, 3]", "[7] long", **kw)

    def forward(self, x: Tensor, batch: Tensor) -> Tensor:
        return self.low.target(x, batch, *self.low.args, **self.low.kwargs)


def test_pool_compile_and_export_as_documented() -> None:
    from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

    x = torch.randn(7, 3)
    batch = torch.tensor([0, 0, 1, 1, 1, 2, 2])
    torch._dynamo.reset()
    # without `graphs`: compile captures the data-dependent count, export refuses it
    compiled = torch.compile(PoolModule(None), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, batch), manual_pool(x, batch, 3, "max"))
    with pytest.raises(GuardOnDataDependentSymNode):
        torch.export.export(PoolModule(None), (x, batch))
    # with `graphs`: both work
    exported = torch.export.export(PoolModule(3), (x, batch)).module()
    other = torch.tensor([0, 1, 1, 1, 1, 1, 2])
    torch.testing.assert_close(exported(x, other), manual_pool(x, other, 3, "max"))


# --------------------------------------------------------------------------- compile and export


@pytest.mark.parametrize("name", ["GAT", "GATv2"])
def test_compile_fullgraph(name: str, graph: tuple[Tensor, Tensor, Tensor]) -> None:
    x, ei, ea = graph
    cfg = {"out": 3, "heads": 2, "edge_dim": EDGE_DIM, "residual": True}
    module = make(name, cfg)
    torch._dynamo.reset()
    # aot_eager traces forward and backward like inductor, without its C++ build time
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, ei, ea), module(x, ei, ea), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["GAT", "GATv2"])
def test_export_with_dynamic_graph_size(name: str, graph: tuple[Tensor, Tensor, Tensor]) -> None:
    from torch.export import Dim

    x, ei, ea = graph
    cfg = {"out": 3, "heads": 2, "edge_dim": EDGE_DIM}
    module = make(name, cfg)
    nodes, edges = Dim("nodes"), Dim("edges")
    program = torch.export.export(
        module, (x, ei, ea), dynamic_shapes=({0: nodes}, {1: edges}, {0: edges})
    )
    g = torch.Generator().manual_seed(5)
    x2, ei2, ea2 = (
        torch.randn(11, N_FEAT, generator=g),
        torch.randint(0, 11, (2, 30), generator=g),
        torch.randn(30, EDGE_DIM, generator=g),
    )
    for args in ((x, ei, ea), (x2, ei2, ea2)):
        torch.testing.assert_close(program.module()(*args), module(*args), rtol=0, atol=1e-6)
