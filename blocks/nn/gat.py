"""torch modules behind GAT and GATv2: thin wrappers around PyG's GATConv / GATv2Conv.

The wrapper fixes the calling convention the compiler uses
(``forward(x, edge_index, edge_attr=None) -> node features``) and adds
:meth:`GraphAttention.attention` for inspecting the attention coefficients.
``forward`` calls the PyG layer exactly once and never asks it for the
attention weights, so inspection costs nothing when unused.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

Variant = Literal["gat", "gatv2"]


class GraphAttention(nn.Module):
    """One graph attention layer (GAT or GATv2) on a single homogeneous graph.

    The PyG layer is kept as ``self.conv``, so its state dict is PyG's with the
    prefix ``conv.`` (weights copy both ways).
    """

    def __init__(
        self,
        variant: Variant,
        in_features: int,
        out: int,
        heads: int = 1,
        concat: bool = True,
        dropout: float = 0.0,
        negative_slope: float = 0.2,
        self_loops: bool = True,
        edge_dim: int | None = None,
        residual: bool = False,
        bias: bool = True,
        share_weights: bool = False,
    ) -> None:
        super().__init__()
        self.variant = variant
        common = dict(
            heads=heads,
            concat=concat,
            negative_slope=negative_slope,
            dropout=dropout,
            add_self_loops=self_loops,
            edge_dim=edge_dim,
            bias=bias,
            residual=residual,
        )
        self.conv: nn.Module
        if variant == "gat":
            if share_weights:
                raise ValueError("share_weights applies to GATv2 only")
            from torch_geometric.nn import GATConv

            self.conv = GATConv(in_features, out, **common)
        elif variant == "gatv2":
            from torch_geometric.nn import GATv2Conv

            self.conv = GATv2Conv(in_features, out, share_weights=share_weights, **common)
        else:
            raise ValueError(f"unknown graph attention variant {variant!r}")

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None) -> Tensor:
        return self.conv(x, edge_index, edge_attr)

    @torch.no_grad()
    def attention(
        self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """The attention coefficients of one forward pass, for inspection.

        Returns ``(edges, alpha)``: ``edges`` [2, E'] is the edge list the layer
        attended over (with self loops replaced by one loop per node when
        ``self_loops`` is on, so E' = E - (existing loops) + N), and ``alpha``
        [E', heads] holds α_ij for edge j -> i; for every target node i and head
        the α over its incoming edges sum to one. In training mode attention
        dropout is applied to ``alpha`` as in the forward pass; call ``eval()``
        first for the plain softmax.
        """
        _, (edges, alpha) = self.conv(x, edge_index, edge_attr, return_attention_weights=True)
        return edges, alpha

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}"
