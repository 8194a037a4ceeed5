"""Embedding: a learned lookup table from integer indices to vectors.

    y[..., :] = W[i[...], :],   W ∈ R^{num×dim},  W ~ N(0, 1) as in torch.nn.Embedding

Indices must be long or int and lie in ``0 .. num-1`` (checked by the compiled
module's input guards). With ``padding_idx`` that row starts at zero and gets no gradient.

Shapes:
    i: [...] long -> y: [..., dim]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from dsl.language.registry import EMBEDDINGS, BuildCall, Decl, Params, TensorArg, register
from dsl.language.shapes import ShapeCall, TensorType

if TYPE_CHECKING:
    from torch import nn


class EmbeddingParams(Params):
    num: int = Field(gt=0, description="number of rows: indices run from 0 to num-1")
    dim: int = Field(gt=0, description="size of each embedding vector")
    padding_idx: int | None = Field(None, description="an index whose row stays zero and is not trained")
    std: float = Field(1.0, gt=0, description="initial rows ~ N(0, std²): torch's default 1; GPT-2 uses 0.02")

    @model_validator(mode="after")
    def _padding_in_range(self) -> EmbeddingParams:
        if self.padding_idx is not None and not -self.num <= self.padding_idx < self.num:
            raise ValueError(f"padding_idx={self.padding_idx} is outside 0..{self.num - 1}")
        return self


def infer_embedding(call: ShapeCall, p: EmbeddingParams) -> list[TensorType]:
    call.match("i", "...", dtype=("long", "int"))
    t = call.type("i")
    why = f"Embedding(num={p.num}, dim={p.dim}) appends a dim of {p.dim}"
    return [call.tensor(list(t.shape) + [p.dim], like="i", why=why)]


def build_embedding(call: BuildCall, p: EmbeddingParams) -> nn.Module:
    from torch import nn

    if p.std == 1.0:  # torch's own initialisation
        return nn.Embedding(p.num, p.dim, padding_idx=p.padding_idx)
    from dsl.blocks.nn.tensors import ScaledEmbedding

    return ScaledEmbedding(p.num, p.dim, padding_idx=p.padding_idx, std=p.std)


def count_embedding(call: BuildCall, p: EmbeddingParams) -> int:
    return p.num * p.dim


register(
    Decl(
        name="Embedding",
        kind="block",
        params=EmbeddingParams,
        inputs=(TensorArg("i", doc="indices (long or int)", index_of="num"),),
        outputs=("y",),
        infer=infer_embedding,
        build=build_embedding,
        count_params=count_embedding,
        prunable=frozenset({EMBEDDINGS}),
        doc=__doc__ or "",
        signature="[...] long -> [..., dim]",
    )
)
