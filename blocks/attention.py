"""MultiheadAttention: scaled dot-product attention over h heads (Vaswani et al., 2017).

    headᵢ = softmax((q W_qᵢ)(k W_kᵢ)ᵀ / sqrt(D/h)) (v W_vᵢ)
    y     = concat(head₁ .. head_h) W_o

Batch first, as ``torch.nn.MultiheadAttention(batch_first=True)``, which it
wraps. ``k`` defaults to ``q`` (self-attention) and ``v`` to ``k``. ``k`` and
``v`` may have their own feature sizes (torch's kdim/vdim); D must be
divisible by ``heads``.

Masks follow torch's convention, true = may not attend: ``key_padding_mask``
[B, S] bool ignores padded keys; ``attn_mask`` [T, S] is bool (true = masked) or
float (added to the scores); ``causal=true`` masks every key after its query, so
queries and keys must have the same length. ``project_out=false`` leaves out the
output projection W_o: the concatenated heads are the output.

Shapes:
    q: [B, T, D], k: [B, S, Dk] = q, v: [B, S, Dv] = k,
    key_padding_mask: [B, S] bool, attn_mask: [T, S] bool or float -> y: [B, T, D]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from dsl.language.registry import WEIGHTS, BuildCall, Decl, Params, TensorArg, register
from dsl.language.shapes import Dim, ShapeCall, ShapeError, TensorType

if TYPE_CHECKING:
    from torch import nn


class MultiheadAttentionParams(Params):
    heads: int = Field(gt=0, description="number of attention heads; must divide D")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the attention weights")
    bias: bool = Field(True, description="learn biases in the input and output projections")
    causal: bool = Field(False, description="mask every key after its query (queries and keys of one length)")
    project_out: bool = Field(True, description="apply the output projection W_o")


def infer_mha(call: ShapeCall, p: MultiheadAttentionParams) -> list[TensorType]:
    b = call.match("q", "B T D", dtype="float")
    d = b.D
    if isinstance(d, int) and d % p.heads != 0:
        raise ShapeError(
            "`MultiheadAttention` needs D divisible by heads",
            arg="q",
            label=f"D = {d} is not divisible by heads={p.heads}",
            help=f"choose heads among the divisors of {d}, or project q to a multiple of {p.heads} first",
        )
    s = call.match("k", "B S Dk", dtype="float", B=b.B).S if call.has("k") else b.T
    if call.has("v"):
        call.match("v", "B S Dv", dtype="float", B=b.B, S=s)
    check_masks(call, b.B, b.T, s, p.causal)
    why = f"MultiheadAttention(heads={p.heads}) projects back to the query's D"
    return [call.keep("q", why=why)]


def check_masks(call: ShapeCall, batch: Dim | None, queries: Dim | None, keys: Dim | None, causal: bool,
                padding: str = "key_padding_mask") -> None:
    """The masks' dtypes and shapes, and ``causal`` on queries and keys of one length."""
    if call.has(padding):
        call.match(padding, "B S", dtype="bool", B=batch, S=keys)
    if call.has("attn_mask"):
        call.match("attn_mask", "T S", dtype=("bool", "float"), T=queries, S=keys)
    if causal:
        q, k = call.env.resolve(queries), call.env.resolve(keys)
        if q != k:  # two lengths the spec names apart are two lengths
            raise ShapeError(f"`causal=true` needs queries and keys of the same length, found {q} and {k}",
                             arg="causal", label=f"{q} queries, {k} keys",
                             help="drop causal=true, or pass an attn_mask of shape [queries, keys]", code="E0301")


def build_mha(call: BuildCall, p: MultiheadAttentionParams) -> nn.Module:
    from dsl.blocks.nn.attention import MultiheadAttention

    d = call.size("q", -1)
    kdim = call.size("k", -1) if call.has("k") else d
    vdim = call.size("v", -1) if call.has("v") else kdim
    return MultiheadAttention(d, p.heads, dropout=p.dropout, bias=p.bias, kdim=kdim, vdim=vdim, causal=p.causal,
                              project_out=p.project_out)


def count_mha(call: BuildCall, p: MultiheadAttentionParams) -> int:
    """Input projections D x (D + Dk + Dv), the output projection D x D, their biases."""
    d = call.size("q", -1)
    kdim = call.size("k", -1) if call.has("k") else d
    vdim = call.size("v", -1) if call.has("v") else kdim
    if not p.project_out:
        return d * (d + kdim + vdim) + (3 * d if p.bias else 0)
    return d * (d + kdim + vdim) + d * d + (4 * d if p.bias else 0)


register(
    Decl(
        name="MultiheadAttention",
        kind="block",
        params=MultiheadAttentionParams,
        inputs=(
            TensorArg("q", doc="queries [B, T, D]"),
            TensorArg("k", optional=True, default="q", doc="keys [B, S, Dk]; defaults to q"),
            TensorArg("v", optional=True, default="k", doc="values [B, S, Dv]; defaults to k"),
            TensorArg("key_padding_mask", optional=True, doc="[B, S] bool: true = ignore that key"),
            TensorArg("attn_mask", optional=True, doc="[T, S] bool (true = masked) or float (added)"),
        ),
        outputs=("y",),
        infer=infer_mha,
        build=build_mha,
        count_params=count_mha,
        prunable=frozenset({WEIGHTS}),  # in_proj_weight (or q/k/v_proj_weight) and out_proj.weight
        doc=__doc__ or "",
        paper="Vaswani et al., Attention Is All You Need, NeurIPS 2017",
        signature="[B, T, D] -> [B, T, D]",
    )
)
