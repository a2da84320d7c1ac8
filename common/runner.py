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
import threading
import time
from collections.abc import Callable
from pathlib import Path

from common.profiles import BUDGET_ENV, SEED_ENV, STEPS_ENV
from common.summary import parse_summary

BACKENDS = ("auto", "mlx", "cuda", "mps", "cpu")


def resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        from common.hardware import probe, reference_blas, warn_reference_blas

        chosen = probe()["recommended"]["backend"]
        if chosen == "cpu" and reference_blas():  # auto avoided MLX for its slow BLAS: say why, once
            warn_reference_blas()
        return chosen
    return backend


def script_for(backend: str, root: Path | None = None) -> Path:
    """The agent-editable script: from `root` (the research repo, default the current directory) if it has one,
    else the installed copy beside this package."""
    name = "train_mlx.py" if backend == "mlx" else "train_torch.py"
    for base in (root or Path.cwd(), Path(__file__).resolve().parent.parent):
        if (base / name).exists():
            return base / name
    raise FileNotFoundError(f"{name} not found in {root or Path.cwd()}: run from the autoresearch checkout")


def child_env(
    backend: str, profile: str, data_dir: Path | None = None, seed: int | None = None, root: Path | None = None
) -> dict:
    env = dict(os.environ)
    env["AUTORESEARCH_PROFILE"] = profile
    env["AUTORESEARCH_BACKEND"] = backend
    env["PYTHONUNBUFFERED"] = "1"
    # The profile name carries any budget or step override: stale variables must not rename it again.
    env.pop(BUDGET_ENV, None)
    env.pop(STEPS_ENV, None)
    if seed is not None:
        env[SEED_ENV] = str(seed)
    if data_dir:
        env["AUTORESEARCH_DATA_DIR"] = str(data_dir)
    if root is not None:
        # A script run from outside the checkout (a stored copy of a candidate) still imports common/ and backends/.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    if backend == "mlx":
        preload_openblas(env)
    return env


def preload_openblas(env: dict) -> None:
    """MLX's Linux CPU wheel ships a reference BLAS (~5 GFLOP/s here); Debian's OpenBLAS is ~20x faster with identical
    results, so it goes first in env's LD_PRELOAD. Where it is missing, say so once per command, with the fix."""
    from common.hardware import mlx_cpu_build, openblas_path, warn_reference_blas

    if not mlx_cpu_build():
        return
    path = openblas_path()
    if not os.path.exists(path):
        warn_reference_blas()
        return
    preloads = env.get("LD_PRELOAD", "").split()
    if path not in preloads:
        env["LD_PRELOAD"] = " ".join([path, *preloads])


def _echo(line: str) -> None:
    sys.stdout.write(line)
    sys.stdout.flush()


def run_experiment(
    backend: str,
    profile: str,
    log_path: Path,
    data_dir: Path | None = None,
    timeout: float | None = None,
    root: Path | None = None,
    *,
    script: Path | None = None,
    seed: int | None = None,
    on_line: Callable[[str], None] | None = _echo,
    on_start: Callable[[subprocess.Popen], None] | None = None,
) -> dict:
    """Run the training script as a subprocess in its own process group, write its output to log_path as it comes
    (nothing is lost if the run or the harness is killed) and hand each line to on_line (default: echo it).

    Returns the parsed summary (empty if there is none) plus `exit_code`, `timed_out`, `wall_seconds` and `log`.
    On expiry of `timeout` seconds the whole group is killed; on Ctrl-C too, and the KeyboardInterrupt goes on.
    on_start gets the process as soon as it exists (the loop records its pid, to stop it after a harness crash)."""
    script = Path(script) if script else script_for(backend, root)
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cwd = Path(root) if root else script.parent
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(script)],
            cwd=cwd,
            env=child_env(backend, profile, data_dir, seed, root),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            errors="replace",
            **_new_group(),
        )
        if on_start:
            on_start(proc)
        expired = threading.Event()
        # A watchdog, not a check per line: a silent hung script (a deadlock, a wedged GPU) prints nothing.
        watchdog = threading.Timer(timeout, lambda: (expired.set(), kill_group(proc))) if timeout else None
        if watchdog:
            watchdog.daemon = True
            watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if on_line:
                    on_line(line)
            rc = proc.wait()
        except BaseException:
            kill_group(proc)  # Ctrl-C or a crash of the harness: stop the whole group, keep the log
            raise
        finally:
            if watchdog:
                watchdog.cancel()
        if expired.is_set():
            log.write(f"\nautoresearch: killed after the {timeout:.0f}s timeout\n")
    text = log_path.read_text(errors="replace")
    try:
        summary = parse_summary(text)
    except ValueError:
        summary = {}
    summary.update(exit_code=rc, timed_out=expired.is_set(), wall_seconds=round(time.time() - t0, 2))
    summary["log"] = str(log_path)
    return summary


def _new_group() -> dict:
    # Its own process group, so a timeout or Ctrl-C reaches the script's children (compile workers, loaders) too.
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def kill_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop proc and every process it started: SIGTERM to the group, SIGKILL after `grace` seconds (Windows:
    taskkill of the tree)."""
    if sys.platform == "win32":
        if proc.poll() is not None:
            return
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(proc.pid)], capture_output=True)
        return
    if proc.poll() is not None:
        try:  # the leader is gone, but a child of the group may live on and hold the output pipe open
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass
