"""Bad ``lengths=`` raise errors that name what was expected and what came; the accepted forms
agree.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from error_helpers import B, I, T, lstm, shape
from torch.nn.utils.rnn import pack_padded_sequence

# ---------------------------------------------------------------------------------------
# lengths


@pytest.mark.parametrize(
    "lengths",
    [[0, 3], [T + 1, 2], torch.tensor([3, 0]), torch.tensor([-1, 2]), [T, T + 10]],
    ids=["zero", "longer-than-T", "zero-tensor", "negative", "far-too-long"],
)
def test_lengths_out_of_range(lengths) -> None:
    got = re.escape(str(torch.as_tensor(lengths).tolist()))
    with pytest.raises(
        ValueError,
        match=rf"LSTM: every length must be between 1 and the sequence length {T}; got {got}",
    ):
        lstm()(torch.randn(T, B, I), lengths=lengths)


@pytest.mark.parametrize(
    ("lengths", "received"),
    [([T], (1,)), ([T, T, T], (3,)), (torch.tensor([[T, T]]), (1, 2)), (torch.tensor(T), ())],
    ids=["too-few", "too-many", "2-D", "0-D"],
)
def test_lengths_with_wrong_count(lengths, received) -> None:
    with pytest.raises(
        ValueError,
        match=rf"LSTM: expected lengths with one entry per sequence \({B}\); "
        rf"got shape {shape(*received)}",
    ):
        lstm()(torch.randn(T, B, I), lengths=lengths)


@pytest.mark.parametrize(
    "lengths", [torch.tensor([5.0, 2.0]), torch.tensor([True, True])], ids=["float", "bool"]
)
def test_lengths_tensor_of_non_integers(lengths) -> None:
    with pytest.raises(
        TypeError, match=rf"LSTM: lengths must hold integers; got dtype {lengths.dtype}"
    ):
        lstm()(torch.randn(T, B, I), lengths=lengths)


@pytest.mark.parametrize(
    "lengths",
    [[5.0, 2.0], [True, 1], 5, "52", [[5, 2]]],
    ids=["float", "bool", "int", "str", "nested"],
)
def test_lengths_not_a_list_of_ints(lengths) -> None:
    with pytest.raises(
        TypeError,
        match=rf"LSTM: lengths must be a 1-D integer tensor or a list of ints; "
        rf"got {re.escape(repr(lengths))}",
    ):
        lstm()(torch.randn(T, B, I), lengths=lengths)


@pytest.mark.parametrize(
    "lengths",
    [
        [5, 2],
        (5, 2),
        torch.tensor([5, 2]),
        torch.tensor([5, 2], dtype=torch.int32),
        np.array([5, 2]),
    ],
)
def test_lengths_accepted_forms_agree(lengths) -> None:
    module, x = lstm(), torch.randn(T, B, I)
    want, _ = module(x, lengths=[5, 2])
    got, _ = module(x, lengths=lengths)
    assert torch.equal(got, want)
    assert not got[2:, 1].any()


def test_lengths_with_a_packed_sequence() -> None:
    packed = pack_padded_sequence(torch.randn(T, B, I), [T, 2])
    with pytest.raises(
        ValueError,
        match="LSTM: pass lengths= only with a padded tensor, not with a PackedSequence",
    ):
        lstm()(packed, lengths=[T, 2])
