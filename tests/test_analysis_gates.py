"""Gate statistics on hand-set weights: a forget bias of +10 is right-saturated and keeps
memory for ~15,000 steps, an input bias of -10 is left-saturated, a unit with zero
weights is dead; padded steps are not counted."""

from __future__ import annotations

import math

import pytest
import torch

import clearlstm
from clearlstm.analysis import GateStatistics, gate_statistics

H = 4


def hand_set() -> clearlstm.LSTM:
    """Unit 0: forget bias +10, input bias -10. Unit 1: every weight zero. Units 2, 3
    random."""
    torch.manual_seed(0)
    lstm = clearlstm.LSTM(2, H).double()
    with torch.no_grad():
        for gate in range(4):
            for unit in (0, 1):
                lstm.weight_ih_l0[gate * H + unit] = 0.0
                lstm.bias_ih_l0[gate * H + unit] = 0.0
                lstm.bias_hh_l0[gate * H + unit] = 0.0
                lstm.weight_hh_l0[gate * H + unit] = 0.0
        lstm.weight_ih_l0[2 * H] = 1.0  # unit 0 stays alive: its potential memory follows x
        lstm.bias_ih_l0[1 * H] = 10.0
        lstm.bias_ih_l0[0 * H] = -10.0
    return lstm


def test_saturation_half_life_and_dead_units() -> None:
    lstm = hand_set()
    _, _, trace = lstm(torch.randn(50, 3, 2, dtype=torch.float64), trace=True)
    stats = gate_statistics(trace)
    assert isinstance(stats, GateStatistics) and stats.steps == 150
    forget, entry = stats.saturation["forget_gate"], stats.saturation["input_gate"]
    assert forget.right[0] == 1.0 and forget.left[0] == 0.0
    assert entry.left[0] == 1.0 and entry.right[0] == 0.0
    # The zero unit's gates all sit at 0.5: neither saturated.
    for gate in ("input_gate", "forget_gate", "output_gate"):
        assert stats.saturation[gate].left[1] == stats.saturation[gate].right[1] == 0.0
    expected = -math.log(2) / math.log(1 / (1 + math.exp(-10.0)))  # ~15,000 steps
    for q in (stats.half_life_q1, stats.half_life_median, stats.half_life_q3):
        assert q[0].item() == pytest.approx(expected, rel=1e-9)
        assert q[1].item() == pytest.approx(1.0)  # f = 0.5 halves every step
    assert 0 < stats.half_life_q1[2] <= stats.half_life_median[2] <= stats.half_life_q3[2]
    assert stats.dead_c == (1,) and stats.dead_h == (1,) and stats.dead == (1,)
    assert (
        stats.c_range[1] == 0.0 and stats.c_range[0] > 1e-4
    )  # shut input gate: c barely moves, yet moves


def test_saturation_matches_a_direct_count_and_padding_is_left_out() -> None:
    torch.manual_seed(1)
    lstm = clearlstm.LSTM(3, 6, bidirectional=True).double()
    with torch.no_grad():
        lstm.weight_ih_l0.mul_(8.0)  # wide pre-activations: many saturated steps
    lengths = torch.tensor([30, 11, 4])
    x = torch.randn(30, 3, 3, dtype=torch.float64)
    _, _, trace = lstm(x, lengths=lengths, trace=True)
    stats = gate_statistics(trace, layer=0, direction=1, low=0.2, high=0.8)
    assert stats.steps == 45
    record = trace[0, 1]
    for gate in ("input_gate", "forget_gate", "output_gate"):
        values = torch.cat([getattr(record, gate)[:n, b] for b, n in enumerate(lengths)])
        assert torch.equal(stats.saturation[gate].left, (values < 0.2).double().mean(0))
        assert torch.equal(stats.saturation[gate].right, (values > 0.8).double().mean(0))
    f = torch.cat([record.forget_gate[:n, b] for b, n in enumerate(lengths)])
    life = -math.log(2) / torch.log(f)
    torch.testing.assert_close(stats.half_life_median, life.quantile(0.5, dim=0))
    torch.testing.assert_close(stats.half_life_q3, life.quantile(0.75, dim=0))
    same = gate_statistics(record, low=0.2, high=0.8)  # a bare record: NaN marks padding
    assert same.steps == 45 and torch.equal(same.half_life_q1, stats.half_life_q1)


def test_a_forget_gate_of_one_has_infinite_half_life() -> None:
    lstm = hand_set()
    with torch.no_grad():
        lstm.bias_ih_l0[1 * H] = 60.0  # sigmoid(60) == 1.0 in float64
    _, _, trace = lstm(torch.randn(9, 2, dtype=torch.float64), trace=True)
    stats = gate_statistics(trace)
    assert math.isinf(stats.half_life_median[0]) and math.isinf(stats.half_life_q1[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"low": 0.5, "high": 0.4}, "need 0 < low < high < 1"),
        ({"tolerance": -1.0}, "tolerance must be >= 0"),
    ],
)
def test_errors_name_the_argument(kwargs, message) -> None:
    _, _, trace = hand_set()(torch.randn(4, 2, dtype=torch.float64), trace=True)
    with pytest.raises(ValueError, match=message):
        gate_statistics(trace, **kwargs)
    with pytest.raises(TypeError, match="must be a Trace or LayerRecord"):
        gate_statistics("trace")
