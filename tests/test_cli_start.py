"""The command starts fast (help, version and argument errors import neither torch nor numba),
and `clearlstm diagnose` reports what a bug report needs."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HEAVY = ("torch", "numba", "matplotlib", "statsmodels")


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["--version"], ["train", "--help"], ["train", "--epochs", "x"], ["nope"]],
)
def test_help_version_and_argument_errors_import_nothing_heavy(argv):
    result = run_python(
        f"""
        import sys
        from clearlstm.cli.main import main
        try:
            main({argv!r})
        except SystemExit as exit:
            code = exit.code
        else:
            code = "returned"
        heavy = [m for m in {HEAVY!r} if m in sys.modules]
        print(repr((code, heavy)))
        """
    )
    assert result.returncode == 0, result.stderr
    code, heavy = eval(result.stdout.strip().splitlines()[-1])
    assert heavy == [], f"{argv} imported {heavy}"
    assert code == (0 if argv[-1] in ("--help", "--version") else 2)


def test_every_subcommand_help_imports_nothing_heavy():
    result = run_python(
        f"""
        import sys
        from clearlstm.cli.main import build_parser, main
        names = build_parser()._subparsers._group_actions[0].choices
        for name in names:
            try:
                main([name, "--help"])
            except SystemExit:
                pass
        print(sorted(names), [m for m in {HEAVY!r} if m in sys.modules])
        """
    )
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert "'diagnose'" in last and last.endswith("[]"), last


def test_package_is_lazy_but_exports_everything():
    result = run_python(
        """
        import sys
        import clearlstm
        print(clearlstm.__version__, "torch" in sys.modules)
        from clearlstm import LSTM, LSTMCell, Trace, UnitMemory, lstm_layer, cell_step
        from clearlstm import *  # noqa: F403
        assert all(getattr(clearlstm, name) is not None for name in clearlstm.__all__)
        assert set(clearlstm.__all__) <= set(dir(clearlstm))
        assert clearlstm.LSTM is LSTM and LSTM.__module__ == "clearlstm.nn.lstm"
        assert clearlstm.nn.lstm.LSTM is LSTM
        try:
            clearlstm.no_such_name
        except AttributeError as error:
            assert "no_such_name" in str(error)
        else:
            raise AssertionError("no AttributeError")
        print("ok", "torch" in sys.modules)
        """
    )
    assert result.returncode == 0, result.stderr
    import clearlstm

    assert result.stdout.split() == [clearlstm.__version__, "False", "ok", "True"]


@pytest.mark.parametrize("module", ["clearlstm", "clearlstm.cli"])
def test_python_m_version(module):
    result = subprocess.run(
        [sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clearlstm 0.1.0"


def test_diagnose_prints_plain_text_when_piped():
    result = subprocess.run(
        [sys.executable, "-m", "clearlstm", "diagnose"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    for title in ("[versions]", "[cpu_features]", "[threads]", "[numba cache]"):
        assert title in result.stdout
    assert "┌" not in result.stdout  # no table borders in a pasted report
    import torch

    assert torch.__version__ in result.stdout


def test_diagnose_json_matches_this_install(tmp_path):
    import numba
    import numpy
    import torch

    from clearlstm.cli import diagnose

    # A cache holding one fresh index of a real kernel and one from an older line number.
    fused = Path(diagnose.__file__).resolve().parents[1] / "fused"
    name, line = diagnose.cached_kernels(fused / "kernels.py")[0]
    folder = tmp_path / f"fused_{hashlib.sha1(str(fused).encode()).hexdigest()}"
    folder.mkdir()
    py = f"py{sys.version_info[0]}{sys.version_info[1]}"
    stamp = hashlib.sha256((fused / "kernels.py").read_bytes()).digest()
    with (folder / f"kernels.{name}-{line}.{py}.nbi").open("wb") as f:
        pickle.dump(numba.__version__, f)
        f.write(pickle.dumps((stamp, {"sig-a": "a.1.nbc", "sig-b": "a.2.nbc"})))
    (folder / f"kernels.{name}-{line + 1000}.{py}.nbi").write_bytes(b"old")

    result = subprocess.run(
        [sys.executable, "-m", "clearlstm", "diagnose", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    versions = info["versions"]
    assert versions["torch"]["version"] == torch.__version__
    assert versions["numba"]["version"] == numba.__version__
    assert versions["numpy"]["version"] == numpy.__version__
    assert Path(versions["torch"]["path"]) == Path(torch.__file__).resolve().parent
    assert versions["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert info["threads"]["torch"] == 1  # OMP_NUM_THREADS=1 reached torch
    assert info["environment"]["OMP_NUM_THREADS"] == "1"
    assert info["backends"]["mkldnn"] == torch.backends.mkldnn.is_available()
    assert info["cpu_features"]["torch_cpu_capability"] == (torch.backends.cpu.get_cpu_capability())
    if sys.platform == "linux":
        assert isinstance(info["cpu_features"]["avx2"], bool)

    cache = info["numba_cache"]
    assert cache["directory"] == str(folder) and cache["reason"] == "NUMBA_CACHE_DIR"
    kernels = {(k["module"], k["function"]): k for k in cache["kernels"]}
    assert ("kernels_small", "forward_small") in kernels
    assert kernels["kernels", name]["fresh"] is True
    assert kernels["kernels", name]["signatures"] == 2
    others = [k for key, k in kernels.items() if key != ("kernels", name)]
    assert all(k["index"] is None and k["fresh"] is False for k in others)
    assert cache["stale_indexes"] == [f"kernels.{name}-{line + 1000}.{py}.nbi"]


def test_gather_shows_the_threading_layer_once_started():
    import numba
    import numpy as np

    from clearlstm.cli import diagnose

    @numba.njit(parallel=True)
    def total(a):
        s = 0.0
        for i in numba.prange(a.size):
            s += a[i]
        return s

    assert total(np.ones(64)) == 64.0
    threads = diagnose.gather()["threads"]
    assert threads["numba_threading_layer"] == numba.threading_layer()
    assert threads["numba"] == numba.config.NUMBA_NUM_THREADS
