"""The gallery (specs/gallery/, docs/GALLERY.md): every architecture checks without a
diagnostic, has as many parameters as the same network written by hand in PyTorch
below, and, where the two line up, computes the same outputs once the compiled
model's weights are loaded into the hand-written module (key by key, through an
explicit renaming, strict).

The hand-written modules use torch.nn only (nn.Conv2d, nn.MultiheadAttention with
batch_first=True, nn.LSTM, nn.GRU, ...); the research blocks are written out from
their docstrings (the noisy top-k MoE in eval mode, the one-step Hopfield layer,
ProtoNet's centroids), and the two graph-attention specs are counted with the
formula of `dsl blocks GAT` instead of a module. No training here: every case is a
forward pass in eval mode.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import dsl

ROOT = Path(__file__).resolve().parent.parent
GALLERY = ROOT / "specs" / "gallery"
SPECS = sorted(GALLERY.glob("*.dsl"))


# --------------------------------------------------------------------------- hand-written pieces


def mlp(d_in: int, hidden: int, d_out: int, act: type[nn.Module] = nn.GELU) -> nn.Sequential:
    """The MLP block's layout: Linear, activation, Linear (state-dict keys 0 and 2)."""
    return nn.Sequential(nn.Linear(d_in, hidden), act(), nn.Linear(hidden, d_out))


def self_attention(attn: nn.MultiheadAttention, x: Tensor, **kw: Any) -> Tensor:
    return attn(x, x, x, need_weights=False, **kw)[0]


class PreNormLayer(nn.Module):
    """x + Attn(LN(x)), then x + MLP(LN(x)) (ViT, GPT-2)."""

    def __init__(self, d: int, heads: int, hidden: int, causal: bool = False):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = mlp(d, hidden, d)
        self.causal = causal

    def forward(self, x: Tensor) -> Tensor:
        mask = None
        if self.causal:
            t = x.shape[1]
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        x = x + self_attention(self.attn, self.ln1(x), attn_mask=mask)
        return x + self.mlp(self.ln2(x))


class ViT(nn.Module):
    def __init__(self, d: int = 32, patch: int = 2, heads: int = 4, layers: int = 2, classes: int = 10):
        super().__init__()
        self.patch = nn.Conv2d(1, d, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.zeros(1, (8 // patch) ** 2 + 1, d))
        self.layers = nn.ModuleList(PreNormLayer(d, heads, 2 * d) for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x: Tensor) -> Tensor:
        p = self.patch(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls.expand(x.shape[0], -1, -1), p], dim=1) + self.pos
        for layer in self.layers:
            h = layer(h)
        return self.head(self.norm(h[:, 0]))


class MAB(nn.Module):
    """Set Transformer's MAB(X, Y) = LN(H + rFF(H)), H = LN(X + MHA(X, Y, Y))."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln1 = nn.LayerNorm(d)
        self.mlp = mlp(d, d, d, nn.ReLU)
        self.ln2 = nn.LayerNorm(d)

    def forward(self, x: Tensor, y: Tensor, mask: Tensor | None) -> Tensor:
        h = self.ln1(x + self.attn(x, y, y, key_padding_mask=mask, need_weights=False)[0])
        return self.ln2(h + self.mlp(h))


class ISAB(nn.Module):
    def __init__(self, d: int, heads: int, m: int):
        super().__init__()
        self.points = nn.Parameter(torch.zeros(1, m, d))
        self.mab1 = MAB(d, heads)
        self.mab2 = MAB(d, heads)

    def forward(self, x: Tensor, padding: Tensor) -> Tensor:
        h = self.mab1(self.points.expand(x.shape[0], -1, -1), x, padding)
        return self.mab2(x, h, None)


class SetTransformer(nn.Module):
    def __init__(self, d: int = 32, heads: int = 4, inducing: int = 8, layers: int = 2, classes: int = 2):
        super().__init__()
        self.embed = nn.Linear(64, d)
        self.isab = nn.ModuleList(ISAB(d, heads, inducing) for _ in range(layers))
        self.seed = nn.Parameter(torch.zeros(1, 1, d))
        self.rff = mlp(d, d, d, nn.ReLU)
        self.pma = MAB(d, heads)
        self.head = nn.Linear(d, classes)

    def forward(self, x: Tensor, padding: Tensor) -> Tensor:
        h = self.embed(x)
        for block in self.isab:
            h = block(h, padding)
        pooled = self.pma(self.seed.expand(x.shape[0], -1, -1), self.rff(h), padding)
        return self.head(pooled[:, 0])


class InteractingLayer(nn.Module):
    """AutoInt: relu(concat_h softmax(Q_h K_hᵀ / sqrt(d_h)) V_h + W_res e), no biases, no W_o."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(d, d, bias=False) for _ in range(3))
        self.res = nn.Linear(d, d, bias=False)
        self.heads = heads

    def forward(self, e: Tensor) -> Tensor:
        b, m, d = e.shape
        split = lambda t: t.view(b, m, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(e)), split(self.k(e)), split(self.v(e))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // self.heads), dim=-1) @ v
        return torch.relu(a.transpose(1, 2).reshape(b, m, d) + self.res(e))


class AutoInt(nn.Module):
    def __init__(self, fields: int = 30, d: int = 16, heads: int = 2, layers: int = 2, classes: int = 2):
        super().__init__()
        self.v = nn.Parameter(torch.zeros(fields, d))
        self.layers = nn.ModuleList(InteractingLayer(d, heads) for _ in range(layers))
        self.head = nn.Linear(fields * d, classes)

    def forward(self, x: Tensor) -> Tensor:
        e = x.unsqueeze(-1) * self.v
        for layer in self.layers:
            e = layer(e)
        return self.head(e.flatten(1))


class ReZeroLayer(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(()))
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = mlp(d, 2 * d, d, nn.ReLU)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.alpha * self_attention(self.attn, x)
        return x + self.alpha * self.mlp(x)


class ReZero(nn.Module):
    def __init__(self, d: int = 32, heads: int = 4, layers: int = 4, classes: int = 10):
        super().__init__()
        self.embed = nn.Linear(8, d)
        self.layers = nn.ModuleList(ReZeroLayer(d, heads) for _ in range(layers))
        self.head = nn.Linear(d, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x.view(-1, 8, 8))
        for layer in self.layers:
            h = layer(h)
        return self.head(h.mean(1))


class MixerLayer(nn.Module):
    def __init__(self, tokens: int, d: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.token_mlp = mlp(tokens, 2 * tokens, tokens)
        self.ln2 = nn.LayerNorm(d)
        self.channel_mlp = mlp(d, 2 * d, d)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.token_mlp(self.ln1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.ln2(x))


class MLPMixer(nn.Module):
    def __init__(self, d: int = 32, patch: int = 2, layers: int = 2, classes: int = 10):
        super().__init__()
        self.patch = nn.Conv2d(1, d, patch, stride=patch)
        self.layers = nn.ModuleList(MixerLayer((8 // patch) ** 2, d) for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.patch(x).flatten(2).transpose(1, 2)
        for layer in self.layers:
            h = layer(h)
        return self.head(self.norm(h).mean(1))


class TripletEncoder(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.proj = nn.Linear(32 * 2 * 2, width)

    def forward(self, x: Tensor) -> Tensor:
        h = F.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        h = F.max_pool2d(torch.relu(self.bn2(self.conv2(h))), 2)
        z = self.proj(h.flatten(1))
        return z / z.norm(dim=-1, keepdim=True)


class TripletNet(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.enc = TripletEncoder(width)  # one instance, three uses

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        shifted = F.pad(x[..., 1:], (0, 1))  # one pixel to the left, zero column on the right
        rolled = torch.roll(x, -1, dims=0)  # image b+1 for anchor b
        return {"anchor": self.enc(x), "positive": self.enc(shifted), "negative": self.enc(rolled)}


class TopKMoE(nn.Module):
    """Shazeer et al.'s noisy top-k MoE without the noise (eval): y = Σ_i softmax(top-k of x W_g)_i E_i(x).
    Every expert runs densely; the gate is zero outside the top k."""

    def __init__(self, d: int, experts: int, k: int, make_expert: Callable[[], nn.Module]):
        super().__init__()
        self.w_gate = nn.Parameter(torch.zeros(d, experts))
        self.w_noise = nn.Parameter(torch.zeros(d, experts))  # used only while training
        self.experts = nn.ModuleList(make_expert() for _ in range(experts))
        self.k = k

    def forward(self, x: Tensor) -> Tensor:
        logits = x @ self.w_gate
        top, idx = logits.topk(self.k, dim=-1)
        gates = torch.zeros_like(logits).scatter(-1, idx, torch.softmax(top, dim=-1))
        return sum(gates[..., e : e + 1] * expert(x) for e, expert in enumerate(self.experts))


class HierarchicalMoE(nn.Module):
    def __init__(self, d: int = 32, groups: int = 4, experts: int = 4, classes: int = 10):
        super().__init__()
        self.inp = nn.Linear(64, d)
        self.moe = TopKMoE(d, groups, 2, lambda: TopKMoE(d, experts, 2, lambda: mlp(d, 2 * d, d)))
        self.head = nn.Linear(d, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.inp(x))
        return self.head(torch.relu(h + self.moe(h)))


class GRULM(nn.Module):
    def __init__(self, vocab: int = 96, d: int = 64, layers: int = 2):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.rnn = nn.GRU(d, d, num_layers=layers, batch_first=True)
        self.head = nn.Linear(d, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.head(self.rnn(self.emb(tokens))[0])


class LSTMLM(nn.Module):
    def __init__(self, vocab: int = 96, d: int = 64, layers: int = 2, p: float = 0.2):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.drop = nn.Dropout(p)
        self.rnn = nn.LSTM(d, d, num_layers=layers, dropout=p, batch_first=True)
        self.head = nn.Linear(d, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.rnn(self.drop(self.emb(tokens)))[0]
        return self.head(self.drop(h))


class TemporalBlock(nn.Module):
    def __init__(self, d: int, kernel: int, dilation: int):
        super().__init__()
        pad = (kernel - 1) * dilation
        self.conv1 = nn.Conv1d(d, d, kernel, dilation=dilation, padding=pad)
        self.conv2 = nn.Conv1d(d, d, kernel, dilation=dilation, padding=pad)

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[-1]
        h = torch.relu(self.conv1(x)[..., :t])
        h = torch.relu(self.conv2(h)[..., :t])
        return torch.relu(x + h)


class TCN(nn.Module):
    def __init__(self, vocab: int = 96, d: int = 64, kernel: int = 3, levels: int = 3):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(TemporalBlock(d, kernel, 2**i) for i in range(levels))
        self.head = nn.Linear(d, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        e = self.emb(tokens).transpose(1, 2)
        for block in self.blocks:
            e = block(e)
        return self.head(e.transpose(1, 2))


class GPT(nn.Module):
    def __init__(self, vocab: int = 96, d: int = 64, heads: int = 4, context: int = 64, layers: int = 2):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(context, d)
        self.blocks = nn.ModuleList(PreNormLayer(d, heads, 4 * d, causal=True) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight  # tied (Press & Wolf 2017)
        self.d = d

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.wte(tokens) + self.wpe(torch.arange(tokens.shape[1]))
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h)) * self.d**-0.5


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.bn(self.conv(x)))


class ProtoNetConv4(nn.Module):
    def __init__(self, width: int = 32, ways: int = 5):
        super().__init__()
        self.blocks = nn.ModuleList(ConvBlock(1 if i == 0 else width, width) for i in range(4))
        self.ways = ways

    def embed(self, x: Tensor) -> Tensor:
        h = x.view(-1, 1, 8, 8)
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i < 3:
                h = F.max_pool2d(h, 2)
        return h.flatten(1)

    def forward(self, query: Tensor, support: Tensor, support_y: Tensor) -> Tensor:
        zq, zs = self.embed(query), self.embed(support)
        protos = torch.stack([zs[support_y == k].mean(0) for k in range(self.ways)])
        return -torch.cdist(zq, protos) ** 2


class OneStepHopfield(nn.Module):
    """Ramsauer et al.'s Hopfield layer with steps=0, as its docstring states it: LayerNorm on
    state, stored and value patterns, Q/K/V projections, softmax(β Q Kᵀ) V per head (β =
    1/sqrt(head_dim), padded stored patterns masked), heads concatenated, output projection."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.norm_state, self.norm_stored, self.norm_values = (nn.LayerNorm(d) for _ in range(3))
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))
        self.heads = heads

    def forward(self, state: Tensor, stored: Tensor, mask: Tensor) -> Tensor:
        b, L, d = state.shape
        s, hd = stored.shape[1], d // self.heads
        q = self.q_proj(self.norm_state(state)).view(b, L, self.heads, hd).transpose(1, 2)
        k = self.k_proj(self.norm_stored(stored)).view(b, s, self.heads, hd).transpose(1, 2)
        v = self.v_proj(self.norm_values(stored)).view(b, s, self.heads, hd).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        scores = scores.masked_fill(mask[:, None, None, :], -math.inf)
        z = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, L, d)
        return self.out_proj(z)


class HopfieldMIL(nn.Module):
    def __init__(self, d: int = 32, heads: int = 4, classes: int = 2):
        super().__init__()
        self.embed = nn.Linear(64, d)
        self.assoc = OneStepHopfield(d, heads)
        self.queries = nn.Parameter(torch.zeros(1, d))
        self.pool = OneStepHopfield(d, heads)
        self.head = nn.Linear(d, classes)

    def forward(self, x: Tensor, padding: Tensor) -> Tensor:
        h = torch.relu(self.embed(x))
        h = h + self.assoc(h, h, padding)
        pooled = self.pool(self.queries.expand(x.shape[0], -1, -1), h, padding).flatten(1)
        return self.head(pooled)


# --------------------------------------------------------------------------- counts by formula


def gat_count(f: int, out: int, heads: int, concat: bool) -> int:
    """`dsl blocks GAT`: per head W ∈ R^{out×F} and a ∈ R^{2·out}; a bias of the output's width."""
    return heads * out * f + heads * 2 * out + (heads * out if concat else out)


def gatv2_count(f: int, out: int, heads: int, concat: bool, residual: bool = False) -> int:
    """`dsl blocks GATv2`: W_l and W_r ∈ R^{heads·out×F} (with biases, as PyG's GATv2Conv: the
    docstring's formula leaves them out), a ∈ R^{out} per head, the output bias, and the residual
    projection (no bias) when asked."""
    width = heads * out if concat else out
    return 2 * (heads * out * f + heads * out) + heads * out + width + (width * f if residual else 0)


# --------------------------------------------------------------------------- the cases


def _layers(prefix: str, name: str) -> tuple[str, Callable[[re.Match[str]], str]]:
    """Rename the `repeat` copies h_1, h_2, ... to name.0, name.1, ..."""
    return rf"^{prefix}_(\d+)\.", lambda m: f"{name}.{int(m[1]) - 1}."


def _chars(b: int = 3, t: int = 12) -> dict[str, Tensor]:
    return {"tokens": torch.randint(0, 96, (b, t))}


def _bags(b: int = 3, length: int = 7) -> dict[str, Tensor]:
    padding = torch.zeros(b, length, dtype=torch.bool)
    padding[0, 5:] = True
    padding[2, 2:] = True
    return {"x": torch.randn(b, length, 64), "padding": padding}


def _episode() -> dict[str, Tensor]:
    return {"query": torch.randn(10, 64), "support": torch.randn(10, 64),
            "support_y": torch.arange(5).repeat(2)}


PRE_NORM = [(r"\.layernorm\.", ".ln1."), (r"\.layernorm_1\.", ".ln2."), (r"\.multiheadattention\.attn\.", ".attn.")]


@dataclass
class Case:
    hand: Callable[[], nn.Module] | None  # the same network written with torch.nn
    inputs: Callable[[], dict[str, Tensor]] | None = None  # random inputs for the output comparison
    rename: list[tuple[str, Any]] = field(default_factory=list)  # compiled key -> hand key (re.sub, in order)
    count: Callable[[], int] | None = None  # a parameter count by formula, where there is no module
    dims: dict[str, int] = field(default_factory=dict)


CASES: dict[str, Case] = {
    "vit_digits": Case(
        ViT, lambda: {"x": torch.randn(3, 1, 8, 8)},
        [(r"^p\.", "patch."), (r"^layernorm\.", "norm."), (r"^logits\.", "head."), _layers("h", "layers"), *PRE_NORM],
    ),
    "set_transformer_mil": Case(
        SetTransformer, _bags,
        [(r"^h\.", "embed."), _layers("h", "isab"), (r"^(isab\.\d+)\.h\.", r"\1.mab1."), (r"^(isab\.\d+)\.y\.", r"\1.mab2."),
         (r"^z\.", "rff."), (r"^pooled\.", "pma."), (r"^logits\.", "head."),
         (r"\.multiheadattention\.attn\.", ".attn."), (r"\.h\.(weight|bias)$", r".ln1.\1"), (r"\.out\.(weight|bias)$", r".ln2.\1")],
    ),
    "autoint_breast_cancer": Case(
        AutoInt, lambda: {"x": torch.randn(4, 30)},
        [_layers("e", "layers"), (r"\.a\.(q|k|v)_proj\.", r".\1."), (r"\.linear\.", ".res."), (r"^logits\.", "head.")],
    ),
    "rezero_digits": Case(
        ReZero, lambda: {"x": torch.randn(4, 64)},
        [(r"^h\.", "embed."), _layers("h", "layers"), (r"^logits\.", "head."), *PRE_NORM],
    ),
    "mlp_mixer_digits": Case(
        MLPMixer, lambda: {"x": torch.randn(3, 1, 8, 8)},
        [(r"^p\.", "patch."), (r"^layernorm\.", "norm."), (r"^logits\.", "head."), _layers("h", "layers"),
         (r"\.t_1\.", ".token_mlp."), (r"\.mlp\.", ".channel_mlp."), *PRE_NORM],
    ),
    "triplet_digits": Case(
        TripletNet, lambda: {"x": torch.randn(4, 1, 8, 8)},
        [(r"\.conv2d\.", ".conv1."), (r"\.batchnorm\.", ".bn1."), (r"\.conv2d_1\.", ".conv2."),
         (r"\.batchnorm_1\.", ".bn2."), (r"\.z\.", ".proj.")],
    ),
    "hierarchical_moe_digits": Case(
        HierarchicalMoE, lambda: {"x": torch.randn(6, 64)},
        [(r"^linear\.", "inp."), (r"^m\.", "moe."), (r"\.gate\.(w_gate|w_noise)$", r".\1"), (r"^logits\.", "head.")],
    ),
    "gru_chars": Case(GRULM, _chars, [(r"^embedding\.", "emb."), (r"^h\.rnn\.", "rnn."), (r"^logits\.", "head.")]),
    "lstm_chars": Case(LSTMLM, _chars, [(r"^embedding\.", "emb."), (r"^h\.rnn\.", "rnn."), (r"^logits\.", "head.")]),
    "tcn_chars": Case(
        TCN, _chars,
        [(r"^embedding\.", "emb."), _layers("e", "blocks"), (r"\.h\.c\.", ".conv1."), (r"\.h_1\.c\.", ".conv2."),
         (r"^logits\.", "head.")],
    ),
    "gpt_chars": Case(
        GPT, _chars,
        [(r"^layernorm\.", "ln_f."), (r"^linear\.", "head."), _layers("h", "blocks"), *PRE_NORM],
    ),
    "protonet_conv4_episodes": Case(
        ProtoNetConv4, _episode,
        [(r"^enc\.convblock\.", "blocks.0."), (r"^enc\.convblock_1\.", "blocks.1."), (r"^enc\.convblock_2\.", "blocks.2."),
         (r"^enc\.h_4\.", "blocks.3."), (r"\.conv2d\.", ".conv."), (r"\.batchnorm\.", ".bn.")],
    ),
    "hopfield_mil": Case(
        HopfieldMIL, _bags,
        [(r"^linear\.", "embed."), (r"^hopfield\.", "assoc."), (r"^pooled\.queries$", "queries"),
         (r"^pooled\.hopfield\.", "pool."), (r"^logits\.", "head.")],
    ),
    # PyG's GATConv / GATv2Conv inside: counted with the formulas of their docstrings
    "gat_karate": Case(None, count=lambda: gat_count(34, 8, 8, True) + gat_count(64, 4, 1, False)),
    "gatv2_sbm": Case(None, count=lambda: gatv2_count(16, 8, 4, True) + gatv2_count(32, 4, 1, False, residual=True)),
}

COMPARED = [name for name, case in CASES.items() if case.inputs is not None]


@cache
def compiled(name: str) -> nn.Module:
    torch.manual_seed(0)
    return dsl.compile(dsl.load(GALLERY / f"{name}.dsl"), CASES[name].dims)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # shared (tied) weights once


def rename(key: str, rules: list[tuple[str, Any]]) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


# --------------------------------------------------------------------------- tests


def test_the_gallery_is_complete() -> None:
    names = {p.stem for p in SPECS}
    assert len(names) >= 12
    assert names == set(CASES), "every gallery spec needs a hand-written reference here, and only those"
    page = (ROOT / "docs" / "GALLERY.md").read_text()
    for name in names:
        assert f"specs/gallery/{name}.dsl" in page, f"docs/GALLERY.md does not list {name}"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_checks_clean_and_names_its_paper(path: Path) -> None:
    spec = dsl.load(path)
    assert dsl.check(spec) == []
    assert spec.train is not None, "every gallery spec trains"
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and re.search(r"(19|20)\d\d", first), "the first line names the paper and year"


@pytest.mark.parametrize("name", sorted(CASES))
def test_parameter_count_matches_hand_written(name: str) -> None:
    case = CASES[name]
    expected = n_params(case.hand()) if case.hand is not None else case.count()
    assert n_params(compiled(name)) == expected


@pytest.mark.parametrize("name", COMPARED)
def test_outputs_match_hand_written(name: str) -> None:
    case = CASES[name]
    model = compiled(name).eval()
    hand = case.hand().eval()
    torch.manual_seed(1)
    with torch.no_grad():  # move zero-initialised weights (ReZero's alpha, the gates) and the BN statistics
        for p in model.parameters():  # each tensor once: a tied weight stays tied
            p.add_(0.1 * torch.randn_like(p))
        for key, b in model.named_buffers():
            if key.endswith("running_mean"):
                b.add_(0.1 * torch.randn_like(b))
            elif key.endswith("running_var"):
                b.add_(0.1 * torch.rand_like(b))
    state = {rename(k, case.rename): v for k, v in model.state_dict().items()}
    hand.load_state_dict(state, strict=True)
    inputs = case.inputs()
    with torch.no_grad():
        got, want = model(**inputs), hand(**inputs)
    if isinstance(want, dict):
        assert set(got) >= set(want)
        for k in want:
            torch.testing.assert_close(got[k], want[k], atol=1e-5, rtol=1e-5)
    else:
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
