"""A model's weights and settings are written as one unit, one training run at a time, and a
finished model is replaced only with --overwrite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from folder_tools import file_hash, one_line_error, run_cli
from safetensors.torch import load

from clearlstm import files
from clearlstm.cli.main import main
from clearlstm.train import checkpoint
from clearlstm.train.lock import training_lock

TINY = ["--dataset", "nile", "--window", "8", "--hidden-size", "4", "--epochs", "2"]


def pair(folder: Path) -> tuple[bytes, bytes]:
    return (folder / "model.safetensors").read_bytes(), (folder / "settings.json").read_bytes()


def test_the_pair_is_swapped_in_and_other_files_are_kept(tmp_path):
    folder = tmp_path / "m"
    files.replace_files_together(folder, {"model.safetensors": b"w1", "settings.json": b"s1"})
    (folder / "notes.txt").write_text("mine")
    (folder / "plots").mkdir()
    (folder / "plots" / "a.png").write_bytes(b"png")
    files.replace_files_together(folder, {"model.safetensors": b"w2", "settings.json": b"s2"})
    assert pair(folder) == (b"w2", b"s2")
    assert (folder / "notes.txt").read_text() == "mine"
    assert (folder / "plots" / "a.png").read_bytes() == b"png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no swap folder left


def test_a_failure_before_the_swap_keeps_the_old_pair(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    files.replace_files_together(folder, {"model.safetensors": b"w1", "settings.json": b"s1"})

    def full(fresh, target, new):
        (fresh / "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(files, "_fill", full)
    with pytest.raises(OSError, match="disk full"):
        files.replace_files_together(folder, {"model.safetensors": b"w2", "settings.json": b"s2"})
    assert pair(folder) == (b"w1", b"s1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


KILL_AFTER_SWAP = """
import os, sys
from clearlstm import files
real = files._exchange
def exchange_then_die(a, b):
    assert real(a, b)
    os._exit(9)  # as a kill -9 between the swap and the clean-up
files._exchange = exchange_then_die
files.replace_files_together(sys.argv[1], {"model.safetensors": b"w2", "settings.json": b"s2"})
"""


def test_a_kill_right_after_the_swap_leaves_the_new_pair(tmp_path):
    folder = tmp_path / "m"
    files.replace_files_together(folder, {"model.safetensors": b"w1", "settings.json": b"s1"})
    code = subprocess.run([sys.executable, "-c", KILL_AFTER_SWAP, str(folder)], timeout=60)
    assert code.returncode == 9
    assert pair(folder) == (b"w2", b"s2")
    stale = [p for p in tmp_path.iterdir() if p.name != "m"]
    assert len(stale) == 1 and stale[0].name.startswith(".m.swap-")
    assert (stale[0] / "model.safetensors").read_bytes() == b"w1"  # the old folder
    with training_lock(folder):  # the next run clears what the killed one left
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_a_swap_keeps_the_working_folder_usable(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    files.replace_files_together(folder, {"model.safetensors": b"w1", "settings.json": b"s1"})
    monkeypatch.chdir(folder)
    checkpoint.save_model(Path("."), b"w2", {"kind": "forecaster"})
    assert Path("model.safetensors").read_bytes() == b"w2"
    assert Path(os.getcwd()) == folder.resolve()


def test_a_second_run_into_the_same_folder_fails_at_once(tmp_path):
    out = tmp_path / "m"
    with training_lock(out):
        started = time.monotonic()
        result = run_cli("train", *TINY, "--out", str(out))
        took = time.monotonic() - started
    assert result.returncode == 1
    one_line_error(result.stderr, f"--out {out}", f"(process {os.getpid()})", "another")
    assert not (out / "model.safetensors").exists() and took < 120


def test_a_finished_model_is_replaced_only_with_overwrite(tmp_path, capsys):
    out = str(tmp_path / "m")
    assert main(["train", *TINY, "--out", out]) == 0
    before = file_hash(tmp_path / "m" / "model.safetensors")
    capsys.readouterr()
    assert main(["train", *TINY, "--seed", "1", "--out", out]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"--out {out} already holds a trained model; add --overwrite" in err
    assert file_hash(tmp_path / "m" / "model.safetensors") == before
    assert main(["train", *TINY, "--seed", "1", "--out", out, "--overwrite"]) == 0
    assert file_hash(tmp_path / "m" / "model.safetensors") != before


def test_the_same_weights_make_the_same_bytes():
    """safetensors writes its metadata from a hash map, in another order call to call: the
    same weights gave files of other bytes (so another weights_sha256, and a --resume that
    ended with identical weights looked different)."""
    weights = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(2)}
    state = {"training_state": '{"epoch": 3}', "note": "é"}
    for metadata in (None, state):
        files = {checkpoint.encode_weights(weights, metadata) for _ in range(20)}
        assert len(files) == 1
        data = files.pop()
        assert torch.equal(load(data)["b"], weights["b"])
        length = int.from_bytes(data[:8], "little")
        found = json.loads(data[8 : 8 + length])["__metadata__"]
        assert list(found) == sorted(found) and found["format"] == "clearlstm"
