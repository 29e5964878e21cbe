"""Golden numbers from the shared reference (``shared/reference/seed-walkthrough.md``).

StatQuest's unit, as the seed series walks it, built as ``clearlstm.LSTM(1, 1)`` in float64
and read back through the trace, on the reference backend and on the default one. Every value
below is copied from the reference's tables.
"""

from __future__ import annotations

import pytest
import torch

import clearlstm

F64 = torch.float64
I_, F_, G_, O_ = 0, 1, 2, 3  # gate blocks in torch's order i, f, g, o


def statquest_unit(backend: str = "auto") -> clearlstm.LSTM:
    lstm = clearlstm.LSTM(1, 1, dtype=F64, backend=backend)
    # float64 literals: a float32 tensor copied in would round 1.65 to 1.64999997...
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.tensor([[1.65], [1.63], [0.94], [-0.19]], dtype=F64))
        lstm.weight_hh_l0.copy_(torch.tensor([[2.00], [2.70], [1.41], [4.38]], dtype=F64))
        lstm.bias_ih_l0.copy_(torch.tensor([0.62, 1.62, -0.32, 0.59], dtype=F64))
        lstm.bias_hh_l0.zero_()
    return lstm


@pytest.fixture(params=["reference", "auto"])
def unit(request) -> clearlstm.LSTM:
    return statquest_unit(request.param)


def one_step(lstm: clearlstm.LSTM, x: float, h: float, c: float):
    """Run the unit one step from ``(h, c)``; return the trace's layer record and outputs."""
    state = (torch.tensor([[[h]]], dtype=F64), torch.tensor([[[c]]], dtype=F64))
    output, (h_n, c_n), trace = lstm(torch.tensor([[[x]]], dtype=F64), state, trace=True)
    return trace[0, 0], output, h_n, c_n


def scalar(t: torch.Tensor) -> float:
    assert t.numel() == 1
    return t.item()


def to_6(value: float) -> float:
    return round(value, 6)


def to_2_significant(value: float) -> float:
    return float(f"{value:.1e}")


def test_weights_are_the_reference_mapping_onto_torch_layout() -> None:
    lstm = statquest_unit()
    state = lstm.state_dict()
    assert torch.equal(
        state["weight_ih_l0"][:, 0], torch.tensor([1.65, 1.63, 0.94, -0.19], dtype=F64)
    )
    assert torch.equal(
        state["weight_hh_l0"][:, 0], torch.tensor([2.00, 2.70, 1.41, 4.38], dtype=F64)
    )
    assert torch.equal(state["bias_ih_l0"], torch.tensor([0.62, 1.62, -0.32, 0.59], dtype=F64))
    assert not state["bias_hh_l0"].any()


def test_one_step_c2_h1_x1_every_row_of_the_table(unit) -> None:
    rec, output, h_n, c_n = one_step(unit, x=1.0, h=1.0, c=2.0)
    pre = rec.pre_activation[0, 0, :, 0]  # (4,) x-axis values i, f, g, o
    f = scalar(rec.forget_gate)
    i = scalar(rec.input_gate)
    g = scalar(rec.potential_memory)
    o = scalar(rec.output_gate)
    c_new = scalar(rec.c)
    rows = {
        "forget gate x-axis value": (pre[F_].item(), 5.950000),
        "forget gate (sigmoid)": (f, 0.997401),
        "C * f": (2.0 * f, 1.994802),
        "potential memory x-axis value": (pre[G_].item(), 2.030000),
        "potential memory (tanh)": (g, 0.966087),
        "input gate x-axis value": (pre[I_].item(), 4.270000),
        "input gate (sigmoid)": (i, 0.986211),
        "amount added to C": (i * g, 0.952766),
        "new long-term memory C'": (c_new, 2.947567),
        "tanh(C')": (torch.tanh(rec.c).item(), 0.994510),
        "output gate x-axis value": (pre[O_].item(), 4.780000),
        "output gate (sigmoid)": (o, 0.991674),
        "new short-term memory h'": (scalar(rec.h), 0.986229),
    }
    wrong = {name: got for name, (got, want) in rows.items() if to_6(got) != want}
    assert not wrong, wrong
    # the trace's last step is the module's output and final state
    assert scalar(output) == scalar(rec.h) == scalar(h_n)
    assert scalar(c_n) == c_new


def test_one_step_x_minus_10_the_seeds_own_case(unit) -> None:
    rec, _, _, _ = one_step(unit, x=-10.0, h=1.0, c=2.0)
    pre = rec.pre_activation[0, 0, :, 0]
    f = scalar(rec.forget_gate)
    i = scalar(rec.input_gate)
    assert round(pre[F_].item(), 2) == -11.98
    assert to_2_significant(f) == 6.3e-6  # "close to 0": the long-term memory is forgotten
    assert to_2_significant(2.0 * f) == 1.3e-5
    assert round(pre[I_].item(), 2) == -13.88
    assert to_2_significant(i) == 9.4e-7
    assert round(pre[G_].item(), 2) == -8.31
    assert to_6(scalar(rec.potential_memory)) == -1.0
    assert to_2_significant(scalar(rec.c)) == 1.2e-5
    assert round(pre[O_].item(), 2) == 6.87
    assert to_6(scalar(rec.output_gate)) == 0.998963
    assert to_2_significant(scalar(rec.h)) == 1.2e-5


COMPANIES = {
    # day: (x, C, h) per company, C0 = h0 = 0
    "A": [(0.0, -0.201247, -0.127755), (0.5, -0.202193, -0.096522),
          (0.25, -0.324621, -0.166218), (1.0, 0.015270, 0.006393)],
    "B": [(1.0, 0.499521, 0.276438), (0.5, 0.913569, 0.611733),
          (0.25, 1.480604, 0.867005), (1.0, 2.409093, 0.969393)],
}  # fmt: skip


def companies_input() -> torch.Tensor:
    days = [
        [[day[0]] for day in (a, b)] for a, b in zip(COMPANIES["A"], COMPANIES["B"], strict=True)
    ]
    return torch.tensor(days, dtype=F64)  # (T=4, B=2, 1)


@pytest.mark.parametrize(("column", "company"), [(0, "A"), (1, "B")])
def test_companies_day_by_day(unit, column: int, company: str) -> None:
    output, (h_n, c_n), trace = unit(companies_input(), trace=True)
    rec = trace[0, 0]
    for day, (_, c_want, h_want) in enumerate(COMPANIES[company]):
        got = (to_6(rec.c[day, column, 0].item()), to_6(rec.h[day, column, 0].item()))
        assert got == (c_want, h_want), f"company {company}, day {day + 1}"
        assert output[day, column, 0].item() == rec.h[day, column, 0].item()
    assert to_6(h_n[0, column, 0].item()) == COMPANIES[company][-1][2]
    assert to_6(c_n[0, column, 0].item()) == COMPANIES[company][-1][1]


def test_companies_each_alone_equal_the_batch(unit) -> None:
    """Running one company by itself (unbatched) gives the batch's numbers."""
    both, _ = unit(companies_input())
    for column in (0, 1):
        alone, _ = unit(companies_input()[:, column])  # (T, 1) unbatched
        torch.testing.assert_close(alone, both[:, column], atol=1e-15, rtol=0)


def test_companies_predictions_are_the_series_final_answers(unit) -> None:
    """The series' final outputs "0" and "1": exact predictions 0.006393 and 0.969393."""
    output, _ = unit(companies_input())
    assert round(output[-1, 0, 0].item()) == 0 and round(output[-1, 1, 0].item()) == 1
    assert to_6(output[-1, 0, 0].item()) == 0.006393
    assert to_6(output[-1, 1, 0].item()) == 0.969393


def test_float32_agrees_with_the_table_to_5_decimals(unit) -> None:
    lstm = unit.float()
    x = companies_input().float()
    _, _, trace = lstm(x, trace=True)
    want_c = torch.tensor([[d[1] for d in COMPANIES[k]] for k in "AB"]).T  # (T, B)
    want_h = torch.tensor([[d[2] for d in COMPANIES[k]] for k in "AB"]).T
    torch.testing.assert_close(trace[0].c[..., 0], want_c, atol=1e-5, rtol=0)
    torch.testing.assert_close(trace[0].h[..., 0], want_h, atol=1e-5, rtol=0)
