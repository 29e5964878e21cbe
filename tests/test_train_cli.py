"""`clearlstm train`, `forecast`, `generate`, `datasets` and `explain --model`, run as a user
would: subprocesses on the bundled data with small settings."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from clearlstm.tasks.datasets import DATA_DIR

TINY = ["--window", "8", "--hidden-size", "4", "--epochs", "3", "--batch-size", "16"]


def run(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clearlstm.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def weights(directory: Path) -> dict:
    return load_file(str(directory / "model.safetensors"))


@pytest.fixture(scope="module")
def nile_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nile") / "model"
    result = run("train", "--dataset", "nile", *TINY, "--ensemble", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_datasets_lists_every_bundled_file_with_its_licence():
    result = run("datasets")
    assert result.returncode == 0, result.stderr
    for name in ("co2", "sunspots", "nile", "elnino", "shakespeare"):
        assert name in result.stdout
    assert "public domain" in result.stdout
    assert (DATA_DIR / "SOURCES.md").read_text().count("public domain") >= 5


def test_train_prints_the_evaluation_table_retention_and_writes_the_plot(tmp_path):
    out, png = tmp_path / "co2", tmp_path / "co2.png"
    result = run(
        "train", "--dataset", "co2", "--window", "12", "--hidden-size", "8", "--epochs", "3",
        "--out", str(out), "--plot", str(png),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for word in ("LSTM", "naive", "seasonal naive", "AutoETS", "AutoARIMA", "AutoTheta"):
        assert word in text
    for word in ("MAE", "RMSE", "MASE", "sMAPE", "MAPE"):
        assert word in text
    assert "80% nominal covers" in " ".join(text.split())
    assert "season 12" in text
    assert "the LSTM LOSES to" in text or "the LSTM beats every baseline" in text
    assert "half-life" in text and "Longest memory: unit" in text
    assert png.stat().st_size > 10_000
    settings = json.loads((out / "settings.json").read_text())
    assert settings["format"] == "clearlstm" and settings["kind"] == "forecaster"
    assert settings["data"]["split"] == {"train": 368, "val": 79, "test": 79}
    # The saved model is refitted on all rows, and its scaler with it.
    assert settings["fitted_rows"] == 526 and "Refitted on all 526 rows" in text
    rows = [float(r["co2_ppm"]) for r in csv.DictReader((DATA_DIR / "co2.csv").open())]
    assert settings["data"]["scaler"]["mean"][0] == pytest.approx(sum(rows) / len(rows))
    test_scores = settings["result"]["test"]["co2_ppm"]
    want = {"LSTM", "naive", "seasonal naive", "AutoETS", "AutoARIMA", "AutoTheta"}
    assert set(test_scores) == want


def test_forecast_writes_csv_and_plot_past_the_end(nile_model, tmp_path):
    out, png = tmp_path / "f.csv", tmp_path / "f.png"
    result = run(
        "forecast", "--model", str(nile_model), "--steps", "5", "--out", str(out),
        "--plot", str(png),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(out.open()))
    assert rows[0][:2] == ["year", "flow"]  # then the intervals' columns
    assert [r[0] for r in rows[1:]] == ["1971", "1972", "1973", "1974", "1975"]
    assert all(float(r[1]) > 0 for r in rows[1:])
    assert png.stat().st_size > 10_000


def test_forecast_on_another_csv_with_the_same_columns(nile_model, tmp_path):
    data = tmp_path / "mine.csv"
    data.write_text("year,flow\n" + "".join(f"{2000 + i},{1000 + 10 * i}\n" for i in range(30)))
    out = tmp_path / "f.csv"
    result = run("forecast", "--model", str(nile_model), "--csv", str(data), "--steps", "2",
                 "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [r[0] for r in csv.reader(out.open())][1:] == ["2030", "2031"]


def test_explain_a_trained_model_on_a_sequence(nile_model):
    result = run("explain", "--model", str(nile_model), "--sequence", "1100,900,1000,950")
    assert result.returncode == 0, result.stderr
    assert "Gates step by step" in result.stdout
    assert "1100" in result.stdout and "half-life" in result.stdout
    for unit in range(4):
        assert f"unit {unit}" in result.stdout


def test_covariates_and_two_targets(tmp_path):
    data = tmp_path / "two.csv"
    lines = ["date,a,b,temp"] + [
        f"d{i},{(i % 7) + i * 0.1:.3f},{(i % 5) * 2:.3f},{i % 3}" for i in range(120)
    ]
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "m"
    result = run(
        "train", "--csv", str(data), "--target", "a", "b", "--covariates", "temp",
        "--time-column", "date", "--horizon", "2", *TINY, "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "test part: a," in result.stdout and "test part: b," in result.stdout
    more = run("forecast", "--model", str(out), "--steps", "3", "--out", str(tmp_path / "f.csv"))
    assert more.returncode == 1
    assert "covariates" in more.stderr and "Traceback" not in more.stderr


def test_resume_after_a_stop_ends_with_the_same_weights(tmp_path):
    settings = ["--dataset", "nile", *TINY[:-4], "--epochs", "6", "--batch-size", "16"]
    whole = run("train", *settings, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    stopped = run(
        "train", *settings, "--out", str(tmp_path / "cut"), env={"CLEARLSTM_STOP_AFTER_EPOCH": "2"}
    )
    assert stopped.returncode == 130
    assert "--resume" in stopped.stdout
    again = run("train", *settings, "--out", str(tmp_path / "cut"))
    assert again.returncode == 1 and "--resume" in again.stderr
    resumed = run("train", *settings, "--out", str(tmp_path / "cut"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "cut")
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] == b[name]).all(), name  # bit for bit


@pytest.mark.slow
def test_resume_after_a_kill_ends_with_the_same_weights(tmp_path):
    settings = ["--dataset", "nile", *TINY[:-4], "--epochs", "150", "--patience", "150"]
    whole = run("train", *settings, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    cut = tmp_path / "cut"
    process = subprocess.Popen(
        [sys.executable, "-m", "clearlstm.cli", "train", *settings, "--out", str(cut)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (cut / "training.safetensors").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (cut / "model.safetensors").exists()  # killed mid-run, before the end
    resumed = run("train", *settings, "--out", str(cut), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = weights(tmp_path / "whole"), weights(cut)
    for name in a:
        assert (a[name] == b[name]).all(), name


def test_resume_refuses_other_settings(tmp_path):
    out = str(tmp_path / "m")
    assert run("train", "--dataset", "nile", *TINY, "--out", out).returncode == 0
    result = run("train", "--dataset", "nile", *TINY[:2], "--hidden-size", "5", *TINY[4:],
                 "--out", out, "--resume")  # fmt: skip
    assert result.returncode == 1
    assert "other settings" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def small_text(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "plays.txt"
    path.write_text((DATA_DIR / "shakespeare.txt").read_text()[:30_000])
    return path


@pytest.mark.slow
def test_text_training_reports_bits_per_char_and_generates(small_text, tmp_path):
    out = tmp_path / "lm"
    result = run(
        "train", "--text", str(small_text), "--window", "40", "--hidden-size", "16",
        "--epochs", "2", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Validation bits per character:" in result.stdout
    bpc = json.loads((out / "settings.json").read_text())["result"]["val_bits_per_char"]
    assert 0 < bpc < 7
    sample = run("generate", "--model", str(out), "--prompt", "HAMLET.", "--length", "50")
    assert sample.returncode == 0, sample.stderr
    assert sample.stdout.startswith("HAMLET.") and len(sample.stdout) >= 57
    again = run("generate", "--model", str(out), "--prompt", "HAMLET.", "--length", "50")
    assert again.stdout == sample.stdout  # same seed, same text
    greedy = run("generate", "--model", str(out), "--prompt", "A", "--temperature", "0")
    assert greedy.returncode == 0, greedy.stderr
    explained = run("explain", "--model", str(out), "--text", "To be")
    assert explained.returncode == 0, explained.stderr
    assert "'T'" in explained.stdout
    wrong = run("forecast", "--model", str(out), "--out", str(tmp_path / "f.csv"))
    assert wrong.returncode == 1 and "not a forecaster" in wrong.stderr


@pytest.mark.slow
def test_two_processes_under_torchrun_equal_one_process(tmp_path):
    settings = ["--dataset", "nile", *TINY[:-4], "--epochs", "4", "--batch-size", "16"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, "-m", "clearlstm.cli", "train", *settings, "--out", str(tmp_path / "one")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "clearlstm.cli", "train", *settings, "--out", str(tmp_path / "two"),
        ],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("test part:") == 1  # only rank 0 prints
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    for name in a:  # equal within float tolerance (the gradient sums run in another order)
        assert (a[name] - b[name]).abs().max() < 1e-5, name


@pytest.mark.parametrize("launched", [False, True])
def test_a_finished_torchrun_worker_exits_at_once_with_its_output_flushed(launched):
    # Under torchrun (and only there) a worker that finished skips the interpreter's teardown,
    # where torch's distributed threads could abort it; what it printed must still arrive.
    script = (
        "import sys; from clearlstm.cli.main import main; "
        "sys.argv = ['clearlstm', 'explain']; code = main(); print('after main', code)"
    )
    env = {**os.environ, "WORLD_SIZE": "2"}
    env.pop("TORCHELASTIC_RUN_ID", None)
    if launched:
        env["TORCHELASTIC_RUN_ID"] = "test"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "forget gate" in done.stdout  # explain's output, flushed before the exit
    assert ("after main" in done.stdout) is not launched


# ---- bad input: one clear message, non-zero exit, no traceback --------------------------


def check_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())  # rich wraps long lines
    assert message.startswith("error:"), result.stderr
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def csv_file(tmp_path: Path, text: str, name: str = "data.csv") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_missing_csv(tmp_path):
    missing = str(tmp_path / "nope.csv")
    check_error(run("train", "--csv", missing, "--out", str(tmp_path / "m")), "nope.csv", "no such")


def test_empty_csv(tmp_path):
    path = csv_file(tmp_path, "")
    check_error(run("train", "--csv", path, "--out", str(tmp_path / "m")), "data.csv", "empty")


def test_header_only_csv(tmp_path):
    path = csv_file(tmp_path, "a,b\n")
    check_error(run("train", "--csv", path, "--out", str(tmp_path / "m")), "no rows")


def test_unknown_column(tmp_path):
    path = csv_file(tmp_path, "t,a\n1,2\n")
    result = run("train", "--csv", path, "--target", "sales", "--out", str(tmp_path / "m"))
    check_error(result, "data.csv", "'sales'", "the columns are t, a")


def test_non_numeric_column(tmp_path):
    path = csv_file(tmp_path, "a,b\n1,2\n2,x3\n3,4\n")
    result = run("train", "--csv", path, "--target", "b", "--out", str(tmp_path / "m"))
    check_error(result, "data.csv, line 3, column 'b'", "'x3' is not a number")


def test_missing_values_name_the_lines_and_fill_fixes_them(tmp_path):
    rows = "".join(f"{i},{'' if i in (5, 9) else i % 7}\n" for i in range(200))
    path = csv_file(tmp_path, "step,value\n" + rows)
    result = run("train", "--csv", path, "--target", "value", "--out", str(tmp_path / "m"))
    check_error(result, "column 'value'", "2 missing value(s) on line(s) 7, 11", "--fill")
    filled = run("train", "--csv", path, "--target", "value", "--fill", "linear", *TINY,
                 "--out", str(tmp_path / "m"))  # fmt: skip
    assert filled.returncode == 0, filled.stderr


def test_series_too_short(tmp_path):
    path = csv_file(tmp_path, "v\n" + "".join(f"{i}\n" for i in range(20)))
    result = run("train", "--csv", path, "--out", str(tmp_path / "m"))
    check_error(result, "data.csv", "20 rows are too few", "--window 24", "at least")


@pytest.mark.parametrize("flag", ["--window", "--horizon"])
def test_zero_window_or_horizon(tmp_path, flag):
    result = run("train", "--dataset", "nile", flag, "0", "--out", str(tmp_path / "m"))
    check_error(result, f"{flag} must be at least 1")


def test_text_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("To be or not\nto be, café".encode("latin-1"))
    result = run("train", "--text", str(path), "--out", str(tmp_path / "m"))
    check_error(result, "latin1.txt, line 2", "not UTF-8", "0xe9")


def test_truncated_checkpoint(nile_model, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(nile_model, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    result = run("forecast", "--model", str(broken), "--out", str(tmp_path / "f.csv"))
    check_error(result, "model.safetensors", "truncated")


def test_checkpoint_from_another_model_shape(nile_model, tmp_path):
    other = tmp_path / "other"
    assert run("train", "--dataset", "nile", *TINY[:2], "--hidden-size", "6", *TINY[4:],
               "--ensemble", "1", "--out", str(other)).returncode == 0  # fmt: skip
    mixed = tmp_path / "mixed"
    shutil.copytree(nile_model, mixed)
    shutil.copy(other / "model.safetensors", mixed / "model.safetensors")
    result = run("forecast", "--model", str(mixed), "--out", str(tmp_path / "f.csv"))
    check_error(result, "model.safetensors", "another shape", "(24, 1)", "(16, 1)")


def test_not_a_clearlstm_file(nile_model, tmp_path):
    import torch
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign"
    shutil.copytree(nile_model, foreign)
    save_file({"w": torch.zeros(2)}, str(foreign / "model.safetensors"))
    result = run("forecast", "--model", str(foreign), "--out", str(tmp_path / "f.csv"))
    check_error(result, "model.safetensors", "not one clearlstm wrote")
    (foreign / "model.safetensors").write_bytes(b"\x80\x04 pickle, not safetensors")
    result = run("forecast", "--model", str(foreign), "--out", str(tmp_path / "f.csv"))
    check_error(result, "model.safetensors", "not a readable safetensors file")
    (foreign / "settings.json").write_text('{"kind": "forecaster"}')
    result = run("forecast", "--model", str(foreign), "--out", str(tmp_path / "f.csv"))
    check_error(result, "settings.json", "not a clearlstm settings file")


def test_a_directory_that_is_not_a_model(tmp_path):
    result = run("forecast", "--model", str(tmp_path), "--out", str(tmp_path / "f.csv"))
    check_error(result, "has no model.safetensors", "--out directory")


def test_text_mode_refuses_series_flags(tmp_path):
    result = run("train", "--dataset", "shakespeare", "--plot", "x.png", "--out", str(tmp_path))
    check_error(result, "--plot is for series")


def test_unknown_dataset_lists_the_bundled_ones(tmp_path):
    result = run("train", "--dataset", "tides", "--out", str(tmp_path / "m"))
    check_error(result, "no bundled dataset named 'tides'", "co2, sunspots, nile, elnino")


def test_zero_epochs(tmp_path):
    result = run("train", "--dataset", "nile", "--epochs", "0", "--out", str(tmp_path / "m"))
    check_error(result, "--epochs must be at least 1")
