"""Every numeric flag is checked while the command line is parsed: one line naming the flag,
its range and the value, before anything runs; error messages are printed as plain text."""

from __future__ import annotations

import argparse
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearlstm.cli import flags
from clearlstm.cli.main import build_parser, main

THREADS, SEEDS = flags.MAX_THREADS, flags.MAX_SEED


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--clip", "0"], "--clip must be a finite number greater than 0"),
        (["train", "--clip", "-1"], "--clip must be a finite number greater than 0"),
        (["train", "--patience", "0"], "--patience must be at least 1; got 0"),
        (["train", "--lr", "1e300"], "--lr must be a finite number greater than 0 and at most 10"),
        (["train", "--lr", "0"], "--lr must be a finite number greater than 0"),
        (["train", "--hidden-size", "100000"], "--hidden-size must be an integer from 1 to 65536"),
        (["train", "--season", "0"], "--season must be an integer from 1 to 1000000000; got 0"),
        (["train", "--threads", "100000"], f"--threads must be an integer from 1 to {THREADS}"),
        (["train", "--seed", "-1"], f"--seed must be an integer from 0 to {SEEDS}; got -1"),
        (["train", "--batch-size", "0"], "--batch-size must be at least 1; got 0"),
        (["forecast", "--model", "m", "--steps", "0"], "--steps must be an integer from 1 to"),
        (["generate", "--model", "m", "--temperature", "1e-300"], "--temperature must be 0"),
        (["generate", "--model", "m", "--temperature", "-1"], "from 0.01 to 100; got -1"),
        (["generate", "--model", "m", "--length", "0"], "--length must be an integer from 1 to"),
        (["serve", "--port", "70000"], "--port must be an integer from 0 to 65535; got 70000"),
        (["figure", "heatmap", "--direction", "2"], "--direction must be an integer from 0 to 1"),
        (["figure", "heatmap", "--layer", "5000"], "--layer must be an integer from -1024 to"),
        (["figure", "unit", "--step", "0"], "--step must be at least 1; got 0"),
        (["explain", "--sequence", "1,1e200"], "--sequence: number 2 (1e200) is too large"),
        (["explain", "--input", "1e151"], "--input must be a finite number from -1e150 to 1e150"),
    ],
)  # fmt: skip
def test_a_number_out_of_range_is_one_line_before_anything_runs(capsys, argv, message):
    assert main(argv) == 1
    assert message in one_line_error(capsys)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--epochs", "x"], "argument --epochs: expected an integer; got 'x'"),
        (["train", "--lr", "nan"], "argument --lr: expected a finite number; got 'nan'"),
        (["train", "--window", "1.5"], "argument --window: expected an integer; got '1.5'"),
        (["explain", "--sequence", "1,x"], "argument --sequence: number 2: expected a number"),
    ],
)
def test_text_that_is_no_number_is_a_usage_error_on_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    line = one_line_error(capsys)
    assert message in line and line.endswith(f"(see `clearlstm {argv[0]} --help`)")


def parsers() -> dict[str, argparse.ArgumentParser]:
    return build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]


def test_no_flag_takes_a_bare_int_or_float_and_the_fuzz_covers_every_number():
    for name, parser in parsers().items():
        for action in parser._actions:
            assert action.type not in (int, float), (name, action.option_strings)
            kind = getattr(action.type, "__name__", "")
            if kind in ("integer", "number", "temperature", "rate"):
                assert (name, action.option_strings[0]) in RANGES


def test_the_size_caps_are_those_a_saved_model_may_hold():
    from clearlstm.cli import main as cli
    from clearlstm.tasks import settings

    assert (cli.MAX_UNITS, cli.MAX_LAYERS) == (settings.MAX_UNITS, settings.MAX_LAYERS)
    assert cli.MAX_STEPS == settings.MAX_STEPS


# Every numeric flag, and the range the parse must keep it in.
RANGES = {
    ("train", "--window"): (1, math.inf), ("train", "--horizon"): (1, math.inf),
    ("train", "--season"): (1, 10**9), ("train", "--hidden-size"): (1, 65_536),
    ("train", "--layers"): (1, 1_024), ("train", "--epochs"): (1, math.inf),
    ("train", "--ensemble"): (1, 1_024),
    ("train", "--patience"): (1, math.inf), ("train", "--batch-size"): (1, math.inf),
    ("train", "--lr"): (0, 10), ("train", "--clip"): (0, 1e150),
    ("train", "--seed"): (0, flags.MAX_SEED), ("train", "--threads"): (1, flags.MAX_THREADS),
    ("train", "--test-size"): (1, 10**9), ("train", "--val-size"): (1, 10**9),
    ("train", "--backtest-horizon"): (1, 10**9),
    ("backtest", "--horizon"): (1, 10**9), ("backtest", "--refit-every"): (1, 10**9),
    ("forecast", "--steps"): (1, 100_000), ("generate", "--temperature"): (0, 100),
    ("generate", "--length"): (1, 10**6), ("generate", "--seed"): (0, flags.MAX_SEED),
    ("figure", "--step"): (1, math.inf), ("figure", "--start"): (1, math.inf),
    ("figure", "--layer"): (-1024, 1023), ("figure", "--direction"): (0, 1),
    ("figure", "--input"): (-1e150, 1e150), ("explain", "--input"): (-1e150, 1e150),
    ("serve", "--port"): (0, 65_535),
}  # fmt: skip
RANGES |= {("train", "--cell-clip"): (0, 1e150), ("train", "--forget-bias"): (-100, 100)}
RANGES |= {("train", "--chrono-max-steps"): (3, 10**9)}
for rate in ("--zoneout-h", "--zoneout-c", "--recurrent-dropout", "--input-dropout"):
    RANGES[("train", rate)] = (0, 1)  # below 1
for command in ("explain", "figure", "report"):
    RANGES |= {
        (command, "--long-term"): (-1e150, 1e150),
        (command, "--short-term"): (-1e150, 1e150),
    }
REQUIRED = {"forecast": ["--model", "m"], "generate": ["--model", "m"], "figure": ["heatmap"]}
REQUIRED["backtest"] = ["--model", "m"]
COUNTS = {"tried": 0, "clean errors": 0, "accepted": 0}

values = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "0x10", "1_000", "1e400", "-0", "nan", "inf", "1,2", "٣", "7 "]),
    st.text(max_size=8),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(flag=st.sampled_from(sorted(RANGES)), text=values)
def test_fuzzed_flag_values_parse_in_range_or_fail_cleanly(capsys, flag, text):
    command, option = flag
    argv = [command, *REQUIRED.get(command, []), f"{option}={text}"]
    COUNTS["tried"] += 1
    try:
        args = build_parser().parse_args(argv)
    except flags.FlagError as error:
        assert option in str(error) and "\n" not in str(error)
        COUNTS["clean errors"] += 1
        return
    except SystemExit as exit:
        assert exit.code == 2
        one_line_error(capsys)
        COUNTS["clean errors"] += 1
        return
    COUNTS["accepted"] += 1
    value = getattr(args, option.lstrip("-").replace("-", "_"))
    low, high = RANGES[flag]
    assert math.isfinite(value) and low <= value <= high, (argv, value)


def test_fuzz_counts_are_reported(capsys):
    # Runs after the fuzz test in the same process (file order); shown with pytest -s.
    if COUNTS["tried"]:
        with capsys.disabled():
            print(f"\nflag fuzz: {COUNTS}")
        assert COUNTS["clean errors"] + COUNTS["accepted"] == COUNTS["tried"]


@pytest.mark.parametrize("name", ["a[/]b.csv", "[red]x[/red]:thumbs_up:.csv", "[bold"])
def test_errors_print_the_users_path_as_it_is(tmp_path, capsys, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--csv", name, "--out", "m"]) == 1
    assert one_line_error(capsys) == f"error: {name}: no such file"


def test_figure_and_report_print_their_paths_as_they_are(tmp_path, capsys):
    out = tmp_path / "x[red]:thumbs_up:[b].png"
    assert main(["figure", "unit", "--out", str(out)]) == 0
    assert f"wrote {out} (" in capsys.readouterr().out.replace("\n", "")


def test_train_and_forecast_print_paths_and_column_names_as_they_are(tmp_path, capsys):
    """Paths and a column named like markup: ``[/]`` made rich raise (MarkupError), ``[red]``
    and ``:thumbs_up:`` were rewritten into a colour and an emoji."""
    column = "[red]units:thumbs_up:"
    csv = tmp_path / "a[/]b.csv"  # the folder "a[" and the file "]b.csv"
    csv.parent.mkdir()
    csv.write_text(f"{column}\n" + "".join(f"{math.sin(t / 3):.4f}\n" for t in range(60)))
    out = tmp_path / "m[/]x[red]y[/red]:thumbs_up:"
    tiny = ["--epochs", "1", "--hidden-size", "4", "--window", "4"]
    assert main(["train", "--csv", str(csv), *tiny, "--out", str(out)]) == 0
    printed = capsys.readouterr().out.replace("\n", "")
    assert f"Model saved in {out} (took" in printed
    assert f"{column}: the LSTM" in printed  # the verdict names the target as it is
    forecast = tmp_path / "f[/][bold]:smile:.csv"
    forecast.parent.mkdir()
    argv = ["forecast", "--model", str(out), "--csv", str(csv), "--steps", "2"]
    assert main([*argv, "--out", str(forecast)]) == 0
    printed = capsys.readouterr().out.replace("\n", "")
    assert f"2 step(s) forecast past {csv} (refitted on all 60 rows): {forecast}" in printed
