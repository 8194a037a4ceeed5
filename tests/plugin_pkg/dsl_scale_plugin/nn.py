"""The torch module behind the Scale block."""

from __future__ import annotations

import torch
from torch import nn


class ScaleModule(nn.Module):
    """``y = a * x``; ``a`` is a parameter when learnable, else a constant."""

    def __init__(self, factor: float, learnable: bool = False):
        super().__init__()
        self.factor = nn.Parameter(torch.tensor(float(factor))) if learnable else float(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor
