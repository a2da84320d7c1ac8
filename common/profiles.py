"""Profiles: named constant sets for hardware tiers.

A profile fixes what makes two results comparable (time budget, context length, eval tokens) plus the default model
size and batch for that tier. A research branch pins one profile; every result records it; results from different
profiles are never compared. Chosen by `--profile NAME`, else `AUTORESEARCH_PROFILE`, else check-hardware's
recommendation.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, replace

ENV_VAR = "AUTORESEARCH_PROFILE"
BUDGET_ENV = "AUTORESEARCH_TIME_BUDGET"  # seconds; for benchmarks: renames the profile, e.g. "h100@120s"
STEPS_ENV = "AUTORESEARCH_STEPS"  # a fixed step count instead of the time budget: renames it, e.g. "ci@20steps"
SEED_ENV = "AUTORESEARCH_SEED"  # set by the harness for every run; the summary reports it
DEFAULT_SEED = 42


@dataclass(frozen=True)
class Profile:
    name: str
    time_budget: float  # seconds of training steps (startup, compile and eval excluded)
    max_seq_len: int  # context length T; rows are T+1 tokens
    eval_tokens: int  # target tokens in the fixed val set
    depth: int  # default model size dial (DEPTH in the training scripts)
    device_batch_size: int  # rows per micro-step
    total_batch_size: int  # tokens per optimizer step (gradient accumulation makes up the rest)
    description: str
    baseline_seeds: int = 3  # seeds the research loop runs the baseline with, to measure the seed spread
    overhead: float = 300.0  # seconds allowed on top of twice the budget for startup, compile and eval
    steps: int | None = None  # fixed-step mode: train exactly this many steps, no calibration (same on any machine)

    def to_dict(self) -> dict:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in [
        # Upstream karpathy/autoresearch's constants, so our numbers sit beside theirs.
        Profile(
            "h100", 300.0, 2048, 40 * 524288, 8, 128, 2**19, "one 80 GB NVIDIA H100 (upstream's constants)",
            baseline_seeds=2, overhead=600.0,
        ),
        # MLX trains with unfused attention on Metal (B*H*T*T scores): T=1024 at batch 16 fits a 16-24 GB laptop.
        Profile("laptop", 300.0, 1024, 2**21, 4, 16, 2**16, "Apple Silicon laptop (16-24 GB) or a small GPU"),
        Profile("cpu", 60.0, 256, 2**17, 2, 16, 2**12, "a few CPU cores: one-minute experiments"),
        Profile("ci", 6.0, 64, 2**12, 2, 8, 2**10, "tests and CI: seconds", overhead=180.0),
    ]
}


def get_profile(name: str | None = None) -> Profile:
    """Resolve a profile: explicit name, else $AUTORESEARCH_PROFILE, else the hardware recommendation.

    A name may carry overrides, each of which makes it another experiment: "h100@120s" (another time budget),
    "ci@20steps" (fixed-step mode), "cpu@90s@40steps". $AUTORESEARCH_TIME_BUDGET and $AUTORESEARCH_STEPS add the
    same suffixes."""
    name = name or os.environ.get(ENV_VAR)
    if not name:
        from common.hardware import probe  # lazy: probing imports the frameworks

        name = probe()["recommended"]["profile"]
    base, *suffixes = name.split("@")
    if base not in PROFILES:
        raise ValueError(
            f"unknown profile {name!r}: choose one of {', '.join(PROFILES)} (--profile or ${ENV_VAR})"
        )
    budget, steps = None, None
    for suffix in suffixes:
        m = re.fullmatch(r"(\d+)steps|(\d+(?:\.\d+)?)s", suffix)
        if not m:
            raise ValueError(
                f"profile {name!r}: unknown override @{suffix} (use @<seconds>s or @<N>steps, e.g. ci@20steps)"
            )
        steps, budget = (int(m.group(1)), budget) if m.group(1) else (steps, float(m.group(2)))
    if os.environ.get(BUDGET_ENV):
        budget = _positive(os.environ[BUDGET_ENV], BUDGET_ENV, float, "number of seconds")
    if os.environ.get(STEPS_ENV):
        steps = _positive(os.environ[STEPS_ENV], STEPS_ENV, int, "whole number of steps")
    if budget is not None and budget <= 0 or steps is not None and steps <= 0:
        raise ValueError(f"profile {name!r}: the budget and the step count must be positive")
    profile = PROFILES[base]
    # Another budget is another experiment: the name says so, so results never mix with the base profile's.
    if budget is not None:
        profile = replace(profile, name=f"{base}@{budget:g}s", time_budget=budget)
    if steps is not None:
        profile = replace(profile, name=f"{profile.name}@{steps}steps", steps=steps)
    return profile


def current_profile() -> Profile:
    """The profile a training script runs under: $AUTORESEARCH_PROFILE, else a guess from the platform and
    nvidia-smi that imports no framework (importing a twin must stay cheap; check-hardware measures properly)."""
    if os.environ.get(ENV_VAR) or os.environ.get(BUDGET_ENV) or os.environ.get(STEPS_ENV):
        return get_profile(os.environ.get(ENV_VAR) or "cpu")
    return get_profile(_guess_tier())


def _guess_tier() -> str:
    import platform
    import shutil
    import subprocess

    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return "laptop"
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=5,
            ).stdout  # fmt: skip
            mib = max(int(v) for v in out.split())
            return "h100" if mib >= 70 * 1024 else "laptop"
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    return "cpu"


def _positive(value: str, var: str, kind, what: str):
    try:
        number = kind(value)
    except ValueError:
        number = 0
    if number <= 0:
        raise ValueError(f"${var}={value} must be a positive {what}")
    return number


def run_seed() -> int:
    """The seed of this run (weights and data order): the harness sets $AUTORESEARCH_SEED, so a script cannot
    improve its score by picking a lucky one."""
    value = os.environ.get(SEED_ENV, str(DEFAULT_SEED))
    if not value.isdigit():
        raise ValueError(f"${SEED_ENV}={value} must be a non-negative whole number")
    return int(value)


def run_timeout(profile: Profile) -> float:
    """The hard limit of one run: the scripts stop themselves at twice the budget; startup, compile and eval get
    the profile's overhead on top."""
    return 2 * profile.time_budget + profile.overhead
