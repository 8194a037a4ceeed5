"""The module behind the MultiheadAttention block: torch's attention, batch first,
returning only the attended values, with causal and explicit masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def combine_masks(attn_mask: Tensor | None, causal: bool, queries: int, keys: int, device: torch.device) -> Tensor | None:
    """One [T, S] mask from ``attn_mask`` (bool: true = masked, or float: added to the
    scores) and the causal mask (true above the diagonal), in ``attn_mask``'s kind."""
    if not causal:
        return attn_mask
    ahead = torch.ones(queries, keys, dtype=torch.bool, device=device).triu(1)
    if attn_mask is None:
        return ahead
    if attn_mask.dtype == torch.bool:
        return attn_mask | ahead
    return attn_mask.masked_fill(ahead, float("-inf"))


class MultiheadAttention(nn.Module):
    """``nn.MultiheadAttention(batch_first=True)`` whose forward defaults k to q and v to k.

    ``causal`` masks every key after its query; ``key_padding_mask`` [B, S] bool (true =
    ignore) and ``attn_mask`` [T, S] (bool: true = masked; float: added) as torch takes
    them. ``project_out=False`` leaves out the output projection: the heads' values,
    concatenated, are the output (then the input projections are three Linears)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        causal: bool = False,
        project_out: bool = True,
    ):
        super().__init__()
        self.causal, self.heads, self.dropout = causal, heads, dropout
        if project_out:
            self.attn = nn.MultiheadAttention(
                dim, heads, dropout=dropout, bias=bias, kdim=kdim, vdim=vdim, batch_first=True
            )
        else:
            self.q_proj = nn.Linear(dim, dim, bias=bias)
            self.k_proj = nn.Linear(kdim or dim, dim, bias=bias)
            self.v_proj = nn.Linear(vdim or kdim or dim, dim, bias=bias)

    def forward(self, q: Tensor, k: Tensor | None = None, v: Tensor | None = None,
                key_padding_mask: Tensor | None = None, attn_mask: Tensor | None = None) -> Tensor:
        k = q if k is None else k
        v = k if v is None else v
        mask = combine_masks(attn_mask, self.causal, q.shape[1], k.shape[1], q.device)
        if hasattr(self, "attn"):
            # need_weights=False lets torch take its fused scaled-dot-product path.
            out, _ = self.attn(q, k, v, key_padding_mask=key_padding_mask, attn_mask=mask, need_weights=False)
            return out
        return self._unprojected(q, k, v, key_padding_mask, mask)

    def _unprojected(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None,
                     mask: Tensor | None) -> Tensor:
        split = [p(x).unflatten(-1, (self.heads, -1)).transpose(1, 2)
                 for p, x in ((self.q_proj, q), (self.k_proj, k), (self.v_proj, v))]
        allowed = _allowed(mask, key_padding_mask)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(*split, attn_mask=allowed, dropout_p=p)
        return out.transpose(1, 2).flatten(2)


def _allowed(mask: Tensor | None, key_padding_mask: Tensor | None) -> Tensor | None:
    """SDPA's mask (bool: true = allowed; float: added) from torch's masked-is-true masks."""
    padding = None if key_padding_mask is None else key_padding_mask.bool()[:, None, None, :]
    if mask is None:
        return None if padding is None else ~padding
    if mask.dtype == torch.bool:
        blocked = mask if padding is None else mask | padding
        return ~blocked
    return mask if padding is None else mask.masked_fill(padding, float("-inf"))
