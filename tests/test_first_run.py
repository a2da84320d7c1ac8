"""A new user's first hour: every mistake they can make ends in a line or two from the harness with the command that
fixes it, a non-zero exit and no Python traceback; nothing half-made is left behind; check-hardware recommends what
it measured; the README's command list matches `--help`.

Hermetic: AUTORESEARCH_HOME is the test's tmp dir (conftest), "offline" is a mirror on a closed local port, and the
CPU timing check-hardware does is faked. Runs in under a minute on 2 cores.

.venv/bin/pytest tests/test_first_run.py
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from common import hardware
from common.cli import _HideTracebacks, explain_failure, main
from tests.conftest import make_docs, write_parquet

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """The real command line, as a new user runs it (the environment is the test's: AUTORESEARCH_HOME in tmp)."""
    return subprocess.run(
        [sys.executable, "-m", "common.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def user_error(out, *needles: str, status: int = 1, lines: int = 2) -> str:
    """A clean user error: the status, every needle, no traceback, and the message in `lines` lines or fewer."""
    text = out.stdout + out.stderr
    assert out.returncode == status, text
    assert "Traceback" not in text, text
    for needle in needles:
        assert needle in text, f"{needle!r} not in:\n{text}"
    error = text[text.index("Error:") :] if "Error:" in text else text
    assert len(error.strip().splitlines()) <= lines, text
    return text


def home() -> Path:
    return Path(os.environ["AUTORESEARCH_HOME"])


def folders_left() -> list[str]:
    return sorted(p.name for p in home().iterdir() if p.is_dir()) if home().exists() else []


def closed_port() -> int:
    with (
        socket.socket() as s
    ):  # bound, then closed: nothing listens there, so a connection is refused at once
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def measured(monkeypatch):
    """check-hardware's CPU timing, faked and cached in this test's home, so a run asking for it takes no time."""

    def fake(mlx: float, torch: float) -> None:
        import mlx.core as mx
        import torch as t

        monkeypatch.setattr(hardware, "_time_matmuls", lambda fw, preload: mlx if fw == "mlx" else torch)
        hardware.cpu_speed(hardware._system(), t.__version__, f"mlx {mx.__version__}: x")

    pytest.importorskip("mlx.core")
    pytest.importorskip("torch")
    return fake


# -- train: data, backend, profile -----------------------------------------------------------------------------------


def test_version_and_a_mistyped_command(tmp_path):
    out = cli("--version", cwd=tmp_path)
    assert out.returncode == 0 and re.fullmatch(r"autoresearch \S+\n", out.stdout)
    user_error(cli("trian", cwd=tmp_path), "Did you mean 'train'?", status=2, lines=1)


def test_train_before_prepare(tmp_path):
    user_error(
        cli("train", "--backend", "cpu", "--profile", "ci", cwd=tmp_path),
        "autoresearch prepare --dataset demo",
    )
    assert not (tmp_path / "run.log").exists()  # nothing was started


@pytest.mark.parametrize("kind", ["missing", "file", "empty", "unfinished"])
def test_train_with_a_wrong_data_dir(tmp_path, kind):
    d = tmp_path / "data"
    if kind == "file":
        d.write_text("x")
    elif kind == "empty":
        d.mkdir()
    elif kind == "unfinished":
        d.mkdir()
        (d / "manifest.json").write_text(json.dumps({"format": 1, "dataset": "demo"}))
    out = cli("train", "--backend", "cpu", "--profile", "ci", cwd=tmp_path, AUTORESEARCH_DATA_DIR=str(d))
    expect = {
        "missing": f"$AUTORESEARCH_DATA_DIR={d} does not exist",
        "file": "is a file, not a data directory",
        "empty": "is not a prepared data directory (no manifest.json)",
        "unfinished": "rerun it with the same --dataset to resume",
    }[kind]
    user_error(out, expect, "autoresearch prepare")


def test_train_after_the_prepared_data_was_deleted(tmp_path):
    home().mkdir(parents=True)
    (home() / "current").write_text(str(home() / "demo") + "\n")
    user_error(
        cli("train", "--backend", "cpu", "--profile", "ci", cwd=tmp_path),
        "does not exist",
        "prepare --dataset demo",
    )


def test_train_backend_that_cannot_run_here(tmp_path, measured):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    measured(mlx=100.0, torch=100.0)
    text = user_error(
        cli("train", "--backend", "cuda", "--profile", "ci", cwd=tmp_path), "--backend cuda cannot run here"
    )
    assert "check-hardware recommends `--backend mlx --profile cpu`" in text
    assert "AUTORESEARCH_BACKEND" not in text  # the user never set it
    if sys.platform != "darwin":
        user_error(
            cli("train", "--backend", "mps", "--profile", "ci", cwd=tmp_path),
            "MPS is the GPU of Apple Silicon",
        )


def test_train_option_typos(tmp_path):
    user_error(
        cli("train", "--backend", "mxl", cwd=tmp_path), "Invalid value for '--backend'", status=2, lines=1
    )
    user_error(
        cli("train", "--profile", "cpuu", cwd=tmp_path), "did you mean `--profile cpu`?", status=2, lines=1
    )
    user_error(cli("train", "--profile", "ci@5x", cwd=tmp_path), "unknown override @5x", status=2, lines=1)
    user_error(cli("train", "--steps", "0", cwd=tmp_path), "--steps", status=2, lines=1)
    user_error(cli("train", "--profil", "ci", cwd=tmp_path), "Did you mean '--profile'?", status=2, lines=1)
    user_error(
        cli("train", "--backend", "cpu", cwd=tmp_path, AUTORESEARCH_PROFILE="laptp"), "$AUTORESEARCH_PROFILE"
    )


def test_train_log_in_the_way(tmp_path, prepared):
    (tmp_path / "logs").write_text("a file where the log's folder should be")
    out = cli("train", "--backend", "cpu", "--profile", "ci", "--log", "logs/run.log", cwd=tmp_path,
              AUTORESEARCH_DATA_DIR=str(prepared))  # fmt: skip
    user_error(out, "logs", "choose another path")


def test_an_error_inside_the_run_is_told_from_the_log(tmp_path, prepared):
    """The twin itself fails on corrupt data: the user sees the harness's line and the log path, not the traceback,
    which stays in the log."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    shard = sorted((data / "tokens").glob("train_*.bin"))[0]
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 0xFF
    shard.write_bytes(bytes(raw))
    out = cli("train", "--backend", "cpu", "--profile", "ci", cwd=tmp_path, AUTORESEARCH_DATA_DIR=str(data))
    user_error(out, f"{shard.name} is corrupt", "autoresearch prepare", "(the run's log: run.log)")
    assert "Traceback" in (tmp_path / "run.log").read_text()


def test_ctrl_c_during_train_says_it_starts_over(tmp_path, prepared, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setenv("AUTORESEARCH_DATA_DIR", str(prepared))
    monkeypatch.setattr("common.runner.run_experiment", interrupted)
    r = CliRunner().invoke(main, ["train", "--backend", "cpu", "--profile", "ci"])
    assert r.exit_code == 130 and "does not resume" in r.output and "starts the experiment over" in r.output
    assert "to resume" not in r.output.replace("does not resume", "")


def test_ctrl_c_during_prepare_says_it_resumes(monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("common.prepare.prepare", interrupted)
    r = CliRunner().invoke(main, ["prepare", "--dataset", "demo"])
    assert r.exit_code == 130 and "rerun the same command to resume" in r.output


def test_explain_failure_from_the_log():
    common = ROOT / "common" / "data.py"
    user = (
        "step 1\nTraceback (most recent call last):\n"
        f'  File "{ROOT / "train_mlx.py"}", line 3, in <module>\n    main()\n'
        f'  File "{common}", line 89, in _verify\n    raise ShardError(\n'
        "common.shards.ShardError: /d/x.bin is corrupt: delete it and rerun `autoresearch prepare`\n"
    )
    assert explain_failure(user, 1, "run.log") == (
        "/d/x.bin is corrupt: delete it and rerun `autoresearch prepare`\n(the run's log: run.log)"
    )
    bug = (
        "Traceback (most recent call last):\n"
        f'  File "{ROOT / "train_mlx.py"}", line 42, in step\n    1 / 0\n'
        "ZeroDivisionError: division by zero\n"
    )
    msg = explain_failure(bug, 1, "run.log")
    assert (
        "ZeroDivisionError: division by zero at train_mlx.py:42" in msg and "traceback is in run.log" in msg
    )
    # A ValueError raised outside the harness (numpy, the agent's script) is a bug, not a user error.
    numpy_bug = bug.replace(
        "ZeroDivisionError: division by zero", "ValueError: shapes (2,3) and (4,5) not aligned"
    )
    assert "crashed" in explain_failure(numpy_bug, 1, "run.log")
    missing = "Traceback (most recent call last):\n  File \"x.py\", line 1\nModuleNotFoundError: No module named 'mlx'\n"
    assert "pip install -e ." in explain_failure(missing, 1, "run.log")
    assert "FAIL: loss nan at step 3" in explain_failure("step 2\nFAIL: loss nan at step 3\n", 1, "run.log")
    assert "signal 9" in explain_failure("step 2\n", -9, "run.log")


def test_tracebacks_are_hidden_from_the_terminal(capsys):
    hide = _HideTracebacks()
    lines = [
        "step 1\n", "Traceback (most recent call last):\n", '  File "a.py", line 1, in f\n', "    g()\n",
        "    ^^^\n", "KeyError: 'x'\n", "\n", "During handling of the above exception, another exception occurred:\n",
        "\n", "Traceback (most recent call last):\n", '  File "b.py", line 2\n', "RuntimeError: boom\n", "after\n",
    ]  # fmt: skip
    for line in lines:
        hide(line)
    out = capsys.readouterr().out
    assert out == "step 1\nafter\n"


# -- prepare ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expect",
    [
        ("tinystory", "did you mean `--dataset tinystories`?"),
        ("climbmx", "did you mean `--dataset climbmix`?"),
        ("Demo", "did you mean `--dataset demo`?"),
        ("wikipedia", "no such name or path. Choose climbmix, tinystories, demo, or a directory"),
        ("./my-corpus", "dataset path ./my-corpus does not exist"),
    ],
)
def test_prepare_unknown_dataset_leaves_nothing(tmp_path, name, expect):
    user_error(cli("prepare", "--dataset", name, cwd=tmp_path), expect)
    assert folders_left() == []


def test_prepare_corpus_mistakes_leave_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    user_error(cli("prepare", "--dataset", "empty", cwd=tmp_path), "no .parquet, .jsonl or .txt files under")
    (tmp_path / "notes.txt").write_text("hello")
    user_error(
        cli("prepare", "--dataset", "notes.txt", cwd=tmp_path), "is a file: pass the directory that holds it"
    )
    write_parquet(tmp_path / "tiny" / "a.parquet", make_docs(3, 0, long_every=100))
    user_error(cli("prepare", "--dataset", "tiny", cwd=tmp_path), "characters of training text")
    user_error(cli("prepare", "--dataset", "demo", "--data-dir", "notes.txt", cwd=tmp_path), "is a file")
    user_error(cli("prepare", "--vocab-size", "100", cwd=tmp_path), "--vocab-size", status=2, lines=1)
    assert folders_left() == []


def test_prepare_offline(tmp_path):
    """No network (the mirror is a closed port): tinystories fails in seconds and suggests the demo data; without
    --dataset, prepare picks the demo data by itself."""
    offline = {"AUTORESEARCH_HF_BASE": f"http://127.0.0.1:{closed_port()}"}
    t0 = time.time()
    user_error(
        cli("prepare", "--dataset", "tinystories", cwd=tmp_path, **offline),
        "`autoresearch prepare --dataset demo`",
    )
    assert time.time() - t0 < 20 and folders_left() == []  # no retries for half a minute, no empty folders
    out = cli("prepare", cwd=tmp_path, **offline)
    assert out.returncode == 0 and "using demo (offline" in out.stderr, out.stderr
    assert folders_left() == ["demo"]


def test_prepare_py_usage_line(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "prepare.py"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("Usage: python prepare.py [OPTIONS]")


# -- the research commands in the wrong place ------------------------------------------------------------------------


def test_results_and_run_outside_a_git_repository(tmp_path):
    user_error(cli("results", cwd=tmp_path), "pass --tag")
    user_error(
        cli("results", "--tag", "nope", cwd=tmp_path), "no experiments recorded", "autoresearch run --tag"
    )
    user_error(cli("run", "--backend", "cpu", "--profile", "ci", cwd=tmp_path))


# -- hardware: the OpenBLAS warning, the measured pick, doctor -------------------------------------------------------


def test_openblas_preload_and_the_warning_once(tmp_path, monkeypatch, capsys):
    from common.runner import child_env

    monkeypatch.setattr(hardware, "mlx_cpu_build", lambda: True)
    monkeypatch.setattr(hardware, "_warned", set())
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    lib = tmp_path / "libblas.so.3"
    lib.write_bytes(b"")
    monkeypatch.setenv(hardware.OPENBLAS_ENV, str(lib))
    assert child_env("mlx", "ci")["LD_PRELOAD"] == str(lib)
    assert "LD_PRELOAD" not in child_env("cpu", "ci")
    monkeypatch.setenv("LD_PRELOAD", "/x/libjemalloc.so")
    assert child_env("mlx", "ci")["LD_PRELOAD"] == f"{lib} /x/libjemalloc.so"  # first, keeping the user's
    assert capsys.readouterr().err == ""
    monkeypatch.setenv(hardware.OPENBLAS_ENV, str(tmp_path / "missing.so"))
    monkeypatch.delenv("LD_PRELOAD")
    for _ in range(3):  # three runs in one command (the research loop): one warning
        assert "LD_PRELOAD" not in child_env("mlx", "ci")
    err = capsys.readouterr().err
    assert err.count("reference BLAS") == 1 and "sudo apt-get install libopenblas0-pthread" in err


def _cpu_box(speed: dict | None) -> dict:
    on = {"available": True, "device": "cpu", "detail": "test"}
    off = {"available": False, "device": None, "detail": "test"}
    return {
        "platform": "Linux", "machine": "x86_64", "chip": "Some CPU", "gpus": [], "cpu_speed": speed,
        "backends": {"mlx": {**on, "metal": False, "cuda": False}, "cuda": off, "mps": off, "cpu": on},
    }  # fmt: skip


def test_the_pick_follows_the_measurement():
    slow = {"mlx_gflops": 5.3, "torch_gflops": 97.0, "mlx_blas": "reference"}
    rec = hardware.recommend(_cpu_box(slow))
    assert rec["backend"] == "cpu" and "torch 97 GFLOP/s, MLX 5.3" in rec["reason"]
    assert "libopenblas0-pthread" in rec["reason"]
    even = {"mlx_gflops": 99.0, "torch_gflops": 105.0, "mlx_blas": "openblas"}
    assert hardware.recommend(_cpu_box(even))["backend"] == "mlx"
    assert hardware.recommend(_cpu_box(None))["backend"] == "mlx"  # not measured: the default


def test_cpu_timing_is_cached_per_machine(monkeypatch):
    calls = []
    monkeypatch.setattr(hardware, "_time_matmuls", lambda fw, preload: calls.append(fw) or 10.0)
    info = {"chip": "Some CPU", "cpu_count": 2, "python": "3.11.0"}
    first = hardware.cpu_speed(info, "2.13", "mlx 0.32")
    assert hardware.cpu_speed(info, "2.13", "mlx 0.32") == first and calls == ["mlx", "torch"]
    hardware.cpu_speed(info, "2.14", "mlx 0.32")  # another torch: measured again
    hardware.cpu_speed(info, "2.13", "mlx 0.32")  # and back: still cached
    assert len(calls) == 4 and (home() / hardware.SPEED_FILE).exists()


def test_auto_says_once_why_it_avoided_mlx(monkeypatch, capsys):
    from common.runner import resolve_backend

    monkeypatch.setattr(hardware, "_warned", set())
    monkeypatch.setattr(hardware, "reference_blas", lambda: True)
    monkeypatch.setattr(hardware, "probe", lambda: {"recommended": {"backend": "cpu"}})
    assert resolve_backend("auto") == "cpu" and resolve_backend("auto") == "cpu"
    err = capsys.readouterr().err
    assert err.count("reference BLAS") == 1 and "--backend cpu" in err


def test_real_cpu_timing_is_quick_and_sane(monkeypatch):
    pytest.importorskip("mlx.core")
    pytest.importorskip("torch")
    t0 = time.time()
    mlx, torch = hardware._time_matmuls("mlx", None), hardware._time_matmuls("torch", None)
    assert mlx and mlx > 0 and torch and torch > 0 and time.time() - t0 < 30


def test_doctor_advice(monkeypatch):
    monkeypatch.setattr(hardware, "reference_blas", lambda: True)
    monkeypatch.setattr(hardware, "_free_gb_where_data_goes", lambda: ("/data", 1.5))
    monkeypatch.setattr(hardware, "_installed", lambda dist: False)
    info = _cpu_box(None)
    info["torch_version"] = "2.13.0+cpu"
    info["gpus"] = [{"name": "NVIDIA H100 80GB HBM3", "memory_gb": 79.2}]
    info["backends"]["cuda"]["detail"] = "torch 2.13.0+cpu is a CPU-only build"
    fixes = {a["fix"] for a in hardware.advice(info)}
    assert "sudo apt-get install libopenblas0-pthread" in fixes
    assert "install a CUDA build of torch: https://pytorch.org/get-started/locally/" in fixes
    assert any("bigger disk" in f for f in fixes)
    info["backends"]["cuda"] = {"available": True, "device": "cuda", "detail": "ok"}
    info["gpus"][0]["capability"] = "9.0"
    assert 'pip install -e ".[cuda]"' in {a["fix"] for a in hardware.advice(info)}


def test_doctor_command(tmp_path, measured):
    measured(mlx=100.0, torch=100.0)
    out = cli("doctor", cwd=tmp_path, AUTORESEARCH_OPENBLAS=str(tmp_path / "missing.so"))
    assert out.returncode == 0 and "recommended: --backend" in out.stdout and "Traceback" not in out.stderr
    if hardware.mlx_cpu_build():
        assert "fix: sudo apt-get install libopenblas0-pthread" in out.stdout


# -- README ----------------------------------------------------------------------------------------------------------


def test_readme_command_list_matches_help():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    listed = set(re.findall(r"^autoresearch ([a-z][a-z-]*)", block, re.M))
    assert listed == set(main.commands), f"README lists {sorted(listed)}, --help has {sorted(main.commands)}"
    assert "autoresearch --version" in block and "python prepare.py" in block
    quick = readme.split("## Quick start", 1)[1].split("## ", 1)[0]
    assert quick.index("libopenblas0-pthread") < quick.index("```bash")  # the hint comes before the commands
