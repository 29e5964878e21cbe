"""The seed's worked example: StatQuest's LSTM unit and the numbers the article series quotes.

The "Understanding LSTMs" series (Parts 3-7) walks one unit through its arithmetic with the
2-decimal weights from Josh Starmer's StatQuest video; ``shared/reference/seed-walkthrough.md``
lists them with every intermediate value. The series rounds each intermediate, so its
numbers differ slightly from the exact ones; :data:`SERIES_ONE_STEP` keeps what it writes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from clearlstm.nn.lstm import LSTM

# torch.nn.LSTM(1, 1) layout, gate rows i, f, g, o; bias_hh is zero.
STATQUEST_WEIGHTS: dict[str, list] = {
    "weight_ih_l0": [[1.65], [1.63], [0.94], [-0.19]],
    "weight_hh_l0": [[2.00], [2.70], [1.41], [4.38]],
    "bias_ih_l0": [0.62, 1.62, -0.32, 0.59],
    "bias_hh_l0": [0.0, 0.0, 0.0, 0.0],
}

# The series' single step: long-term memory C = 2, short-term memory h = 1, input x = 1.
ONE_STEP_INPUT = {"x": 1.0, "c": 2.0, "h": 1.0}
SERIES_ONE_STEP: dict[str, str] = {
    "forget_x_axis": "5.95",
    "forget_gate": "~0.997",
    "retained": "1.99",
    "potential_x_axis": "2.03",
    "potential_memory": "~0.97",
    "input_x_axis": "4.27",
    "input_gate": "~1.0",
    "added": "0.97",
    "c": "2.96",
    "tanh_c": "0.99",
    "output_gate": "0.99",
    "h": "0.98",
}
SERIES_ROUNDING_NOTE = (
    "The series rounds every intermediate to two decimals and treats sigmoid(4.27) as 1.0, "
    "so it adds 0.97 instead of 0.952766; that is why its C' = 2.96 and h' = 0.98 differ "
    "from the exact 2.947567 and 0.986229."
)

# Part 7: two companies' stock prices on days 1-4, starting from C0 = h0 = 0.
COMPANIES: dict[str, list[float]] = {
    "A": [0.0, 0.5, 0.25, 1.0],  # day 5 observed: 0
    "B": [1.0, 0.5, 0.25, 1.0],  # day 5 observed: 1
}
SERIES_COMPANIES_NOTE = (
    "The series quotes C1 = -0.20 and h1 = -0.13 for Company A and calls the final outputs "
    '"0" (Company A) and "1" (Company B); the exact predictions are 0.006393 and 0.969393.'
)


def statquest_lstm(
    dtype: torch.dtype = torch.float64, peephole: Sequence[float] | None = None
) -> LSTM:
    """StatQuest's unit as a one-unit ``clearlstm.LSTM(1, 1)`` (float64 by default); with
    ``peephole = (p_i, p_f, p_o)`` the same unit with those peephole weights
    (``LSTM(1, 1, peephole=True)``: the series has no peepholes, so it has no numbers for them)."""
    lstm = LSTM(1, 1, dtype=dtype, peephole=peephole is not None)
    state = {name: torch.tensor(value, dtype=dtype) for name, value in STATQUEST_WEIGHTS.items()}
    if peephole is not None:
        if len(peephole) != 3:
            raise ValueError(
                f"statquest_lstm: peephole takes three weights (p_i, p_f, p_o); got {peephole!r}"
            )
        state["weight_peephole_l0"] = torch.tensor(peephole, dtype=dtype).reshape(3, 1)  # (3, H)
    lstm.load_state_dict(state)
    return lstm
