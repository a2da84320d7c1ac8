"""Run one training experiment as a subprocess: the right script for the backend, the profile and data dir in its
environment, output streamed to the terminal and a log file, the summary block parsed at the end.

Backends: `mlx` runs train_mlx.py (MLX picks Metal, then CUDA, then CPU); `cuda`, `mps`, `cpu` run train_torch.py
on that device; `auto` asks check-hardware.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from common.summary import parse_summary

BACKENDS = ("auto", "mlx", "cuda", "mps", "cpu")
OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"


def resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        from common.hardware import probe

        return probe()["recommended"]["backend"]
    return backend


def script_for(backend: str, root: Path | None = None) -> Path:
    """The agent-editable script: from `root` (the research repo, default the current directory) if it has one,
    else the installed copy beside this package."""
    name = "train_mlx.py" if backend == "mlx" else "train_torch.py"
    for base in (root or Path.cwd(), Path(__file__).resolve().parent.parent):
        if (base / name).exists():
            return base / name
    raise FileNotFoundError(f"{name} not found in {root or Path.cwd()}: run from the autoresearch checkout")


def child_env(backend: str, profile: str, data_dir: Path | None = None) -> dict:
    env = dict(os.environ)
    env["AUTORESEARCH_PROFILE"] = profile
    env["AUTORESEARCH_BACKEND"] = backend
    env["PYTHONUNBUFFERED"] = "1"
    if data_dir:
        env["AUTORESEARCH_DATA_DIR"] = str(data_dir)
    # MLX's Linux CPU wheel ships reference BLAS (~3 GFLOP/s); Debian's OpenBLAS gives ~30x with identical results.
    if backend == "mlx" and sys.platform == "linux" and os.path.exists(OPENBLAS) and "LD_PRELOAD" not in env:
        env["LD_PRELOAD"] = OPENBLAS
    return env


def run_experiment(
    backend: str,
    profile: str,
    log_path: Path,
    data_dir: Path | None = None,
    timeout: float | None = None,
    root: Path | None = None,
) -> dict:
    """Run the script, tee its output to log_path, return the parsed summary (plus exit status). The log is
    written as the run goes, so nothing is lost if the run or the harness is killed."""
    script = script_for(backend, root)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(script)],
            cwd=script.parent,
            env=child_env(backend, profile, data_dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                log.write(line)
                log.flush()
                if timeout and time.time() - t0 > timeout:
                    raise TimeoutError(f"run exceeded {timeout:.0f}s")
            rc = proc.wait()
        except BaseException:
            # Ctrl-C or timeout: stop the whole process group, keep the log.
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            raise
    text = log_path.read_text()
    try:
        summary = parse_summary(text)
    except ValueError:
        summary = {}
    summary["exit_code"] = rc
    summary["log"] = str(log_path)
    return summary
