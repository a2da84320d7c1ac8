"""One run: one script's content, one seed, one profile, run as a subprocess with a hard timeout, judged as
`ok`, `crash` or `violation` and returned as a run record for the ledger.

This is the unit a worker executes (workers.py: a local worker process, or a Ray task on another machine). It needs
the script's text (not a checkout), writes the full log to a file and returns the parsed summary with the log's
tail.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common.runner import run_experiment

OOM = re.compile(r"out of memory|OutOfMemoryError|\[METAL\] Command buffer execution failed|Insufficient Memory", re.I)
STEP = re.compile(r"^step (\d+) \(([\d.]+)%\) \| loss ([\d.naninf]+) .*?\| tok/s ([\d,]+) .*?remaining (\d+)s")


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides a run's result: the same spec gives the same val_bpb, up to kernel nondeterminism."""

    backend: str
    profile: str  # the full name, overrides included ("ci@20steps")
    seed: int
    script: str  # the file name, e.g. train_torch.py
    script_text: str
    commit: str | None
    dataset: str  # the data's fingerprint (common.manifest.fingerprint)
    timeout: float

    @property
    def script_sha256(self) -> str:
        return sha256_text(self.script_text)


@dataclass(frozen=True)
class Expected:
    """What the summary must report for the run to count: the harness's own view of the profile and data."""

    profile: str
    max_seq_len: int
    eval_tokens: int
    dataset_name: str
    steps: int | None


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def run_key(spec: RunSpec) -> str:
    return f"{spec.script_sha256}:{spec.seed}:{spec.profile}:{spec.dataset}"


def execute(
    spec: RunSpec, expected: Expected, log_path: Path, root: Path, data_dir: Path | None, on_line=None, on_start=None
) -> dict:
    """Run spec's script (stored beside its log, run from `root` so it imports the harness) and judge the result."""
    stored = log_path.with_name(f"{spec.script_sha256[:12]}-{spec.script}")
    if not stored.exists():  # written whole or not at all: a torn copy would be reused by every later run
        tmp = stored.with_name(f".{stored.name}.{os.getpid()}.tmp")
        tmp.write_text(spec.script_text)
        os.replace(tmp, stored)
    t0 = time.time()
    summary = run_experiment(
        spec.backend, spec.profile, log_path, data_dir, timeout=spec.timeout, root=root, script=stored,
        seed=spec.seed, on_line=on_line, on_start=on_start,
    )  # fmt: skip
    log_text = log_path.read_text(errors="replace")
    status, reason = judge(summary, log_text, expected, spec)
    meta = {k: summary.pop(k) for k in ("exit_code", "timed_out", "wall_seconds", "log")}
    return {
        "key": run_key(spec),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
        **{k: v for k, v in asdict(spec).items() if k != "script_text"},
        "script_sha256": spec.script_sha256,
        "status": status,
        "reason": reason,
        "val_bpb": summary.get("val_bpb") if status == "ok" else None,
        "memory_gb": round((summary.get("peak_vram_mb") or 0.0) / 1024, 3),
        "device": summary.get("device"),
        "summary": summary,
        **meta,
        "log_tail": "" if status == "ok" else "\n".join(log_text.splitlines()[-40:]),
    }


def lost_run(spec: RunSpec, reason: str, log_path: Path, t0: float | None = None) -> dict:
    """The record of a run that gave no result of its own: its worker died, or refused it. A `crash` with the
    reason, shaped as execute()'s, and marked `lost` so that the run cache never keeps it (a rerun may succeed).
    The reason goes at the end of the log (created if the run wrote none), so every run has one."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        log.write(f"\nautoresearch: {reason}\n")
    text = log_path.read_text(errors="replace")
    t0 = t0 or time.time()
    return {
        "key": run_key(spec),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
        **{k: v for k, v in asdict(spec).items() if k != "script_text"},
        "script_sha256": spec.script_sha256,
        "status": "crash",
        "reason": reason,
        "val_bpb": None,
        "memory_gb": 0.0,
        "device": None,
        "summary": {},
        "exit_code": None,
        "timed_out": False,
        "wall_seconds": round(time.time() - t0, 2),
        "log": str(log_path),
        "log_tail": "\n".join(text.splitlines()[-40:]),
        "lost": True,
    }


def judge(summary: dict, log_text: str, expected: Expected, spec: RunSpec) -> tuple[str, str]:
    """(status, reason): `crash` for anything that is not a finished run, `violation` for a finished run whose
    summary disagrees with the profile, the data or the seed the harness set, else `ok`."""
    if summary.get("timed_out"):
        return "crash", f"timeout: killed after {spec.timeout:.0f}s"
    fail = re.search(r"^FAIL: .*$", log_text, re.M)
    if fail:
        return "crash", fail.group(0)
    if summary.get("exit_code"):
        if OOM.search(log_text):
            return "crash", "out of memory"
        lines = [ln for ln in log_text.splitlines() if ln.strip()]
        return "crash", f"exit {summary['exit_code']}: {lines[-1][:200] if lines else 'no output'}"
    bpb = summary.get("val_bpb")
    if bpb is None:
        return "crash", "no summary block in the output"
    if not isinstance(bpb, (int, float)) or not math.isfinite(bpb) or bpb <= 0:
        return "crash", f"val_bpb {bpb}"
    wanted = {
        "profile": expected.profile,
        "max_seq_len": expected.max_seq_len,
        "eval_tokens": expected.eval_tokens,
        "dataset": expected.dataset_name,
        "seed": spec.seed,
    }
    if expected.steps is not None:
        wanted["num_steps"] = expected.steps
    wrong = [f"{k} {summary.get(k)!r} (expected {v!r})" for k, v in wanted.items() if summary.get(k) != v]
    if wrong:
        return "violation", "the summary disagrees with the harness: " + ", ".join(wrong)
    return "ok", ""


class LiveLine:
    """One compact status line of a run in progress (phase, step, loss, tok/s, time left), rewritten in place on a
    terminal; elsewhere (a pipe, an agent reading the output) one line per phase, so logs stay short."""

    def __init__(self, label: str, stream=None):
        self.label, self.stream = label, stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.phase, self.t0, self.detail, self._last = "startup", time.time(), "", ""
        self._t_emit, self.every = self.t0, 60.0

    def __call__(self, line: str) -> None:
        line = line.rstrip("\n")
        phase = self.phase
        m = STEP.match(line)
        if m:
            phase = "train"
            step, pct, loss, toks, left = m.groups()
            self.detail = f"step {int(step) + 1} ({pct}%) loss {float(loss):.3f} {toks} tok/s {left}s left"
        elif line.startswith("compile "):
            phase = "train"
        elif line.startswith("startup ") and "training" in line:
            phase, self.detail = "eval", ""
        elif line.startswith("model "):
            phase = "compile"
        elif line == "---":
            phase, self.detail = "done", ""
        if phase != self.phase:
            self.phase = phase
            if not self.tty and phase != "done":
                self._emit(f"{self.label}: {phase} ({time.time() - self.t0:.0f}s)\n")
                self._t_emit = time.time()
        if self.tty:
            text = f"\r{self.label}: {self.phase} {self.detail or f'{time.time() - self.t0:.0f}s'}"
            if text != self._last:
                self._emit(text.ljust(len(self._last)))
                self._last = text
        elif m and time.time() - self._t_emit >= self.every:
            # A log file or a pipe: a progress line a minute, not one per step.
            self._emit(f"{self.label}: {self.phase} {self.detail}\n")
            self._t_emit = time.time()

    def close(self) -> None:
        if self.tty and self._last:
            self._emit("\r" + " " * len(self._last) + "\r")

    def _emit(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
