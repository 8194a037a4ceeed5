"""Small tensor helpers the lowered functions call where torch has no function of that form."""

from __future__ import annotations

import torch
from torch import Tensor, nn

DTYPES = {"float": torch.float32, "long": torch.int64, "int": torch.int32, "bool": torch.bool}


def causal_mask(n: int, device: torch.device | None = None) -> Tensor:
    """[n, n] bool, true above the diagonal: position i may not attend to j > i (true = masked)."""
    return torch.ones(n, n, dtype=torch.bool, device=device).triu(1)


def expand(x: Tensor, shape: list[int]) -> Tensor:
    return x.expand(shape)


def to(x: Tensor, dtype: str) -> Tensor:
    """``x`` as a spec dtype (float is float32)."""
    return x.to(DTYPES[dtype])


def square(x: Tensor) -> Tensor:
    return x * x


#: the attribute where a learned tensor keeps how it was made, so ``--emit python`` can
#: write the same call (a Parameter is a tensor, not a module with a constructor to record)
MADE_BY = "_dsl_made_by"


def learned_tensor(shape: list[int], init: str = "normal", mean: float = 0.0, std: float = 1.0,
                   low: float = -1.0, high: float = 1.0, value: float = 0.0) -> nn.Parameter:
    """A new parameter of ``shape`` initialised by ``init`` (zeros ones normal uniform xavier_uniform constant)."""
    weight = torch.empty(shape)
    with torch.no_grad():
        if init == "zeros":
            nn.init.zeros_(weight)
        elif init == "ones":
            nn.init.ones_(weight)
        elif init == "normal":
            nn.init.normal_(weight, mean, std)
        elif init == "uniform":
            nn.init.uniform_(weight, low, high)
        elif init == "xavier_uniform":
            nn.init.xavier_uniform_(weight)
        elif init == "constant":
            nn.init.constant_(weight, value)
        else:
            raise ValueError(f"unknown init {init!r}")
    return nn.Parameter(weight)


class ScaledEmbedding(nn.Embedding):
    """``nn.Embedding`` whose rows start as N(0, std²) instead of torch's N(0, 1) (GPT-2 uses
    std=0.02); the padding row, if any, starts at zero as torch's does. A class, not a
    re-initialisation after construction, so that ``--emit python`` writes it too."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 std: float = 1.0) -> None:
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx)
        with torch.no_grad():
            self.weight.normal_(0.0, std)
            if padding_idx is not None:
                self.weight[padding_idx].zero_()
