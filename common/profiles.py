"""Profiles: named constant sets for hardware tiers.

A profile fixes what makes two results comparable (time budget, context length, eval tokens) plus the default model
size and batch for that tier. A research branch pins one profile; every result records it; results from different
profiles are never compared. Chosen by `--profile NAME`, else `AUTORESEARCH_PROFILE`, else check-hardware's
recommendation: pick_tier() takes the largest tier (TIERS: NVIDIA GPUs, Apple Silicon) that the machine's memory
reaches and whose estimated peak (common/memory.py) fits it.

    get_profile("gpu24")                   # a tier
    get_profile("h100@T1024@120s")         # with overrides: each makes another experiment, under its own name
    pick_tier("nvidia", 23.6)              # (gpu24's Profile, why)
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
    hardware: str | None = None  # a tier of "nvidia" GPUs or "apple" Silicon, which check-hardware picks
    memory_gib: float | None = None  # the least memory that picks the tier (GPU; on a Mac, MLX's working set)

    def to_dict(self) -> dict:
        return asdict(self)


def _tier(name, seq_len, eval_tokens, depth, rows, tokens, hardware, memory_gib, description, **kw) -> Profile:  # fmt: skip
    return Profile(name, 300.0, seq_len, eval_tokens, depth, rows, tokens, description, hardware=hardware,
                   memory_gib=memory_gib, **kw)  # fmt: skip


# The tiers, largest first within each kind of hardware. Each fits its least memory with headroom, training and eval,
# by common/memory.py's estimate (tests/test_profiles.py checks it; benchmarks/tier_caps.py proves the GPU tiers under
# a cap of that memory). GPUs run the compiled torch twin; 24 GB and less also fit it uncompiled (Windows, no Triton)
# and MLX's CUDA build. Macs run MLX. Batches are the same math at any rows: only memory and speed differ.
# fmt: off
TIERS = [
    # Upstream karpathy/autoresearch's constants, so our numbers sit beside theirs.
    _tier("h100", 2048, 40 * 524288, 8, 128, 2**19, "nvidia", 70, "an 80 GB GPU (H100, A100 80GB, H200): upstream's "
          "constants", baseline_seeds=2, overhead=600.0),
    _tier("gpu40", 2048, 2**23, 8, 64, 2**18, "nvidia", 36, "a 40-48 GB GPU (A100 40GB, A6000, L40S)"),
    _tier("gpu24", 2048, 2**22, 8, 16, 2**17, "nvidia", 20, "a 20-32 GB GPU (RTX 3090, 4090, 5090)"),
    _tier("gpu8", 1024, 2**21, 4, 16, 2**16, "nvidia", 7, "an 8-16 GB GPU (RTX 3070, 4060, 4080, T4)"),
    _tier("gpu6", 1024, 2**21, 4, 8, 2**16, "nvidia", 5, "a 6 GB GPU (RTX 2060, 3060 laptop)"),
    # Macs by the share of unified memory MLX may use (Metal's recommended working set, ~2/3-3/4 of RAM).
    _tier("mac32", 1024, 2**21, 6, 32, 2**16, "apple", 20, "Apple Silicon with 32 GB or more"),
    _tier("mac16", 1024, 2**21, 4, 16, 2**16, "apple", 10, "Apple Silicon with 16-24 GB"),
    _tier("mac8", 1024, 2**21, 4, 8, 2**16, "apple", 5, "Apple Silicon with 8 GB"),
]
# Names that resolve to a tier's constants under their own name, so results recorded under them still compare.
# fmt: on
# The first laptop profile: branches pinned to it keep running it, under its name.
ALIASES = {"laptop": "mac16"}

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in [
        *TIERS,
        Profile("cpu", 60.0, 256, 2**17, 2, 16, 2**12, "a few CPU cores: one-minute experiments"),
        Profile("ci", 6.0, 64, 2**12, 2, 8, 2**10, "tests and CI: seconds", overhead=180.0),
    ]
}
for _alias, _tier_name in ALIASES.items():  # not a tier itself: check-hardware picks the tier's own name
    _description = f"{PROFILES[_tier_name].description} ({_tier_name})"
    PROFILES[_alias] = replace(PROFILES[_tier_name], name=_alias, hardware=None, description=_description)


def get_profile(name: str | None = None) -> Profile:
    """Resolve a profile: explicit name, else $AUTORESEARCH_PROFILE, else the hardware recommendation.

    A name may carry overrides, each of which makes it another experiment: "h100@T1024" (another context length,
    with as many tokens per micro-batch: twice the rows), "h100@120s" (another time budget), "ci@20steps"
    (fixed-step mode), "cpu@90s@40steps". $AUTORESEARCH_TIME_BUDGET and $AUTORESEARCH_STEPS add the same suffixes."""
    name = name or os.environ.get(ENV_VAR)
    if not name:
        from common.hardware import probe  # lazy: probing imports the frameworks

        name = probe()["recommended"]["profile"]
    base, *suffixes = name.split("@")
    if base not in PROFILES:
        raise ValueError(
            f"unknown profile {name!r}: choose one of {', '.join(PROFILES)} (--profile or ${ENV_VAR})"
        )
    seq_len, budget, steps = None, None, None
    for suffix in suffixes:
        m = re.fullmatch(r"T(\d+)|(\d+)steps|(\d+(?:\.\d+)?)s", suffix)
        if not m:
            raise ValueError(
                f"profile {name!r}: unknown override @{suffix} (use @T<length>, @<seconds>s or @<N>steps, "
                "e.g. h100@T1024, ci@20steps)"
            )
        if m.group(1):
            seq_len = int(m.group(1))
        elif m.group(2):
            steps = int(m.group(2))
        else:
            budget = float(m.group(3))
    if os.environ.get(BUDGET_ENV):
        budget = _positive(os.environ[BUDGET_ENV], BUDGET_ENV, float, "number of seconds")
    if os.environ.get(STEPS_ENV):
        steps = _positive(os.environ[STEPS_ENV], STEPS_ENV, int, "whole number of steps")
    if budget is not None and budget <= 0 or steps is not None and steps <= 0:
        raise ValueError(f"profile {name!r}: the budget and the step count must be positive")
    profile = PROFILES[base]
    # Each override is another experiment: the name says so, so results never mix with the base profile's.
    if seq_len is not None:
        profile = with_seq_len(profile, seq_len)
    if budget is not None:
        profile = replace(profile, name=f"{profile.name}@{budget:g}s", time_budget=budget)
    if steps is not None:
        profile = replace(profile, name=f"{profile.name}@{steps}steps", steps=steps)
    return profile


def with_seq_len(profile: Profile, seq_len: int) -> Profile:
    """`profile` at another context length, named "<name>@T<length>": rows scaled to keep the tokens per micro-batch
    (the memory the tier planned for, less attention's share at a shorter context), the same tokens per step."""
    if seq_len < 8 or seq_len % 8:
        raise ValueError(f"profile {profile.name}@T{seq_len}: the context length must be a multiple of 8")
    rows = max(1, profile.device_batch_size * profile.max_seq_len // seq_len)
    if profile.total_batch_size % (rows * seq_len):
        raise ValueError(
            f"profile {profile.name}@T{seq_len}: {profile.total_batch_size:,} tokens per step is not a whole number "
            f"of {rows} x {seq_len}-token micro-batches: choose a shorter context"
        )
    return replace(profile, name=f"{profile.name}@T{seq_len}", max_seq_len=seq_len, device_batch_size=rows)


def pick_tier(
    hardware: str, memory_gib: float, twin: str = "torch", device: str = "cuda", compiled: bool = True
) -> tuple[Profile, str]:
    """The largest `hardware` tier (nvidia | apple) that `memory_gib` reaches and whose estimated peak, for the twin
    that will run (torch compiled or not, MLX; common/memory.py), fits it; else the cpu profile. Returns the profile
    and why, in words."""
    from common.memory import estimate

    tiers = [t for t in TIERS if t.hardware == hardware]
    mode = "" if twin == "mlx" or device != "cuda" else " compiled" if compiled else " uncompiled"
    how = f"{twin} {device}{mode}"
    skipped = []
    for tier in tiers:
        if memory_gib < tier.memory_gib:
            continue
        est = estimate(tier, twin, device, compiled=compiled, memory_gib=memory_gib)
        need = est.total_gib * (1 + est.margin)
        if est.fits(memory_gib):
            why = f"{memory_gib:.1f} GiB >= {tier.name}'s {tier.memory_gib:g}; {how} peak ~{est.total_gib:.1f} GiB"
            if skipped:
                why += f" ({', '.join(skipped)} would not fit: {how} needs more)"
            return tier, why
        skipped.append(f"{tier.name} ~{need:.1f} GiB")
    smallest = tiers[-1]
    return PROFILES["cpu"], (
        f"{memory_gib:.1f} GiB fits no {hardware} tier (the smallest, {smallest.name}, is for {smallest.memory_gib:g} "
        "GiB): the cpu profile's small shape"
    )


def current_profile() -> Profile:
    """The profile a training script runs under: $AUTORESEARCH_PROFILE, else a guess from the platform and
    nvidia-smi that imports no framework (importing a twin must stay cheap; check-hardware measures properly)."""
    if os.environ.get(ENV_VAR) or os.environ.get(BUDGET_ENV) or os.environ.get(STEPS_ENV):
        return get_profile(os.environ.get(ENV_VAR) or "cpu")
    return get_profile(_guess_tier())


APPLE_WORKING_SET = 0.75  # of RAM, where MLX cannot say: Metal recommends 2/3-3/4; either picks the same tier


def _guess_tier() -> str:
    """check-hardware's pick by memory, from what the OS and nvidia-smi say: an Apple Silicon Mac's RAM, or the
    largest NVIDIA GPU's memory with the compiled torch twin if Triton is installed."""
    import platform
    import shutil
    import subprocess
    from importlib.util import find_spec

    if platform.system() == "Darwin" and platform.machine() == "arm64":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.memsize"], capture_output=True, text=True, timeout=5)
            ram = int(out.stdout)
            return pick_tier("apple", APPLE_WORKING_SET * ram / 2**30, "mlx", "metal")[0].name
        except (OSError, ValueError, subprocess.SubprocessError):
            return "mac8"
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=5,
            ).stdout  # fmt: skip
            gib = max(int(v) for v in out.split()) / 1024
            return pick_tier("nvidia", gib, "torch", "cuda", compiled=find_spec("triton") is not None)[0].name
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
