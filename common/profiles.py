"""Profiles: named constant sets for hardware tiers.

A profile fixes what makes two results comparable (time budget, context length, eval tokens) plus the default model
size and batch for that tier. A research branch pins one profile; every result records it; results from different
profiles are never compared. Chosen by `--profile NAME`, else `AUTORESEARCH_PROFILE`, else check-hardware's
recommendation.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace

ENV_VAR = "AUTORESEARCH_PROFILE"
BUDGET_ENV = "AUTORESEARCH_TIME_BUDGET"  # seconds; for benchmarks: renames the profile, e.g. "h100@120s"


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

    def to_dict(self) -> dict:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in [
        # Upstream karpathy/autoresearch's constants, so our numbers sit beside theirs.
        Profile(
            "h100", 300.0, 2048, 40 * 524288, 8, 128, 2**19, "one 80 GB NVIDIA H100 (upstream's constants)"
        ),
        # MLX trains with unfused attention on Metal (B*H*T*T scores): T=1024 at batch 16 fits a 16-24 GB laptop.
        Profile("laptop", 300.0, 1024, 2**21, 4, 16, 2**16, "Apple Silicon laptop (16-24 GB) or a small GPU"),
        Profile("cpu", 60.0, 256, 2**17, 2, 16, 2**12, "a few CPU cores: one-minute experiments"),
        Profile("ci", 6.0, 64, 2**12, 2, 8, 2**10, "tests and CI: seconds"),
    ]
}


def get_profile(name: str | None = None) -> Profile:
    """Resolve a profile: explicit name, else $AUTORESEARCH_PROFILE, else the hardware recommendation."""
    name = name or os.environ.get(ENV_VAR)
    if not name:
        from common.hardware import probe  # lazy: probing imports the frameworks

        name = probe()["recommended"]["profile"]
    base, _, _ = name.partition("@")
    if base not in PROFILES:
        raise ValueError(
            f"unknown profile {name!r}: choose one of {', '.join(PROFILES)} (--profile or ${ENV_VAR})"
        )
    profile = PROFILES[base]
    budget = os.environ.get(BUDGET_ENV)
    if budget:
        # Another budget is another experiment: the name says so, so results never mix with the base profile's.
        seconds = float(budget)
        if seconds <= 0:
            raise ValueError(f"${BUDGET_ENV}={budget} must be a positive number of seconds")
        profile = replace(profile, name=f"{base}@{seconds:g}s", time_budget=seconds)
    return profile
