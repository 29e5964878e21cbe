"""settings.json is strict JSON: a measure that does not exist (MASE of a constant series, the
loss of a run where no epoch improved) is written as null, never NaN or Infinity; integers too
long for Python's parser are a clean CheckpointError."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from clearlstm.cli.main import main
from clearlstm.errors import CheckpointError
from clearlstm.tasks import settings as S
from clearlstm.tasks.forecasting import load_forecaster
from clearlstm.tasks.text import load_char_model
from clearlstm.train import checkpoint, loop

TINY = ["--epochs", "2", "--hidden-size", "4", "--window", "4", "--batch-size", "8"]


def strict(path: Path) -> dict[str, Any]:
    """``path`` parsed as strict JSON: NaN, Infinity and -Infinity are refused."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"{path} holds {name}: not valid JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_constant_series_stores_its_undefined_mase_as_null(tmp_path):
    csv = tmp_path / "flat.csv"
    csv.write_text("units\n" + "5\n" * 60)
    out = tmp_path / "m"
    assert main(["train", "--csv", str(csv), *TINY, "--out", str(out)]) == 0
    document = strict(out / "settings.json")
    scores = document["result"]["test"]["units"]
    assert all(s["mase"] is None for s in scores.values()), scores
    assert all(isinstance(s["mae"], float) for s in scores.values()), scores
    _, settings, _ = load_forecaster(out)
    assert settings.result.test["units"]["LSTM"].mase is None


def test_no_improving_epoch_stores_null_losses(tmp_path, monkeypatch):
    """A validation loss that is NaN never improves on the start (inf): best_val_loss and
    val_bits_per_char do not exist, and are null in the file."""
    monkeypatch.setattr(loop, "evaluate", lambda *args: math.nan)
    csv = tmp_path / "wave.csv"
    csv.write_text("y\n" + "".join(f"{math.sin(t / 3):.4f}\n" for t in range(60)))
    out = tmp_path / "series"
    assert main(["train", "--csv", str(csv), *TINY, "--out", str(out)]) == 0
    result = strict(out / "settings.json")["result"]
    assert (result["best_epoch"], result["best_val_loss"]) == (0, None)
    assert load_forecaster(out)[1].result.best_val_loss is None
    text = tmp_path / "words.txt"
    text.write_text("to be or not to be\n" * 20)
    out = tmp_path / "text"
    assert main(["train", "--text", str(text), *TINY, "--out", str(out)]) == 0
    result = strict(out / "settings.json")["result"]
    assert (result["best_epoch"], result["val_bits_per_char"]) == (0, None)
    assert load_char_model(out)[1].result.val_bits_per_char is None


def test_folders_written_with_nan_and_infinity_still_load(models_folder, tmp_path):
    folder = tmp_path / "wave"
    shutil.copytree(models_folder / "wave", folder)
    path = folder / "settings.json"
    document = json.loads(path.read_text())
    document["result"]["best_val_loss"] = math.inf
    for scores in document["result"]["test"]["y"].values():
        scores["mase"] = math.nan
    path.write_text(json.dumps(document))  # as clearlstm wrote them before: Infinity, NaN
    settings = load_forecaster(folder)[1]
    assert settings.result.best_val_loss == math.inf
    assert math.isnan(settings.result.test["y"]["LSTM"].mase)


def test_a_non_finite_setting_is_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(CheckpointError, match=r"settings\.json: a setting is not a finite number"):
        checkpoint.save_model(tmp_path / "m", b"weights", {"result": {"loss": math.nan}})
    assert not (tmp_path / "m" / "settings.json").exists()


def test_method_scores_of_non_finite_errors_are_null():
    scores = S.MethodScores.of(S.Scores(mae=1.5, rmse=math.inf, mase=math.nan))
    assert (scores.mae, scores.rmse, scores.mase) == (1.5, None, None)
    assert json.dumps(scores.to_json(), allow_nan=False) == (
        '{"mae": 1.5, "rmse": null, "mase": null}'
    )


@pytest.mark.parametrize("digits", [4301, 6000])
def test_an_integer_too_long_to_parse_is_a_clean_checkpoint_error(models_folder, tmp_path, digits):
    folder = tmp_path / "wave"
    shutil.copytree(models_folder / "wave", folder)
    path = folder / "settings.json"
    path.write_text(path.read_text().replace('"hidden_size": 6', f'"hidden_size": {"9" * digits}'))
    with pytest.raises(CheckpointError) as caught:
        load_forecaster(folder)
    message = str(caught.value)
    assert "settings.json is not valid JSON (it holds an integer of more than 4300 digits)" in (
        message
    )
    assert "sys.set_int_max_str_digits" not in message and len(message) < 300, message


def test_an_integer_just_short_of_the_limit_is_named_without_its_digits(models_folder, tmp_path):
    folder = tmp_path / "wave"
    shutil.copytree(models_folder / "wave", folder)
    path = folder / "settings.json"
    path.write_text(path.read_text().replace('"hidden_size": 6', f'"hidden_size": {"9" * 4000}'))
    with pytest.raises(CheckpointError) as caught:
        load_forecaster(folder)
    message = str(caught.value)
    assert "model.hidden_size must be an integer from 1 to 65536; found an integer of 4000" in (
        message
    )
    assert len(message) < 300, message
