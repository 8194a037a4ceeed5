"""The module behind the MultiheadAttention block: torch's attention, batch first,
returning only the attended values."""

from __future__ import annotations

import torch
from torch import nn


class MultiheadAttention(nn.Module):
    """``nn.MultiheadAttention(batch_first=True)`` whose forward defaults k to q and v to k."""

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
    ):
        super().__init__()
        self.attn = nn.MultiheadAttention(
            dim, heads, dropout=dropout, bias=bias, kdim=kdim, vdim=vdim, batch_first=True
        )

    def forward(self, q: torch.Tensor, k: torch.Tensor | None = None, v: torch.Tensor | None = None) -> torch.Tensor:
        k = q if k is None else k
        v = k if v is None else v
        # need_weights=False lets torch take its fused scaled-dot-product path.
        out, _ = self.attn(q, k, v, need_weights=False)
        return out
