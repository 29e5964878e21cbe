"""settings.json as frozen dataclasses: round trips, and every crafted bad file refused with
a CheckpointError naming the file and the field (and no traceback from the CLI)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from clearlstm.cli.main import main
from clearlstm.errors import CheckpointError
from clearlstm.tasks import settings as S
from clearlstm.tasks.models import CharModel, Forecaster
from clearlstm.train.loop import TrainConfig

FIXTURES = Path(__file__).parent / "fixtures"
DELETE = object()  # a key to remove


def old_document(kind: str) -> dict[str, Any]:
    """A settings.json as the code before the dataclasses wrote it (format version 1)."""
    return json.loads((FIXTURES / f"settings_v1_{kind}.json").read_text())


def forecaster() -> S.ForecasterSettings:
    return S.ForecasterSettings(
        model=S.ForecasterShape(columns=3, targets=2, horizon=4, hidden_size=5, num_layers=2),
        data=S.DataSettings(
            dataset=None,
            csv="/data/two.csv",
            targets=("a", "b"),
            covariates=("temp",),
            time_column="date",
            fill="linear",
            window=8,
            horizon=4,
            val_fraction=0.15,
            test_fraction=0.15,
            season=None,
            rows=120,
            split=S.SplitSettings(84, 18, 18),
            scaler=S.ScalerSettings((1.0, 2.0, 3.0), (0.5, 1.0, 2.0)),
        ),
        train=TrainConfig(epochs=3, batch_size=16),
        result=S.ForecasterResult(
            best_epoch=2,
            best_val_loss=0.25,
            epochs_run=3,
            test={"a": {"LSTM": S.MethodScores(1.0, 1.5, math.nan)}},
        ),
    )


def char_model() -> S.CharModelSettings:
    return S.CharModelSettings(
        model=S.CharModelShape(embedding_size=4, hidden_size=6, num_layers=3),
        data=S.TextDataSettings(dataset="shakespeare", text=None, seq_len=40, val_fraction=0.1),
        vocabulary="\n abc",
        train=TrainConfig(),
        result=S.CharModelResult(best_epoch=0, epochs_run=1, val_bits_per_char=math.inf),
    )


def parts() -> list[Any]:
    f, c = forecaster(), char_model()
    return [f, c, f.model, f.data, f.data.split, f.data.scaler, f.result, f.train, c.model, c.data]


@pytest.mark.parametrize("value", parts(), ids=lambda v: type(v).__name__)
def test_every_settings_class_round_trips_through_json(value):
    text = json.dumps(value.to_json())
    again = type(value).from_json(json.loads(text))
    assert json.dumps(again.to_json()) == text
    if not isinstance(value, S.ForecasterResult | S.ForecasterSettings):  # NaN != NaN
        assert again == value


@pytest.mark.parametrize("kind", ["forecaster", "char_lm"])
def test_files_written_before_the_dataclasses_still_load_and_rewrite_the_same(kind):
    document = old_document(kind)
    settings = S.from_json(document)
    assert settings.kind == kind and settings.to_json() == document


def test_a_folder_written_by_the_cli_loads_with_attribute_access(models_folder):
    wave, _ = S.read_settings(models_folder / "wave")
    assert isinstance(wave, S.ForecasterSettings)
    assert (wave.model.hidden_size, wave.data.window, wave.data.targets) == (6, 8, ("y",))
    words, _ = S.read_settings(models_folder / "words")
    assert isinstance(words, S.CharModelSettings) and words.model.hidden_size == 8
    document = json.loads((models_folder / "wave" / "settings.json").read_text())
    assert wave.to_json() == document


def test_weight_shapes_are_the_models_state_dict_shapes():
    f, c = forecaster(), char_model()
    for settings, model in ((f, Forecaster.from_settings(f)), (c, CharModel.from_settings(c))):
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert settings.weight_shapes() == shapes


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        forecaster().model.hidden_size = 7  # type: ignore[misc]


# ---- crafted bad files ------------------------------------------------------------------


def _keys(path: str) -> list[str | int]:
    return [int(k) if k.isdigit() else k for k in re.findall(r"[^.\[\]]+", path)]


def edited(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    document = json.loads(json.dumps(document))
    *parents, last = _keys(path)
    target = document
    for key in parents:
        target = target[key]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return document


HIDDEN = r"settings\.json: model\.hidden_size must be an integer from 1 to 65536; found "
# (field path, new value, what the error must say); the model is `wave` of conftest.py:
# 1 column, 6 units, window 8, 80 rows.
FORECASTER_CASES = [
    ("model.hidden_size", "6", HIDDEN + r'"6" \(a string\)'),
    ("model.hidden_size", True, HIDDEN + r"true \(a boolean\)"),
    ("model.hidden_size", 6.0, HIDDEN + r"6\.0"),
    ("model.hidden_size", 0, HIDDEN + "0"),
    ("model.hidden_size", -6, HIDDEN + "-6"),
    ("model.hidden_size", 10**12, HIDDEN + "1000000000000"),
    ("model.hidden_size", None, HIDDEN + "null"),
    ("model.hidden_size", DELETE, r"settings\.json: model\.hidden_size is missing; expected an"),
    ("model.dropout", 0.1, r"settings\.json: model\.dropout is not a setting clearlstm knows"),
    ("model.num_layers", 5000, r"model\.num_layers must be an integer from 1 to 1024"),
    ("model.columns", 2, r"model\.columns must be 1 \(the number of data\.targets and data"),
    ("model.horizon", 2, r"settings\.json: model\.horizon must be 1 \(data\.horizon\)"),
    ("data.window", 0, r"settings\.json: data\.window must be an integer from 1 to"),
    ("data.val_fraction", 1.5, r"data\.val_fraction must be a finite number greater than 0 and"),
    ("data.val_fraction", math.nan, r"data\.val_fraction must be a finite number .*; found NaN"),
    ("data.scaler.std[0]", 0.0, r"data\.scaler\.std\[0\] must be a finite number greater than 0"),
    ("data.scaler.std[0]", -1.0, r"data\.scaler\.std\[0\] must be .*; found -1\.0"),
    ("data.scaler.std[0]", math.inf, r"data\.scaler\.std\[0\] must be .*; found Infinity"),
    ("data.scaler.mean[0]", -math.inf, r"data\.scaler\.mean\[0\] must be .*; found -Infinity"),
    ("data.scaler.mean[0]", "0", r"data\.scaler\.mean\[0\] must be a finite number"),
    ("data.scaler.mean", [], r"data\.scaler\.mean must be a list of 1 to 100000 items"),
    ("data.scaler.std", [1.0, 2.0], r"data\.scaler\.std must be a list of 1 numbers"),
    (
        "data.scaler",
        None,
        r"data\.scaler must be an object with the keys mean, std, transform, lambdas; found null",
    ),
    ("data.targets", "y", r"data\.targets must be a list of 1 to 100000 items, each a string"),
    ("data.targets[0]", 3, r"data\.targets\[0\] must be a string; found 3"),
    ("data.covariates", ["y"], r"data\.covariates names the column 'y' twice"),
    ("data.fill", "cubic", r'data\.fill must be "previous" or "linear" or null; found "cubic"'),
    ("data.season", 0, r"data\.season must be an integer from 1 to 1000000000 or null"),
    ("data.dataset", "nile", r"data\.dataset and data\.csv: exactly one must be given"),
    ("data.rows", 81, r"data\.split must be parts adding up to data\.rows \(81\)"),
    ("data.split.train", DELETE, r"settings\.json: data\.split\.train is missing"),
    ("data.split", {"train": 56, "val": 12, "test": 12, "x": 1}, r"data\.split\.x is not a"),
    ("train.lr", -0.1, r"settings\.json: train\.lr must be a finite number greater than 0"),
    ("train.epochs", False, r"train\.epochs must be an integer of at least 1; found false"),
    ("result.best_epoch", -1, r"result\.best_epoch must be an integer of at least 0"),
    ("result.test", [], r"settings\.json: result\.test must be an object"),
    ("result.test.y.LSTM.mae", "x", r'\["LSTM"\]\.mae must be a number or null; found "x"'),
    ("kind", "gru", r'settings\.json: kind must be "forecaster" or "char_lm"; found "gru"'),
    ("kind", DELETE, r"settings\.json: kind is missing"),
    ("version", "2", r'settings\.json: version must be "1"; found "2"'),
    ("version", 1, r'settings\.json: version must be "1"; found 1'),
    ("clearlstm_version", 1, r"settings\.json: clearlstm_version must be a string"),
    # Valid settings that disagree with the weights file: refused from its header.
    ("model.hidden_size", 65536, r"model\.safetensors: weight 'lstm\.weight_ih_l0' has shape"),
    ("model.num_layers", 2, r"model\.safetensors holds weights of another model: missing \["),
]
TEXT_CASES = [
    ("vocabulary", "", r"settings\.json: vocabulary must be a string of 1 to 1000000 char"),
    ("vocabulary", "\n abehinoqrstt", r"vocabulary must hold each character once; 't' appears"),
    ("vocabulary", ["a"], r"settings\.json: vocabulary must be a string"),
    ("model.embedding_size", 65537, r"model\.embedding_size must be an integer from 1 to 65536"),
    ("data.seq_len", 0.5, r"settings\.json: data\.seq_len must be an integer"),
    ("data.text", None, r"data\.dataset and data\.text: exactly one must be given"),
    ("result.val_bits_per_char", "low", r"result\.val_bits_per_char must be a number"),
    ("kind", "forecaster", r"settings\.json: vocabulary is not a setting clearlstm knows"),
    ("vocabulary", "\n abehinoqrstuv", r"weight 'embedding\.weight' has shape \(14, 32\)"),
]


def crafted(folder: Path, source: Path, path: str, value: Any) -> Path:
    out = folder / "crafted"
    shutil.copytree(source, out)
    document = json.loads((out / "settings.json").read_text())
    (out / "settings.json").write_text(json.dumps(edited(document, path, value)))
    return out


@pytest.mark.parametrize(("path", "value", "match"), FORECASTER_CASES)
def test_bad_forecaster_settings_are_refused(models_folder, tmp_path, capsys, path, value, match):
    folder = crafted(tmp_path, models_folder / "wave", path, value)
    with pytest.raises(CheckpointError, match=match):
        S.read_settings(folder)
    assert main(["forecast", "--model", str(folder), "--out", str(tmp_path / "f.csv")]) == 1
    assert re.search(match, " ".join(capsys.readouterr().err.split()))
    assert not (tmp_path / "f.csv").exists()


@pytest.mark.parametrize(("path", "value", "match"), TEXT_CASES)
def test_bad_text_model_settings_are_refused(models_folder, tmp_path, capsys, path, value, match):
    folder = crafted(tmp_path, models_folder / "words", path, value)
    with pytest.raises(CheckpointError, match=match):
        S.read_settings(folder)
    assert main(["generate", "--model", str(folder), "--prompt", "to"]) == 1
    assert re.search(match, " ".join(capsys.readouterr().err.split()))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"format": "clearlstm", "format": "clearlstm"}', r"key 'format' appears 2 times"),
        ('{"format": "clearlstm", "version": "1"', r"settings\.json is not valid JSON"),
        ('["format", "clearlstm"]', r"not a clearlstm settings file"),
        ("[" * 100_000 + "]" * 100_000, r"settings\.json is not valid JSON"),
    ],
)
def test_settings_files_that_are_not_json_objects(models_folder, tmp_path, text, match):
    folder = tmp_path / "m"
    shutil.copytree(models_folder / "wave", folder)
    (folder / "settings.json").write_text(text)
    with pytest.raises(CheckpointError, match=match):
        S.read_settings(folder)


def test_a_crafted_folder_gives_the_cli_one_message_and_no_traceback(models_folder, tmp_path):
    folder = crafted(tmp_path, models_folder / "wave", "model.hidden_size", True)
    result = subprocess.run(
        [sys.executable, "-m", "clearlstm.cli", "forecast", "--model", str(folder)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert message.startswith("error:") and "settings.json: model.hidden_size must be" in message


def test_training_refuses_sizes_a_saved_model_could_not_hold(tmp_path, capsys):
    out = str(tmp_path / "m")
    assert main(["train", "--dataset", "nile", "--hidden-size", "70000", "--out", out]) == 1
    assert "--hidden-size must be an integer from 1 to 65536; got 70000" in capsys.readouterr().err
    assert main(["train", "--dataset", "nile", "--layers", "0", "--out", out]) == 1
    assert "--layers must be an integer from 1 to 1024; got 0" in capsys.readouterr().err


def test_a_loaded_forecaster_equals_the_saved_one(models_folder):
    from clearlstm.tasks.forecasting import load_forecaster
    from clearlstm.train.checkpoint import load_weights

    model, settings, directory = load_forecaster(models_folder / "wave")
    assert isinstance(settings, S.ForecasterSettings) and model.hidden_size == 6
    for name, value in load_weights(directory, settings.weight_shapes()).items():
        assert torch.equal(model.state_dict()[name], value)
