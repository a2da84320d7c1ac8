"""Where experiments run when the loop has several in flight (`autoresearch loop --workers N`, or `--ray ADDRESS`).

A worker gets one run as a job: the script's text and commit, the seed, the profile and the driver's dataset
fingerprint (a RunSpec). It runs the script against its own prepared copy of the data with execute.py and returns
the run record and the log. It never touches git or the ledger; the driver (driver.py) does that.

    LocalWorkers   one worker process per slot on this host: a GPU each (CUDA_VISIBLE_DEVICES), or a CPU share
    RayWorkers     Ray tasks on a cluster (num_gpus=1 on cuda, else num_cpus=1); needs `pip install -e ".[ray]"`
    work()         what both run: check the data's fingerprint, run, and leave no training run behind

    python -m common.research.workers run JOB.json   # a local worker: the driver starts it, one per run
    python -m common.research.workers reap PGID      # kills group PGID when its worker dies first

A worker that dies mid-run (killed, out of memory, its node lost) costs that one run: the driver records it as a
crash with the reason. The training process runs in its own process group, so a reaper process (one per run, a
few MB) kills that group when its stdin closes without "done", that is, when the worker holding the other end
died. A local worker also watches its own stdin, so that a driver killed with -9 leaves no run behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HARNESS_ROOT = Path(__file__).resolve().parents[2]  # the checkout (or install) that holds common/ and backends/
RAY_HINT = 'pip install -e ".[ray]"'


def _python_env(extra: dict | None = None) -> dict:
    # Workers and reapers import this module, from wherever they are started.
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HARNESS_ROOT), env.get("PYTHONPATH")]))
    return env


# -- what a worker runs ------------------------------------------------------------------------------------------


def check_data(fingerprint: str, driver_dir: str | None, own: bool) -> tuple[Path | None, str | None]:
    """(the data directory to run on, None), or (None, why this worker refuses the run). `own`: the worker's own
    prepared data ($AUTORESEARCH_DATA_DIR there, else the driver's path if this machine has it, else the data
    `prepare` finished last there); otherwise the driver's directory, on the same machine."""
    from common import manifest, paths

    host = socket.gethostname()
    env = os.environ.get(paths.DATA_ENV)
    if own and env:
        data_dir = Path(env).expanduser()
    elif driver_dir and Path(driver_dir).is_dir():
        data_dir = Path(driver_dir)
    else:
        try:
            data_dir = paths.current_data_dir()
        except FileNotFoundError:
            return None, (
                f"refused by worker {host}: it has no prepared data; run `autoresearch prepare` there with the "
                f"driver's dataset (or set ${paths.DATA_ENV})"
            )
    try:
        found = manifest.fingerprint(data_dir)
    except (OSError, ValueError, KeyError) as e:
        return None, f"refused by worker {host}: no finished prepared data in {data_dir} ({e})"
    if found != fingerprint:
        return None, (
            f"refused by worker {host}: its data in {data_dir} (fingerprint {found[:12]}) is not the driver's "
            f"({fingerprint[:12]}); prepare the same dataset there, or point ${paths.DATA_ENV} at it"
        )
    return data_dir, None


class _Reaper:
    """A small process that kills the training run's process group if this worker dies before the run ends."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None

    def watch(self, pgid: int) -> None:
        if sys.platform == "win32":
            return  # no process groups to reap there; the run dies with its console
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "common.research.workers", "reap", str(pgid)], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=_python_env(),
        )  # fmt: skip

    def release(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.stdin.write(b"done\n")
            self.proc.stdin.close()
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def work(job: dict, stream=None, on_start=None) -> dict:
    """Run one job (see Job in driver.py) and return its run record, with the worker's name and host."""
    from common.research.execute import Expected, LiveLine, RunSpec, execute, lost_run

    spec, expected = RunSpec(**job["spec"]), Expected(**job["expected"])
    log = Path(job["log"])
    log.parent.mkdir(parents=True, exist_ok=True)
    where = {"worker": job["worker"], "host": socket.gethostname()}
    t0 = time.time()
    data_dir, refusal = check_data(spec.dataset, job.get("data_dir"), job.get("own_data", False))
    if refusal:
        return {**lost_run(spec, refusal, log, t0), **where}
    live = LiveLine(job["label"], stream or sys.stderr)
    reaper = _Reaper()

    def started(proc) -> None:
        reaper.watch(proc.pid)
        if on_start:
            on_start(proc)

    try:
        run = execute(spec, expected, log, Path(job["root"]), data_dir, live, started)
    finally:
        live.close()
        reaper.release()
    return {**run, **where}


def ray_task(job: dict) -> dict:
    """The Ray task: `work` in a scratch directory on whichever node Ray chose, the log returned as text."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="autoresearch-run-") as tmp:
        local = {**job, "log": str(Path(tmp) / Path(job["log"]).name), "root": str(HARNESS_ROOT), "own_data": True}
        run = work(local)
        log = Path(local["log"])
        run["log_text"] = log.read_text(errors="replace") if log.exists() else ""
    return run


# -- the driver's side: where jobs go --------------------------------------------------------------------------


def lost(job: dict, reason: str, t0: float) -> dict:
    from common.research.execute import RunSpec, lost_run

    return {**lost_run(RunSpec(**job["spec"]), reason, Path(job["log"]), t0), "worker": job["worker"]}


def gpu_ids() -> list[str]:
    """The GPUs this host lets us use: $CUDA_VISIBLE_DEVICES if set, else every one nvidia-smi lists."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip()]
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def slot_envs(n: int, backend: str) -> tuple[list[dict], str]:
    """Each slot's environment and one line saying how the slots share the machine."""
    if backend == "cuda":
        ids = gpu_ids()
        if not ids:
            return [{} for _ in range(n)], f"{n} workers; no GPU list found (nvidia-smi), so each sees every GPU"
        envs = [{"CUDA_VISIBLE_DEVICES": ids[k % len(ids)]} for k in range(n)]
        shared = f"; {n} workers share {len(ids)} GPUs, so runs slow each other" if n > len(ids) else ""
        return envs, f"{n} workers on GPUs {', '.join(e['CUDA_VISIBLE_DEVICES'] for e in envs)}{shared}"
    if backend == "cpu":
        if os.environ.get("OMP_NUM_THREADS"):
            return [{} for _ in range(n)], f"{n} CPU workers, {os.environ['OMP_NUM_THREADS']} threads each"
        threads = max(1, (os.cpu_count() or 1) // n)  # so that N runs do not fight over the same cores
        each = f"{threads} thread{'s' if threads > 1 else ''} each"
        return [{"OMP_NUM_THREADS": str(threads)} for _ in range(n)], f"{n} CPU workers, {each}"
    return [{} for _ in range(n)], f"{n} workers sharing this machine's GPU ({backend}): a smoke test, not a speedup"


class LocalWorkers:
    """Worker processes on this host, one per run, in the slot's environment. submit() returns at once; `done`
    gets the run record and `started` the pids to stop after a driver crash (both called from another thread)."""

    where = "local"

    def __init__(self, n: int, backend: str):
        self.n = n
        self.envs, self.note = slot_envs(n, backend)
        self._procs: dict[int, subprocess.Popen] = {}

    def submit(self, slot: int, job: dict, done, started) -> None:
        threading.Thread(target=self._guarded, args=(slot, job, done, started), daemon=True).start()

    def _guarded(self, slot: int, job: dict, done, started) -> None:
        t0 = time.time()
        try:
            self._run(slot, job, done, started, t0)
        except Exception as e:  # the driver waits for `done`: an unforeseen error costs this run, not the loop
            done(lost(job, f"worker w{slot} failed: {type(e).__name__}: {e}", t0))

    def _run(self, slot: int, job: dict, done, started, t0: float) -> None:
        job_file = Path(job["log"]).with_suffix(".job.json")
        try:
            job_file.parent.mkdir(parents=True, exist_ok=True)
            job_file.write_text(json.dumps(job))
            proc = subprocess.Popen(
                [sys.executable, "-m", "common.research.workers", "run", str(job_file)], cwd=job["root"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_python_env(self.envs[slot]),
            )  # fmt: skip
        except OSError as e:
            done(lost(job, f"worker w{slot} could not start: {e}", t0))
            return
        self._procs[slot] = proc
        info = {"worker_pid": proc.pid, "job": str(job_file)}
        started(info)
        run = None
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue  # not ours: something the script printed
            if "started" in msg:
                started({**info, "run_pid": msg["started"]})
            elif "run" in msg:
                run = msg["run"]
        rc = proc.wait()
        self._procs.pop(slot, None)
        try:
            proc.stdin.close()
        except OSError:
            pass
        job_file.unlink(missing_ok=True)
        if run is None:
            how = f"killed by signal {-rc}" if rc < 0 else f"exit {rc}"
            run = lost(job, f"worker w{slot} died mid-run ({how}): the run is lost, not judged", t0)
        done(run)

    def stop(self) -> None:
        """Stop every run in flight: a worker whose stdin closes stops its run and exits."""
        for proc in list(self._procs.values()):
            try:
                proc.stdin.close()
            except OSError:
                pass
        for proc in list(self._procs.values()):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError(f"--ray needs Ray, which is not installed: {RAY_HINT} (or pip install ray)") from None
    return ray


class RayWorkers:
    """Ray tasks, one per run, on the cluster at `address` (`auto`: the one this machine belongs to). The driver
    stays here; Ray picks the node. A task that dies (worker killed, node lost) is not retried: its run is lost."""

    def __init__(self, address: str, n: int | None, backend: str):
        ray = import_ray()
        if not ray.is_initialized():
            try:
                ray.init(address=address, logging_level="ERROR")
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ConnectionError(
                    f"no Ray cluster at {address!r} ({str(e).splitlines()[0] if str(e) else type(e).__name__}): "
                    "start one (`ray start --head` on the head node, `ray start --address HEAD:6379` on the others) "
                    "or pass its address"
                ) from None
        self.ray = ray
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        if backend == "cuda" and gpus == 0:
            raise ConnectionError(f"the Ray cluster at {address!r} has no GPU: the cuda backend needs one per worker")
        self.n = n or max(1, gpus if backend == "cuda" else len([x for x in ray.nodes() if x.get("Alive")]))
        options = {"num_gpus": 1} if backend == "cuda" else {"num_cpus": 1}
        self.task = ray.remote(ray_task).options(max_retries=0, **options)
        self.note = f"{self.n} workers as Ray tasks ({gpus} GPUs, {cpus} CPUs in the cluster)"
        self.where = "ray"
        self._refs: dict[int, object] = {}

    def submit(self, slot: int, job: dict, done, started) -> None:
        ref = self.task.remote(job)
        self._refs[slot] = ref
        threading.Thread(target=self._wait, args=(slot, job, ref, done), daemon=True).start()

    def _wait(self, slot: int, job: dict, ref, done) -> None:
        t0 = time.time()
        try:
            run = self.ray.get(ref)
        except Exception as e:  # RayError: the worker or its node died; anything else: the driver must hear back
            first = (str(e).strip().splitlines() or [""])[0][:200]
            run = lost(job, f"the Ray worker died mid-run ({type(e).__name__}: {first}): the run is lost, not judged", t0)
        finally:
            self._refs.pop(slot, None)
        text = run.pop("log_text", None)
        if text is not None:
            Path(job["log"]).parent.mkdir(parents=True, exist_ok=True)
            Path(job["log"]).write_text(text)
            run["log"] = job["log"]
        done(run)

    def stop(self) -> None:
        for ref in list(self._refs.values()):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # already finished, or the cluster is gone: nothing left to stop
                pass


# -- stopping what a killed driver left behind ----------------------------------------------------------------


def stop_group(pid: int, marker: str) -> bool:
    """Kill the process group led by `pid` if that process's command line still holds `marker` (else the pid is
    gone or now belongs to something else). Returns True if it was killed."""
    if sys.platform == "win32" or not pid:
        return False
    ps = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True)
    if marker not in ps.stdout:
        return False
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return False
    return True


# -- the processes ----------------------------------------------------------------------------------------------


def _serve(job_file: str) -> int:
    """A local worker: run the job, print {"started": pid} then {"run": record} on stdout, one JSON line each."""
    job = json.loads(Path(job_file).read_text())
    run_pid: list[int] = []

    def say(msg: dict) -> None:
        sys.stdout.write(json.dumps(msg, default=str) + "\n")
        sys.stdout.flush()

    def started(proc) -> None:
        run_pid.append(proc.pid)
        say({"started": proc.pid})

    def orphaned() -> None:
        # The driver holds our stdin open while it lives; EOF means it died: stop the run rather than outlive it.
        # (The raw descriptor: a thread blocked in sys.stdin's buffer would hold its lock at interpreter exit.)
        while os.read(0, 4096):
            pass
        for pid in run_pid:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        os._exit(3)

    threading.Thread(target=orphaned, daemon=True).start()
    try:
        run = work(job, sys.stderr, started)
    except KeyboardInterrupt:  # Ctrl-C reached the whole foreground group; execute() stopped the run
        return 130
    say({"run": run})
    return 0


def _reap(pgid: int) -> int:
    if b"done" not in sys.stdin.buffer.read():
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "run":
        sys.exit(_serve(sys.argv[2]))
    if len(sys.argv) == 3 and sys.argv[1] == "reap":
        sys.exit(_reap(int(sys.argv[2])))
    sys.exit(f"usage: python -m {__spec__.name if __spec__ else 'common.research.workers'} run JOB.json | reap PGID")
