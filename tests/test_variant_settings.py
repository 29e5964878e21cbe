"""The LSTM variants in saved models: ``model.lstm`` in settings.json (round trips, old files,
crafted values refused), the weights a variant adds checked from the file's header, and
``clearlstm train``'s variant flags end to end (train, then forecast, report, explain)."""

from __future__ import annotations

import dataclasses
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

import clearlstm
from clearlstm.cli.main import main
from clearlstm.cli.variant_flags import FORGET_BIAS_LIMIT, MIN_CHRONO_STEPS
from clearlstm.errors import CheckpointError
from clearlstm.nn.variants import DEFAULTS, LN_NAMES
from clearlstm.tasks import lstm_settings
from clearlstm.tasks import settings as S
from clearlstm.tasks.lstm_settings import LstmSettings
from clearlstm.tasks.models import CharModel, Forecaster
from clearlstm.train import checkpoint

FIXTURES = Path(__file__).parent / "fixtures"
VARIANTS = {
    "peephole": {"peephole": True},
    "coupled": {"coupled_input_forget": True},
    "clip": {"cell_clip": 3.0},
    "layer_norm": {"layer_norm": True},
    "zoneout": {"zoneout_h": 0.1, "zoneout_c": 0.2},
    "dropout": {"recurrent_dropout": 0.25, "input_dropout": 0.1},
    "forget_bias": {"forget_bias": 1.0},
    "chrono": {"init": "chrono", "chrono_max_steps": 24},
    "all": {
        "peephole": True,
        "coupled_input_forget": True,
        "cell_clip": 2.5,
        "layer_norm": True,
        "zoneout_h": 0.05,
        "zoneout_c": 0.1,
        "recurrent_dropout": 0.2,
        "input_dropout": 0.3,
        "init": "chrono",
        "chrono_max_steps": 50,
    },
}


def old_document(kind: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"settings_v1_{kind}.json").read_text())


def with_lstm(document: dict[str, Any], lstm: Any) -> dict[str, Any]:
    document = json.loads(json.dumps(document))
    document["model"]["lstm"] = lstm
    return document


def full(config: dict[str, Any]) -> dict[str, Any]:
    return DEFAULTS | config


def test_the_settings_hold_every_variant_argument_with_torchs_defaults():
    assert [f.name for f in dataclasses.fields(LstmSettings)] == list(DEFAULTS)
    assert LstmSettings().kwargs() == DEFAULTS and LstmSettings().plain
    # The CLI repeats the limits so that --help imports nothing heavy; they must agree.
    assert FORGET_BIAS_LIMIT == lstm_settings.FORGET_BIAS_LIMIT
    assert MIN_CHRONO_STEPS == lstm_settings.MIN_CHRONO_STEPS


@pytest.mark.parametrize("kind", ["forecaster", "char_lm"])
@pytest.mark.parametrize("config", VARIANTS.values(), ids=VARIANTS.keys())
def test_every_variant_round_trips_and_builds_its_model(kind, config):
    document = with_lstm(old_document(kind), full(config))
    settings = S.from_json(document)
    assert settings.model.lstm.kwargs() == full(config)
    assert settings.to_json() == document  # every key written, none added
    build = Forecaster if kind == "forecaster" else CharModel
    model = build.from_settings(settings)
    assert model.lstm.variant_config() == full(config)
    assert LstmSettings.of(model.lstm) == settings.model.lstm
    # The weights a variant adds (peepholes, layer norm) are in the shapes checked on load.
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert settings.weight_shapes() == shapes
    added = set(shapes) - set(S.from_json(old_document(kind)).weight_shapes())
    want = {"lstm.weight_peephole_l0"} if config.get("peephole") else set()
    if config.get("layer_norm"):
        want |= {f"lstm.ln_{name}_l0" for name in LN_NAMES}
    assert added == want


@pytest.mark.parametrize("kind", ["forecaster", "char_lm"])
def test_files_without_lstm_load_as_the_plain_lstm_and_plain_models_write_none(kind):
    document = old_document(kind)
    assert "lstm" not in document["model"]
    settings = S.from_json(document)
    assert settings.model.lstm == LstmSettings()
    assert "lstm" not in settings.to_json()["model"]  # a plain model's file is as before
    build = Forecaster if kind == "forecaster" else CharModel
    assert build.from_settings(settings).lstm.variant_config() == DEFAULTS


LSTM = r"settings\.json: model\.lstm\."
BAD_VALUES = [
    ({"cell_clip": 0}, LSTM + r"cell_clip must be a finite number greater than 0 or null; found 0"),
    ({"cell_clip": -1.5}, LSTM + r"cell_clip must be .*; found -1\.5"),
    ({"cell_clip": math.inf}, LSTM + r"cell_clip must be a finite number .*; found Infinity"),
    (
        {"zoneout_h": 1.5},
        LSTM + r"zoneout_h must be a finite number of at least 0 and less "
        r"than 1; found 1\.5",
    ),
    ({"zoneout_c": 1}, LSTM + r"zoneout_c must be .* less than 1; found 1"),
    ({"recurrent_dropout": -0.1}, LSTM + r"recurrent_dropout must be .*; found -0\.1"),
    ({"input_dropout": "0.1"}, LSTM + r'input_dropout must be a finite number .*; found "0\.1"'),
    ({"init": "xavier"}, LSTM + r'init must be "torch" or "chrono"; found "xavier"'),
    ({"peephole": 1}, LSTM + r"peephole must be true or false; found 1 \(a number\)"),
    ({"layer_norm": "yes"}, LSTM + r"layer_norm must be true or false"),
    ({"forget_bias": 1e9}, LSTM + r"forget_bias must be a finite number from -100 to 100 or null"),
    (
        {"init": "chrono"},
        LSTM + r"chrono_max_steps must be an integer of at least 3 with init "
        r'"chrono"; found null',
    ),
    ({"init": "chrono", "chrono_max_steps": 2}, LSTM + r"chrono_max_steps must be an integer"),
    ({"chrono_max_steps": 10}, LSTM + r'chrono_max_steps must be null unless init is "chrono"'),
    (
        {"init": "chrono", "chrono_max_steps": 10, "forget_bias": 1.0},
        LSTM + r'forget_bias must be null with init "chrono"',
    ),
]


@pytest.mark.parametrize(("config", "match"), BAD_VALUES)
def test_crafted_variant_values_are_refused_naming_the_field(config, match):
    with pytest.raises(CheckpointError, match=match):
        S.from_json(with_lstm(old_document("forecaster"), full(config)))


@pytest.mark.parametrize(
    ("lstm", "match"),
    [
        ({k: v for k, v in DEFAULTS.items() if k != "layer_norm"}, LSTM + "layer_norm is missing"),
        (full({"dropout": 0.1}), LSTM + "dropout is not a setting clearlstm knows"),
        (True, r"model\.lstm must be an object with the keys forget_bias, init, "),
    ],
)
def test_a_crafted_lstm_object_is_refused(lstm, match):
    with pytest.raises(CheckpointError, match=match):
        S.from_json(with_lstm(old_document("char_lm"), lstm))


def test_training_options_are_checked_and_chrono_defaults_to_the_window():
    chrono = lstm_settings.for_training({"init": "chrono"}, window=12)
    assert chrono.chrono_max_steps == 12
    assert lstm_settings.for_training(None, window=1).plain
    with pytest.raises(ValueError, match=r"defaults to the window \(2 steps here\)"):
        lstm_settings.for_training({"init": "chrono"}, window=2)
    with pytest.raises(ValueError, match=r"--layer-norm .* add --ensemble 1"):
        lstm_settings.for_training({"layer_norm": True}, window=8, members=9)
    with pytest.raises(ValueError, match=r"zoneout_h must be .* less than 1; found 1\.5"):
        lstm_settings.for_training({"zoneout_h": 1.5}, window=8)
    with pytest.raises(ValueError, match=r"unknown LSTM arguments \['zoneout'\]"):
        lstm_settings.for_training({"zoneout": 0.1}, window=8)
    with pytest.raises(ValueError, match="layer_norm normalises over all units"):
        Forecaster(1, 1, 1, 4, 1, members=3, lstm={"layer_norm": True})


def test_an_ensemble_keeps_the_variants_initial_biases():
    torch.manual_seed(0)
    model = Forecaster(1, 1, 1, 4, 1, members=3, lstm={"forget_bias": 1.0, "peephole": True})
    b_ih, b_hh = model.lstm.bias_ih_l0.detach(), model.lstm.bias_hh_l0.detach()
    assert torch.equal(b_ih[12:24], torch.ones(12)) and torch.equal(b_hh[12:24], torch.zeros(12))
    model.check_blocks()  # the peepholes (3, N*U) couple no members
    chrono = Forecaster(1, 1, 1, 4, 1, members=3, lstm={"init": "chrono", "chrono_max_steps": 9})
    forget, inputs = chrono.lstm.bias_ih_l0.detach()[12:24], chrono.lstm.bias_ih_l0.detach()[:12]
    assert bool((forget >= 0).all() and (forget <= math.log(8)).all())  # log U(1, T_max - 1)
    assert torch.equal(inputs, -forget) and chrono.lstm.bias_hh_l0.detach()[:24].abs().max() == 0


# ---- clearlstm train with the variant flags ---------------------------------------------


def _wave(folder: Path) -> Path:
    csv = folder / "wave.csv"
    rows = "\n".join(f"{math.sin(t / 4):.4f}" for t in range(80))
    csv.write_text(f"y\n{rows}\n")
    return csv


SMALL = ["--epochs", "2", "--hidden-size", "4", "--window", "8", "--seed", "0"]
TRAINED = {"peephole": True, "cell_clip": 3.0, "forget_bias": 1.0}


@pytest.fixture(scope="module")
def peephole_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("variant")
    out = folder / "model"
    flags = ["--peephole", "--cell-clip", "3", "--forget-bias", "1"]
    argv = ["train", "--csv", str(_wave(folder)), *SMALL, "--ensemble", "1", *flags]
    assert main([*argv, "--out", str(out)]) == 0
    return out


def test_train_saves_the_variant_and_prints_it_with_the_choices(peephole_model, capsys):
    from clearlstm.tasks.forecasting import load_forecaster

    document = json.loads((peephole_model / "settings.json").read_text())
    assert document["model"]["lstm"] == full(TRAINED)
    chosen = "LSTM with peepholes, cell clip 3, forget bias 1 (as asked)"
    assert chosen in document["result"]["choices"]
    model, _, _ = load_forecaster(peephole_model)
    assert model.lstm.variant_config() == full(TRAINED)
    assert model.lstm.weight_peephole_l0.shape == (3, 4)
    # A weights file without the peepholes does not belong with these settings.
    plain = {k: v for k, v in model.state_dict().items() if "peephole" not in k}
    broken = peephole_model.parent / "broken"
    shutil.copytree(peephole_model, broken)
    (broken / "model.safetensors").write_bytes(checkpoint.encode_weights(plain))
    with pytest.raises(CheckpointError, match=r"missing \['lstm\.weight_peephole_l0'\]"):
        S.read_settings(broken)


def test_a_variant_model_forecasts_and_reports(peephole_model, tmp_path, capsys):
    result = subprocess.run(
        [sys.executable, "-m", "clearlstm.cli", "forecast", "--model", str(peephole_model),
         "--csv", str(peephole_model.parent / "wave.csv"), "--steps", "5", "--out",
         str(tmp_path / "f.csv")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len((tmp_path / "f.csv").read_text().splitlines()) == 6
    html = tmp_path / "r.html"
    assert main(["report", "--model", str(peephole_model), "--out", str(html)]) == 0
    assert html.stat().st_size > 10_000
    assert main(["explain", "--model", str(peephole_model), "--sequence", "0,0.5,1"]) == 0
    assert "half-life" in capsys.readouterr().out


def test_a_text_model_trains_with_chrono_init_layer_norm_and_dropout(tmp_path, capsys):
    from clearlstm.tasks.text import load_char_model

    text = tmp_path / "words.txt"
    text.write_text("to be or not to be that is the question\n" * 30)
    out = tmp_path / "lm"
    flags = ["--init", "chrono", "--layer-norm", "--coupled-input-forget", "--zoneout-h", "0.1"]
    flags += ["--recurrent-dropout", "0.2", "--input-dropout", "0.1"]
    argv = ["train", "--text", str(text), "--epochs", "1", "--hidden-size", "8"]
    assert main([*argv, "--window", "20", *flags, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Chosen: LSTM with coupled input and forget gates, layer norm" in printed
    assert "chrono init (time scales up to 20 steps)" in printed
    want = full({"init": "chrono", "chrono_max_steps": 20, "layer_norm": True})
    want |= {"coupled_input_forget": True, "zoneout_h": 0.1}
    want |= {"recurrent_dropout": 0.2, "input_dropout": 0.1}
    model, settings = load_char_model(out)
    assert settings.model.lstm.kwargs() == want and model.lstm.variant_config() == want
    assert main(["generate", "--model", str(out), "--prompt", "to", "--length", "20"]) == 0
    assert main(["explain", "--model", str(out), "--text", "to be"]) == 0


@pytest.mark.parametrize(
    ("flags", "code", "message"),
    [
        (["--zoneout-h", "1.5"], 1, "--zoneout-h must be a number of at least 0 and less than 1"),
        (["--recurrent-dropout", "-0.1"], 1, "--recurrent-dropout must be a number of at least"),
        (["--cell-clip", "0"], 1, "--cell-clip must be a finite number greater than 0"),
        (["--forget-bias", "500"], 1, "--forget-bias must be a finite number from -100 to 100"),
        (["--chrono-max-steps", "2"], 1, "--chrono-max-steps must be an integer from 3 to"),
        (["--init", "xavier"], 2, "argument --init: invalid choice: 'xavier'"),
        (["--zoneout-c", "abc"], 2, "argument --zoneout-c: expected a number; got 'abc'"),
        (["--init", "chrono", "--forget-bias", "1"], 1, "--init chrono sets the forget gates'"),
        (["--chrono-max-steps", "9"], 1, "--chrono-max-steps applies only with --init chrono"),
        (["--layer-norm"], 1, "--ensemble 9, 9 by default) into one; add --ensemble 1"),
        (["--init", "chrono", "--window", "2"], 1, "defaults to the window (2 steps here)"),
    ],
)
def test_bad_variant_flags_are_clear_errors(tmp_path, capsys, flags, code, message):
    out = tmp_path / "m"
    argv = ["train", "--csv", str(_wave(tmp_path)), "--epochs", "1", *flags, "--out", str(out)]
    if code == 2:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
    else:
        assert main(argv) == 1
    assert message in " ".join(capsys.readouterr().err.split())
    assert not (out / "model.safetensors").exists()


def test_train_help_lists_the_variant_flags():
    result = subprocess.run(
        [sys.executable, "-m", "clearlstm.cli", "train", "--help"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    for flag in ("--peephole", "--coupled-input-forget", "--cell-clip", "--layer-norm",
                 "--zoneout-h", "--zoneout-c", "--recurrent-dropout", "--input-dropout",
                 "--forget-bias", "--init", "--chrono-max-steps"):  # fmt: skip
        assert re.search(rf"\s{flag}\b", result.stdout), flag


# ---- what `report --model` computes of a variant model ----------------------------------


@pytest.mark.parametrize("config", VARIANTS.values(), ids=VARIANTS.keys())
def test_the_forget_gate_attribution_reads_the_variants_own_pre_activation(config):
    from clearlstm.analysis.attribution import forget_gate_pre_activation

    torch.manual_seed(0)
    lstm = clearlstm.LSTM(3, 5, num_layers=2, batch_first=True, dtype=torch.float64, **config)
    lstm.eval()
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    with torch.no_grad():
        _, _, trace = lstm(x, trace=True)
    for layer, step, unit in ((0, 0, 1), (0, 4, 3), (1, 5, 0)):
        got = forget_gate_pre_activation(lstm, x, step, unit, layer)
        want = trace[layer, 0].pre_activation[step, :, 1, unit]  # gate f
        torch.testing.assert_close(got.detach(), want, rtol=1e-12, atol=1e-12)
    inputs = x.clone().requires_grad_()
    forget_gate_pre_activation(lstm, inputs, 4, 3).sum().backward()
    assert inputs.grad is not None and torch.isfinite(inputs.grad).all()
    assert inputs.grad[:, 5].abs().max() == 0  # step 4 has not read step 5
