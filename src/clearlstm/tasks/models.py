"""The two trainable models: a forecaster for series and a character-level language model.

Both are a :class:`clearlstm.LSTM` with a linear layer on top, so everything the LSTM offers
(``trace=True``, retention, half-life) works on a trained model. Shapes: ``B`` batch, ``W``
window (steps read), ``C`` input columns, ``K`` targets, ``H`` horizon, ``T`` steps of text,
``V`` vocabulary size, ``E`` embedding size, ``U`` hidden units.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from clearlstm.core.trace import Trace
from clearlstm.nn.lstm import LSTM

if TYPE_CHECKING:
    from clearlstm.tasks.settings import CharModelSettings, ForecasterSettings


class Forecaster(nn.Module):
    """Reads a window of scaled rows and forecasts the next ``horizon`` rows of the targets.

    The network sees each target relative to its last value in the window and predicts the
    change from that value: a trend that carries the series beyond the training range then
    needs no extrapolation of levels. Covariates are read as they are.
    """

    def __init__(
        self, columns: int, targets: int, horizon: int, hidden_size: int, num_layers: int
    ) -> None:
        super().__init__()
        self.columns, self.targets, self.horizon = columns, targets, horizon
        self.lstm = LSTM(columns, hidden_size, num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, horizon * targets)

    @classmethod
    def from_settings(cls, settings: ForecasterSettings) -> Forecaster:
        m = settings.model
        return cls(m.columns, m.targets, m.horizon, m.hidden_size, m.num_layers)

    def features(self, x: Tensor) -> Tensor:
        """``(B, W, C) -> (B, W, C)``: targets minus their last value in the window."""
        last = x[:, -1:, : self.targets]  # (B, 1, K)
        return torch.cat([x[..., : self.targets] - last, x[..., self.targets :]], dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, W, C) -> (B, H, K)`` scaled forecasts."""
        output, _ = self.lstm(self.features(x))  # (B, W, U)
        change = self.head(output[:, -1]).view(-1, self.horizon, self.targets)  # (B, H, K)
        return x[:, -1:, : self.targets] + change

    def trace(self, x: Tensor) -> Trace:
        """The LSTM's trace on ``(B, W, C)`` scaled rows."""
        with torch.no_grad():
            _, _, trace = self.lstm(self.features(x), trace=True)
        return trace


class CharModel(nn.Module):
    """Character-level language model: embedding, LSTM, linear layer to next-character logits."""

    def __init__(
        self, vocab_size: int, embedding_size: int, hidden_size: int, num_layers: int
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        self.lstm = LSTM(embedding_size, hidden_size, num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, vocab_size)

    @classmethod
    def from_settings(cls, settings: CharModelSettings) -> CharModel:
        m = settings.model
        return cls(len(settings.vocabulary), m.embedding_size, m.hidden_size, m.num_layers)

    def forward(
        self, tokens: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``(B, T)`` character ids -> ``(B, T, V)`` logits and the LSTM state."""
        output, state = self.lstm(self.embedding(tokens), state)  # (B, T, U)
        return self.head(output), state

    def trace(self, tokens: Tensor) -> Trace:
        """The LSTM's trace on ``(B, T)`` character ids."""
        with torch.no_grad():
            _, _, trace = self.lstm(self.embedding(tokens), trace=True)
        return trace
