"""`clearlstm explain --peephole`: the seed's walkthrough of a unit with peepholes, its extra
terms with their numbers, checked against the arithmetic by hand and against
``clearlstm.LSTM(1, 1, peephole=True)``; without ``--peephole`` the output is as before."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import clearlstm
from clearlstm.cli.main import main
from clearlstm.teach.explain import PeepholeStep, explain_sequence
from clearlstm.teach.seed import STATQUEST_WEIGHTS, statquest_lstm
from clearlstm.teach.unit import UnitWeights

# `clearlstm explain`'s output before peepholes existed (commit bf45a11), argv -> stdout.
GOLDEN = Path(__file__).parent / "fixtures" / "explain_plain.json"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clearlstm.cli", *args], capture_output=True, text=True, timeout=120
    )


def by_hand(x: float, c: float, h: float, p: tuple[float, float, float]) -> dict[str, float]:
    """One step of the seed's unit with peepholes, written out (float64)."""
    w_x = [row[0] for row in STATQUEST_WEIGHTS["weight_ih_l0"]]  # rows i, f, g, o
    w_h = [row[0] for row in STATQUEST_WEIGHTS["weight_hh_l0"]]
    b = STATQUEST_WEIGHTS["bias_ih_l0"]
    z = [w_h[k] * h + w_x[k] * x + b[k] for k in range(4)]
    sigmoid = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    z_i, z_f = z[0] + p[0] * c, z[1] + p[1] * c
    i, f, g = sigmoid(z_i), sigmoid(z_f), math.tanh(z[2])
    c_new = f * c + i * g
    z_o = z[3] + p[2] * c_new
    o = sigmoid(z_o)
    return {
        "input_x_axis": z_i, "forget_x_axis": z_f, "output_x_axis": z_o, "input_gate": i,
        "forget_gate": f, "potential_memory": g, "output_gate": o, "c": c_new,
        "h": o * math.tanh(c_new), "input_peephole": p[0] * c, "forget_peephole": p[1] * c,
        "output_peephole": p[2] * c_new,
    }  # fmt: skip


def test_without_peephole_the_output_is_byte_identical_to_before(capsys):
    for argv, stdout in json.loads(GOLDEN.read_text()).items():
        assert main(json.loads(argv)) == 0
        assert capsys.readouterr().out == stdout, argv


def test_one_step_with_peepholes_equals_the_arithmetic_by_hand():
    result = run("explain", "--peephole=0.5,0.25,-0.5", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    (step,) = doc["steps"]
    for key, value in by_hand(1.0, 2.0, 1.0, (0.5, 0.25, -0.5)).items():
        assert step[key] == pytest.approx(value, abs=1e-12), key
    assert step["peephole_weights"] == [0.5, 0.25, -0.5]
    assert doc["unit"] == "StatQuest with peepholes"
    assert doc["weights"]["weight_peephole_l0"] == [[0.5], [0.25], [-0.5]]
    assert doc["series"] is None and "Peepholes are not in the series" in doc["note"]
    assert "p_f * C = 0.25 * 2 = 0.5 is part of its x-axis value" in step["sentences"]["forget"]


def test_a_sequence_with_peepholes_equals_clearlstm_lstm_with_peepholes():
    doc = json.loads(run("explain", "--sequence", "0,0.5,0.25,1", "--peephole", "--json").stdout)
    lstm = clearlstm.LSTM(1, 1, peephole=True, dtype=torch.float64)
    state = {k: torch.tensor(v, dtype=torch.float64) for k, v in STATQUEST_WEIGHTS.items()}
    state["weight_peephole_l0"] = torch.full((3, 1), 0.5, dtype=torch.float64)  # the default
    lstm.load_state_dict(state)
    x = torch.tensor([0.0, 0.5, 0.25, 1.0], dtype=torch.float64).reshape(4, 1, 1)
    with torch.no_grad():
        output, (_, c_n), trace = lstm(x, trace=True)
    steps = doc["steps"]
    assert [s["h"] for s in steps] == pytest.approx(output.flatten().tolist(), abs=1e-12)
    assert [s["c"] for s in steps] == pytest.approx(trace[0, 0].c.flatten().tolist(), abs=1e-12)
    assert steps[-1]["c"] == pytest.approx(float(c_n), abs=1e-12)
    c_prev = 0.0
    for s in steps:  # each step's terms are p times the memory it read
        assert s["forget_peephole"] == pytest.approx(0.5 * c_prev, abs=1e-15)
        assert s["output_peephole"] == pytest.approx(0.5 * s["c"], abs=1e-15)
        c_prev = s["c"]
    # The plain unit's numbers differ: the peepholes do something.
    plain = json.loads(run("explain", "--sequence", "0,0.5,0.25,1", "--json").stdout)
    assert abs(plain["steps"][-1]["h"] - steps[-1]["h"]) > 1e-3


def test_the_text_walkthrough_shows_each_peephole_term_with_its_numbers():
    result = run("explain", "--peephole")
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "Peepholes: x-axis value = w_h * h + w_x * x + b + peephole term" in out
    assert "p_f * C = 0.5 * 2.000000 = 1.000000" in out
    assert "p_i * C = 0.5 * 2.000000 = 1.000000" in out
    assert "p_o * C' = 0.5 * " in out
    assert "forget gate peephole term p_f * C" in out and "6.950000" in out  # 5.95 + 1
    assert "new long-term memory: p_o * C' = 0.5 * 2.959 = 1.48 is part of its" in out
    sequence = run("explain", "--sequence", "0,0.5,0.25,1", "--peephole").stdout
    assert sequence.count("peephole terms: p_f * C = ") == 4


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--peephole", "1,2"], 1, "--peephole takes three numbers p_i,p_f,p_o (e.g. 0.5,0.5,"),
        (["--peephole", "1,x,2"], 2, "argument --peephole: number 2: expected a number"),
        (["--model", "somewhere", "--peephole"], 1, "--peephole is for the seed's unit"),
    ],
)
def test_bad_peephole_options_are_clear_errors(args, code, message):
    result = run("explain", *args)
    assert result.returncode == code
    assert message in result.stderr and "Traceback" not in result.stderr


def test_the_walkthrough_refuses_variants_it_does_not_explain():
    with pytest.raises(ValueError, match="the plain unit or one with peepholes"):
        explain_sequence([1.0], 0.0, 0.0, clearlstm.LSTM(1, 1, layer_norm=True))


def test_the_unit_diagram_writes_the_peephole_terms_in_its_boxes(tmp_path, capsys):
    from clearlstm.viz.figures import unit_diagram

    lstm = statquest_lstm(peephole=(0.5, 0.25, -0.5))
    step = explain_sequence([1.0], 2.0, 1.0, lstm).steps[0]
    assert isinstance(step, PeepholeStep)
    fig = unit_diagram(step, UnitWeights.from_lstm(lstm))
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "+ 0.50C\n" in texts and "+ 0.25C\n" in texts and "− 0.50C'\n" in texts
    png = tmp_path / "unit.png"
    assert main(["figure", "unit", "--peephole", "--out", str(png)]) == 0
    assert png.stat().st_size > 10_000
    html = tmp_path / "r.html"
    assert main(["report", "--peephole", "--out", str(html)]) == 0
    report = html.read_text()
    assert "with peepholes" in report and "Its peephole reads the long-term memory" in report


def test_a_trained_one_unit_peephole_model_gets_the_walkthrough(tmp_path):
    from clearlstm.viz.saved_models import load_saved_model

    csv = tmp_path / "wave.csv"
    csv.write_text("y\n" + "\n".join(f"{math.sin(t / 4):.4f}" for t in range(80)) + "\n")
    out = tmp_path / "one"
    argv = ["train", "--csv", str(csv), "--epochs", "1", "--hidden-size", "1", "--window", "8"]
    assert main([*argv, "--ensemble", "1", "--peephole", "--out", str(out)]) == 0
    model = load_saved_model(out)
    subject = model.subject_from_numbers(model.example)
    assert subject.one_unit and model.lstm.batch_first
    # The walkthrough reads what the LSTM reads (scaled, relative to the window's level).
    walk = explain_sequence(subject.inputs[:, 0, 0].tolist(), 0.0, 0.0, subject.lstm)
    h = subject.run()[0, 0].h[:, 0, 0].tolist()
    assert [s.h for s in walk.steps] == pytest.approx(h, abs=1e-6)
    assert isinstance(walk.steps[0], PeepholeStep)
    png, html = tmp_path / "unit.png", tmp_path / "r.html"
    assert main(["figure", "unit", "--model", str(out), "--step", "3", "--out", str(png)]) == 0
    assert main(["report", "--model", str(out), "--out", str(html)]) == 0
    assert "Its peephole reads the long-term memory" in html.read_text()
