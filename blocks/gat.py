"""GAT and GATv2: graph attention layers on one graph given as an edge list.

GAT — Veličković et al. 2018, "Graph Attention Networks". Each head k has a
weight W ∈ R^{out×F} and an attention vector a ∈ R^{2·out}. For an edge j -> i
(edge_index[0] = j is the source, edge_index[1] = i the target):

    e_ij = LeakyReLU(aᵀ [W h_i ‖ W h_j])                  (slope negative_slope)
    α_ij = exp(e_ij) / Σ_{k ∈ N(i)} exp(e_ik)              (softmax over the edges into i)
    h'_i = Σ_{j ∈ N(i)} α_ij W h_j

GATv2 — Brody et al. 2022, "How Attentive are Graph Attention Networks?". GAT's
ranking of neighbours j is the same for every query i (static attention,
because a and W are applied linearly before the LeakyReLU). GATv2 moves the
nonlinearity inside, which makes attention dynamic:

    e_ij = aᵀ LeakyReLU(W [h_i ‖ h_j]) = aᵀ LeakyReLU((W_r h_i + b_r) + (W_l h_j + b_l))
    h'_i = Σ_j α_ij (W_l h_j + b_l)         (share_weights=true: W_l = W_r, b_l = b_r)

(PyG's two projections carry biases b_l, b_r when ``bias=true``, on top of the
output bias.)

Both: with ``heads`` = K independent heads the outputs are concatenated,
[N, K·out] (``concat=true``), or averaged, [N, out] (``concat=false``, as the
GAT paper does in its last layer); then ``bias`` is added. ``dropout`` drops
attention coefficients α during training. ``self_loops=true`` first removes any
self loops of the graph and adds one per node, so N(i) includes i (E' = E - loops + N
edges inside the layer; the output shape does not depend on it). ``edge_dim=D``
adds edge features e_ji ∈ R^D through a further projection W_e: to the logit as
a_eᵀ W_e e_ji (GAT) or inside the LeakyReLU as + W_e e_ji (GATv2); the self
loops get the mean of the features of the edges into each node. ``residual=true``
adds a learned projection of x (no bias) to the output.

Implemented by PyG's ``GATConv`` / ``GATv2Conv`` (torch_geometric 2.8), wrapped by
``dsl.blocks.nn.gat.GraphAttention``; the state dict is PyG's under the prefix
``conv.``. ``module.attention(x, edge_index, edge_attr)`` returns the edges
attended over and α [E', heads] for inspection. The layer compiles with
``torch.compile(fullgraph=True)`` and exports with ``torch.export``, N and E
dynamic (removing existing self loops is a data-dependent filter, which both
handle); tested in tests/test_gat.py.

Shapes:
    x: [N, F], edge_index: [2, E] long, edge_attr: [E, edge_dim] (only with edge_dim)
      -> y: [N, heads*out]  (concat=true)   or   [N, out]  (concat=false)
"""

from __future__ import annotations

from pydantic import Field

from dsl.language.registry import WEIGHTS, BuildCall, Decl, Params, TensorArg, register
from dsl.language.shapes import Dim, ShapeCall, ShapeError, TensorType

GAT_PAPER = "Veličković et al. 2018, Graph Attention Networks"
GATV2_PAPER = "Brody et al. 2022, How Attentive are Graph Attention Networks?"


class GATParams(Params):
    out: int = Field(gt=0, description="output features per head")
    heads: int = Field(1, gt=0, description="number of attention heads")
    concat: bool = Field(True, description="concatenate the heads (true) or average them (false)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on attention coefficients")
    negative_slope: float = Field(0.2, description="slope of the LeakyReLU for negative inputs")
    self_loops: bool = Field(
        True, description="attend to each node itself (add one self loop per node)"
    )
    edge_dim: int | None = Field(None, gt=0, description="edge feature size; needs edge_attr")
    residual: bool = Field(False, description="add a learned linear skip connection from x")
    bias: bool = Field(True, description="learn an additive output bias")


class GATv2Params(GATParams):
    share_weights: bool = Field(False, description="use one weight for source and target nodes")


def _describe(block: str, p: GATParams) -> str:
    """``GAT(out=16, heads=4) concatenates 4 heads``: the note that explains the output width."""
    head_text = f", heads={p.heads}" if p.heads != 1 else ""
    if p.heads == 1:
        return f"{block}(out={p.out}) gives {p.out} features per node"
    if p.concat:
        return f"{block}(out={p.out}{head_text}) concatenates {p.heads} heads"
    return f"{block}(out={p.out}{head_text}, concat=false) averages {p.heads} heads"


def _check_edge_index(call: ShapeCall) -> None:
    """Edge indices index nodes, so they must be long; say how to fix it."""
    t = call.type("edge_index")
    if t.dtype != "long":
        raise ShapeError(
            f"dtype mismatch in argument `edge_index` of `{call.block}`",
            arg="edge_index",
            label=f"expected long, found {t.dtype}",
            help="edge indices are node numbers: declare the input as `[2, E] long`",
            code="E0302",
        )


def _check_edge_attr(call: ShapeCall, p: GATParams, edges: Dim) -> None:
    if p.edge_dim is None:
        if call.has("edge_attr"):
            raise ShapeError(
                f"`{call.block}` got `edge_attr` but no `edge_dim`",
                arg="edge_attr",
                label="edge features given here would be ignored",
                help=f"pass edge_dim={_last_dim_text(call)} to {call.block}",
                code="E0403",
            )
        return
    if not call.has("edge_attr"):
        raise ShapeError(
            f"`{call.block}` with edge_dim={p.edge_dim} needs the tensor input `edge_attr`",
            arg="edge_dim",
            label=f"expects edge_attr: [E, {p.edge_dim}]",
            help="pass edge_attr=<edge features>, or drop edge_dim",
            code="E0202",
        )
    call.match("edge_attr", "E D", dtype="float", E=edges, D=p.edge_dim)


def _last_dim_text(call: ShapeCall) -> str:
    shape = call.type("edge_attr").shape
    return str(shape[-1]) if shape and shape[-1] is not None else "<edge feature size>"


def infer_gat(call: ShapeCall, p: GATParams) -> list[TensorType]:
    nodes = call.match("x", "N F", dtype="float").N
    _check_edge_index(call)
    edges = call.match("edge_index", "2 E").E
    _check_edge_attr(call, p, edges)
    width = p.out * p.heads if p.concat else p.out
    return [call.tensor([nodes, width], why=_describe(call.block, p))]


def _build(variant: str, call: BuildCall, p: GATParams, share_weights: bool = False):
    from dsl.blocks.nn.gat import GraphAttention

    return GraphAttention(
        variant,  # type: ignore[arg-type]
        in_features=call.size("x", -1),
        out=p.out,
        heads=p.heads,
        concat=p.concat,
        dropout=p.dropout,
        negative_slope=p.negative_slope,
        self_loops=p.self_loops,
        edge_dim=p.edge_dim,
        residual=p.residual,
        bias=p.bias,
        share_weights=share_weights,
    )


def build_gat(call: BuildCall, p: GATParams):
    return _build("gat", call, p)


def build_gatv2(call: BuildCall, p: GATv2Params):
    return _build("gatv2", call, p, share_weights=p.share_weights)


def count_gat(call: BuildCall, p: GATParams, variant: str = "gat", share_weights: bool = False) -> int:
    """PyG's GATConv / GATv2Conv parameters: projections, attention vectors,
    edge projection, output bias and residual projection."""
    f = call.size("x", -1)
    hc = p.heads * p.out
    width = hc if p.concat else p.out
    if variant == "gat":
        n = f * hc + 2 * hc  # lin (no bias), att_src, att_dst
        if p.edge_dim is not None:
            n += p.edge_dim * hc + hc  # lin_edge, att_edge
    else:
        proj = f * hc + (hc if p.bias else 0)
        n = proj * (1 if share_weights else 2) + hc  # lin_l, lin_r, att
        if p.edge_dim is not None:
            n += p.edge_dim * hc  # lin_edge
    n += width if p.bias else 0
    n += f * width if p.residual else 0
    return n


def count_gatv2(call: BuildCall, p: GATv2Params) -> int:
    return count_gat(call, p, "gatv2", p.share_weights)


INPUTS = (
    TensorArg("x", doc="node features [N, F]"),
    TensorArg("edge_index", doc="edges [2, E] long: row 0 sources, row 1 targets", index_of="x"),
    TensorArg("edge_attr", optional=True, doc="edge features [E, edge_dim] (with edge_dim)"),
)
SIGNATURE = "[N, F], [2, E] long -> [N, heads*out] (concat) or [N, out]"

register(
    Decl(
        name="GAT",
        kind="block",
        params=GATParams,
        inputs=INPUTS,
        outputs=("y",),
        infer=infer_gat,
        build=build_gat,
        count_params=count_gat,
        prunable=frozenset({WEIGHTS}),  # PyG's Linear projections; attention vectors stay dense
        doc=__doc__ or "",
        paper=GAT_PAPER,
        signature=SIGNATURE,
    )
)

register(
    Decl(
        name="GATv2",
        kind="block",
        params=GATv2Params,
        inputs=INPUTS,
        outputs=("y",),
        infer=infer_gat,
        build=build_gatv2,
        count_params=count_gatv2,
        prunable=frozenset({WEIGHTS}),
        doc=__doc__ or "",
        paper=GATV2_PAPER,
        signature=SIGNATURE,
    )
)
