"""kill -9 at random moments of `clearlstm train --overwrite`: the folder always loads, as the
old model or the new one, never a mixture of the two; and ``--resume`` in a folder a kill
left ends bit-identical to the run uninterrupted."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from clearlstm.tasks.forecasting import load_forecaster
from clearlstm.tasks.settings import read_settings

TRIES = 20

# One warm process forks every run (a fresh interpreter would spend seconds importing torch),
# kills it at a moment spread over a whole run's time and keeps a copy of what it left.
HELPER = r"""
import hashlib, json, os, random, shutil, signal, sys, time
from pathlib import Path

import torch
import statsmodels.tsa.holtwinters  # noqa: F401
import clearlstm.cli.commands, clearlstm.tasks.forecasting, clearlstm.cli.train_report  # noqa
from clearlstm.cli.main import main

out, ref, copies, tries = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
ARGS = ["train", "--dataset", "nile", "--window", "8", "--hidden-size", "4", "--epochs", "3",
        "--batch-size", "16"]


def start(seed, folder):
    pid = os.fork()
    if pid == 0:
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 1), os.dup2(quiet, 2)
        os._exit(main([*ARGS, "--seed", str(seed), "--out", str(folder), "--overwrite"]))
    return pid


def digest(folder):
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def whole(seed, folder):
    began = time.monotonic()
    _, status = os.waitpid(start(seed, folder), 0)
    assert status == 0, status
    return time.monotonic() - began


whole(0, out)
took = whole(1, ref)
hashes = [digest(out), digest(ref)]
rng, log = random.Random(1234), []
for i in range(tries):
    now = hashes.index(digest(out))
    pid = start(1 - now, out)
    moment = 1.2 * took * (i + rng.random()) / tries  # over the run and a little past its end
    time.sleep(moment)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    shutil.copytree(out, copies / str(i), symlinks=True)
    log.append({"moment": moment, "old": hashes[now], "new": hashes[1 - now],
                "finished": os.WIFEXITED(status)})
# --resume in three of the folders a kill left: the run the training state belongs to ends
# with the same weights, bit for bit, as that run uninterrupted.
from clearlstm.train.checkpoint import load_training_state

resumed = []
for i in (0, tries // 2, tries - 1):
    folder = shutil.copytree(copies / str(i), copies / f"resumed-{i}", symlinks=True)
    seed = load_training_state(folder)[1]["fingerprint"]["train"]["seed"]
    pid = os.fork()
    if pid == 0:
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 1), os.dup2(quiet, 2)
        os._exit(main([*ARGS, "--seed", str(seed), "--out", str(folder), "--resume"]))
    _, status = os.waitpid(pid, 0)
    same = digest(folder) == hashes[seed]  # the file: weights, header and metadata
    resumed.append({"try": i, "seed": seed, "status": status, "same": same})
print(json.dumps({"seconds per run": took, "tries": log, "resumed": resumed}))
"""


@pytest.mark.slow
def test_a_kill_at_any_moment_leaves_the_old_or_the_new_model(tmp_path: Path):
    copies = tmp_path / "copies"
    copies.mkdir()
    args = [str(tmp_path / "m"), str(tmp_path / "ref"), str(copies), str(TRIES)]
    done = subprocess.run(
        [sys.executable, "-c", HELPER, *args], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    loadable, outcomes = 0, []
    for i, run in enumerate(summary["tries"]):
        folder = copies / str(i)
        found = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
        assert found in (run["old"], run["new"]), f"try {i}: weights of neither model"
        settings, _ = read_settings(folder)
        assert settings.weights_sha256 == found, f"try {i}: settings of the other model"
        model, _, _ = load_forecaster(folder)
        loadable += model.hidden_size == 4
        outcomes.append("new" if found == run["new"] else "old")
    print(
        f"\n{len(summary['tries'])} kills, {loadable} always loadable "
        f"({outcomes.count('old')} old, {outcomes.count('new')} new; "
        f"{summary['seconds per run']:.2f} s per run)"
    )
    assert loadable == TRIES
    resumed = summary["resumed"]
    same = sum(r["same"] for r in resumed)
    print(f"--resume after {len(resumed)} of the kills: {same} bit-identical")
    assert all(r["status"] == 0 and r["same"] for r in resumed), resumed
