"""Small modules and the shape regex shared by the ``test_errors*`` files."""

from __future__ import annotations

import re

import torch

import clearlstm

I, H, T, B = 3, 4, 5, 2


def lstm(**kwargs) -> clearlstm.LSTM:
    torch.manual_seed(0)
    return clearlstm.LSTM(I, H, **kwargs)


def cell(**kwargs) -> clearlstm.LSTMCell:
    torch.manual_seed(0)
    return clearlstm.LSTMCell(I, H, **kwargs)


def shape(*dims: int) -> str:
    """The regex for ``(d0, d1, ...)`` as the messages print shapes."""
    return re.escape(str(tuple(dims)))
