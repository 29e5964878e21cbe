"""`clearlstm explain` run as a user would: a subprocess, its text and its JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

REFERENCE_ONE_STEP = {  # shared/reference/seed-walkthrough.md, "exact" column
    "forget_x_axis": "5.950000",
    "forget_gate": "0.997401",
    "retained": "1.994802",
    "potential_x_axis": "2.030000",
    "potential_memory": "0.966087",
    "input_x_axis": "4.270000",
    "input_gate": "0.986211",
    "added": "0.952766",
    "c": "2.947567",
    "tanh_c": "0.994510",
    "output_x_axis": "4.780000",
    "output_gate": "0.991674",
    "h": "0.986229",
}
COMPANY_A = [
    (-0.201247, -0.127755),
    (-0.202193, -0.096522),
    (-0.324621, -0.166218),
    (0.015270, 0.006393),
]
COMPANY_B = [(0.499521, 0.276438), (0.913569, 0.611733), (1.480604, 0.867005), (2.409093, 0.969393)]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clearlstm.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_default_step_prints_every_exact_value_beside_the_series():
    result = run("explain")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for value in REFERENCE_ONE_STEP.values():
        assert value in out
    for series in ("5.95", "~0.997", "1.99", "2.96", "0.98"):
        assert series in out
    assert "The forget gate keeps 99.7% of the long-term memory" in out
    assert "treats sigmoid(4.27) as 1.0" in out


def test_default_step_json_matches_reference_to_six_decimals():
    result = run("explain", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    (step,) = doc["steps"]
    for key, value in REFERENCE_ONE_STEP.items():
        assert f"{step[key]:.6f}" == value, key
    assert doc["series"]["c"] == "2.96"
    assert step["sentences"]["forget"].startswith("The forget gate keeps 99.7%")


def test_input_minus_ten_closes_the_forget_gate():
    result = run("explain", "--input", "-10", "--json")
    (step,) = json.loads(result.stdout)["steps"]
    assert step["forget_x_axis"] == pytest.approx(-11.98, abs=1e-12)
    assert step["forget_gate"] == pytest.approx(6.3e-6, rel=0.01)
    assert step["input_gate"] == pytest.approx(9.4e-7, rel=0.01)
    assert step["output_gate"] == pytest.approx(0.998963, abs=1e-6)
    assert step["c"] == pytest.approx(1.2e-5, rel=0.05)
    assert "essentially forgotten" in step["sentences"]["forget"]
    assert doc_series_is_absent(result.stdout)
    text = run("explain", "--input", "-10").stdout
    assert "-11.980000" in text and "essentially forgotten" in text


def doc_series_is_absent(stdout: str) -> bool:
    return json.loads(stdout)["series"] is None


@pytest.mark.parametrize(
    ("inputs", "expected"), [("0,0.5,0.25,1", COMPANY_A), ("1,0.5,0.25,1", COMPANY_B)]
)
def test_companies_day_by_day(inputs, expected):
    doc = json.loads(run("explain", "--sequence", inputs, "--json").stdout)
    assert doc["initial"] == {"long_term_memory": 0.0, "short_term_memory": 0.0}
    got = [(round(s["c"], 6), round(s["h"], 6)) for s in doc["steps"]]
    assert got == expected
    text = run("explain", "--sequence", inputs).stdout
    for c, h in expected:
        assert f"{c:.6f}" in text and f"{h:.6f}" in text
    assert "the exact predictions are 0.006393 and 0.969393" in text
    assert "half-life" in text


def test_custom_memories():
    doc = json.loads(
        run("explain", "--long-term", "0", "--short-term", "0", "--input", "0", "--json").stdout
    )
    (step,) = doc["steps"]
    assert step["forget_x_axis"] == pytest.approx(1.62)
    assert step["retained"] == 0.0
    assert doc["series"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["explain", "--input", "abc"], "argument --input: expected a number; got 'abc'"),
        (["explain", "--input", "nan"], "argument --input: expected a finite number; got 'nan'"),
        (
            ["explain", "--sequence", "1,,2"],
            "argument --sequence: expected comma-separated numbers",
        ),
        (["explain", "--sequence", ""], "argument --sequence: expected comma-separated numbers"),
        (["explain", "--long-term", "inf"], "argument --long-term: expected a finite number"),
        (["explain", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["explode"], "invalid choice: 'explode'"),
    ],
)
def test_bad_explain_options_are_clear_errors(args, message):
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
