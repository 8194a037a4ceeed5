"""Small tensor helpers the lowered functions call where torch has no function of that form."""

from __future__ import annotations

import torch
from torch import Tensor

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
