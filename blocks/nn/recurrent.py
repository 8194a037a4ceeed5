"""The modules behind LSTM and GRU: torch's, batch first, returning every output as a tuple."""

from __future__ import annotations

from torch import Tensor, nn


class LSTM(nn.Module):
    """``nn.LSTM(batch_first=True)``: (y, h, c) instead of (y, (h, c))."""

    def __init__(self, features: int, hidden: int, layers: int = 1, bidirectional: bool = False,
                 dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.rnn = nn.LSTM(features, hidden, num_layers=layers, bidirectional=bidirectional, dropout=dropout,
                           bias=bias, batch_first=True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        y, (h, c) = self.rnn(x)
        return y, h, c


class GRU(nn.Module):
    """``nn.GRU(batch_first=True)``: (y, h)."""

    def __init__(self, features: int, hidden: int, layers: int = 1, bidirectional: bool = False,
                 dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.rnn = nn.GRU(features, hidden, num_layers=layers, bidirectional=bidirectional, dropout=dropout,
                          bias=bias, batch_first=True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, h = self.rnn(x)
        return y, h
