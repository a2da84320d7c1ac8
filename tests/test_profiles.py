"""Tests for the hardware tiers: common/profiles.py (the tiers, overrides, the pick by memory), common/memory.py (the
peak estimate against the peaks measured in benchmarks/RESULTS.md) and the memory cap of backends/torch_backend.py.

Run: .venv/bin/pytest tests/test_profiles.py
"""

from __future__ import annotations

import subprocess
import types

import pytest

from common import hardware
from common.memory import GIB, MARGIN, ModelShape, estimate, eval_chunk_rows, usable_gib
from common.profiles import ALIASES, PROFILES, TIERS, get_profile, pick_tier

NVIDIA = [t for t in TIERS if t.hardware == "nvidia"]
APPLE = [t for t in TIERS if t.hardware == "apple"]
MIB = 2**20

# -- the pick, on machines as probe() describes them ---------------------------------------------------------------


def _machine(*, apple_ram=None, working_set=None, gpu_gib=None, torch_cuda=True, mlx_cuda=False, triton=True):
    """A probe()-like dict: an Apple Silicon Mac (RAM, MLX's working set), a Linux box with one NVIDIA GPU, or a
    CPU box (neither)."""
    on = {"available": True, "device": "x", "detail": "test"}
    off = {"available": False, "device": None, "detail": "test"}
    mlx = {**on, "metal": apple_ram is not None, "cuda": mlx_cuda}
    info = {
        "platform": "Darwin" if apple_ram else "Linux", "machine": "arm64" if apple_ram else "x86_64",
        "chip": "Apple M2" if apple_ram else "Some CPU", "memory_gb": apple_ram or 64.0, "gpus": [],
        "triton": triton, "cpu_speed": None,
        "backends": {"mlx": mlx, "cuda": off, "mps": off, "cpu": on},
    }  # fmt: skip
    if apple_ram:
        gpu = {"name": "Apple M2 GPU (unified memory)", "memory_gb": apple_ram, "working_set_gb": working_set}
        info["gpus"] = [gpu]
    elif gpu_gib:
        info["gpus"] = [{"name": f"NVIDIA {gpu_gib:g} GiB", "memory_gb": gpu_gib}]
        if torch_cuda:
            info["backends"]["cuda"] = on
    return info


@pytest.mark.parametrize(
    "machine, backend, profile",
    [
        (
            dict(apple_ram=8.0, working_set=5.3),
            "mlx",
            "mac8",
        ),  # an 8 GB MacBook Air: Metal recommends 2/3 of RAM
        (dict(apple_ram=16.0, working_set=10.7), "mlx", "mac16"),
        (dict(apple_ram=24.0, working_set=16.0), "mlx", "mac16"),
        (dict(apple_ram=32.0, working_set=21.3), "mlx", "mac32"),
        (dict(apple_ram=128.0, working_set=96.0), "mlx", "mac32"),
        (dict(apple_ram=16.0), "mlx", "mac16"),  # MLX says nothing: 75% of RAM
        (dict(gpu_gib=5.8), "cuda", "gpu6"),  # an RTX 3060 laptop
        (dict(gpu_gib=8.0), "cuda", "gpu8"),  # an RTX 4060
        (dict(gpu_gib=11.8), "cuda", "gpu8"),  # 12 GB cards: the 8 GB tier
        (dict(gpu_gib=23.6), "cuda", "gpu24"),  # an RTX 4090
        (dict(gpu_gib=31.4), "cuda", "gpu24"),  # an RTX 5090
        (dict(gpu_gib=39.4), "cuda", "gpu40"),  # an A100 40GB
        (dict(gpu_gib=44.4), "cuda", "gpu40"),  # an L40S
        (dict(gpu_gib=79.2), "cuda", "h100"),
        (dict(gpu_gib=139.8), "cuda", "h100"),  # an H200: the 80 GB GPU's profile
        (dict(gpu_gib=3.8), "cuda", "cpu"),  # under every GPU tier: the cpu profile's shape, on the GPU
        ({}, "mlx", "cpu"),  # a CPU box
    ],
)
def test_the_tier_follows_the_memory(machine, backend, profile):
    rec = hardware.recommend(_machine(**machine))
    assert (rec["backend"], rec["profile"]) == (backend, profile), rec["reason"]
    if backend != "cuda" and profile == "cpu":
        return
    memory = rec["memory"]
    assert memory["tier"] == profile and f"{memory['gib']:.1f} GiB" in rec["reason"]
    source = "working set" if machine.get("working_set") else "75% of" if machine.get("apple_ram") else "GPU"
    assert source in memory["source"] and memory["source"] in rec["reason"]


def test_without_triton_the_tier_fits_the_uncompiled_twin():
    # Windows: no Triton, so no torch.compile; the uncompiled twin keeps about twice the activations
    rec = hardware.recommend(_machine(gpu_gib=44.4, triton=False))
    assert rec["profile"] == "gpu24" and rec["memory"]["compiled"] is False
    assert "gpu40" in rec["reason"] and "no Triton" in rec["reason"]
    assert hardware.recommend(_machine(gpu_gib=23.6, triton=False))["profile"] == "gpu24"  # a 4090 on Windows
    assert hardware.recommend(_machine(gpu_gib=7.6, triton=False))["profile"] == "gpu8"


def test_mlx_on_cuda_and_torch_on_mps_get_the_tier_they_fit():
    rec = hardware.recommend(_machine(gpu_gib=39.4, torch_cuda=False, mlx_cuda=True))
    assert (rec["backend"], rec["profile"]) == ("mlx", "gpu24") and rec["memory"]["twin"] == "mlx"
    # torch on MPS: float32 and eager, mac32's 32 rows do not fit a 32 GB Mac: mac16's shape does
    assert pick_tier("apple", 21.3, "torch", "mps", compiled=False)[0].name == "mac16"


def test_check_hardware_json_says_why():
    rec = hardware.recommend(_machine(gpu_gib=23.6))
    assert set(rec["memory"]) == {"hardware", "gib", "source", "tier", "twin", "device", "compiled"}
    assert rec["memory"]["hardware"] == "nvidia" and rec["memory"]["gib"] == 23.6
    assert "gpu24's 20" in rec["reason"] and "peak ~" in rec["reason"]


def test_the_framework_free_guess_agrees(monkeypatch):
    """current_profile()'s guess (at a twin's import, no $AUTORESEARCH_PROFILE) picks as check-hardware does."""
    import importlib.util
    import platform
    import shutil

    from common import profiles

    def run(cmd, **kw):
        out = {"sysctl": "8589934592\n", "nvidia-smi": "24564\n"}[cmd[0]]  # 8 GiB of RAM; an RTX 4090
        return types.SimpleNamespace(stdout=out)

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    assert profiles._guess_tier() == "mac8"
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    for triton in (True, False):
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, t=triton: object() if t else None)
        assert profiles._guess_tier() == "gpu24"
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert profiles._guess_tier() == "cpu"


# -- every tier fits its least memory, and the next tier would not --------------------------------------------------


def _paths(tier):
    """(twin, device, compiled) the tier promises to fit: a Mac's MLX; a GPU's compiled torch twin, and at 24 GB and
    under also the uncompiled one (Windows) and MLX's CUDA build."""
    if tier.hardware == "apple":
        return [("mlx", "metal", True)]
    if tier.memory_gib > 24:
        return [("torch", "cuda", True)]
    return [("torch", "cuda", True), ("torch", "cuda", False), ("mlx", "cuda", True)]


@pytest.mark.parametrize("tier", TIERS, ids=lambda t: t.name)
def test_each_tier_fits_its_memory_with_headroom(tier):
    for twin, device, compiled in _paths(tier):
        est = estimate(tier, twin, device, compiled=compiled, memory_gib=tier.memory_gib)
        assert est.fits(tier.memory_gib), (twin, device, compiled, est.to_dict())
        assert est.total_gib * (1 + est.margin) <= 0.9 * tier.memory_gib  # headroom beyond the margin
        assert tier.total_batch_size % (tier.device_batch_size * tier.max_seq_len) == 0


@pytest.mark.parametrize("tier", [t for t in TIERS if t.name not in ("h100", "mac32")], ids=lambda t: t.name)
def test_no_tier_wastes_its_memory(tier):
    """The next larger tier of the same hardware would not fit this tier's least memory on some path it promises:
    each tier runs the largest shape of the ladder that fits."""
    ladder = NVIDIA if tier.hardware == "nvidia" else APPLE
    bigger = ladder[ladder.index(tier) - 1]
    fits = [
        estimate(bigger, twin, device, compiled=compiled, memory_gib=tier.memory_gib).fits(tier.memory_gib)
        for twin, device, compiled in _paths(tier)
    ]
    assert not all(fits), (tier.name, bigger.name)


def test_tiers_are_ordered_and_named():
    for ladder in (NVIDIA, APPLE):
        assert [t.memory_gib for t in ladder] == sorted((t.memory_gib for t in ladder), reverse=True)
    assert {t.name for t in TIERS} == {"h100", "gpu40", "gpu24", "gpu8", "gpu6", "mac32", "mac16", "mac8"}
    assert all(t.time_budget == 300 and t.steps is None for t in TIERS)


def test_h100_is_upstreams_constants():
    h = PROFILES["h100"]
    assert (h.time_budget, h.max_seq_len, h.eval_tokens, h.depth, h.device_batch_size, h.total_batch_size) == (
        300.0, 2048, 40 * 524288, 8, 128, 2**19,
    )  # fmt: skip
    assert (h.baseline_seeds, h.overhead) == (2, 600.0)
    ci, cpu = PROFILES["ci"], PROFILES["cpu"]
    assert (ci.max_seq_len, ci.eval_tokens, ci.depth, ci.device_batch_size, ci.total_batch_size) == (
        64,
        4096,
        2,
        8,
        1024,
    )
    assert (cpu.max_seq_len, cpu.eval_tokens, cpu.depth, cpu.device_batch_size, cpu.total_batch_size) == (
        256, 2**17, 2, 16, 2**12,
    )  # fmt: skip


def test_laptop_keeps_its_constants_and_its_name():
    """Branches pinned to `laptop` (the only Mac profile before the tiers) resume with the same experiment, recorded
    under the same name: mac16's constants, which were laptop's. check-hardware never picks it."""
    laptop, mac16 = get_profile("laptop"), PROFILES[ALIASES["laptop"]]
    assert laptop.name == "laptop" and laptop.hardware is None
    same = ("time_budget", "max_seq_len", "eval_tokens", "depth", "device_batch_size", "total_batch_size")
    assert [getattr(laptop, k) for k in same] == [getattr(mac16, k) for k in same]
    assert [getattr(laptop, k) for k in same] == [300.0, 1024, 2**21, 4, 16, 2**16]  # laptop as it always was
    assert get_profile("laptop@120s").name == "laptop@120s"


# -- the estimate against what the cards measured (benchmarks/RESULTS.md) -------------------------------------------


@pytest.mark.parametrize(
    "twin, rows, card_gib, measured_mib, where",
    [
        ("torch", 128, 79.6, 38_816, "PyTorch on H100, Call 13: the final code, three 120 s runs"),
        ("mlx", 64, 139.8, 43_117, "MLX (CUDA backend), fourth lease: 120 s at the h100 profile, one H200"),
        ("mlx", 128, 139.8, 75_598, "MLX (CUDA backend), fourth lease: 128-row micro-batches"),
    ],
)
def test_the_estimate_matches_the_measured_h100_shape_peaks(twin, rows, card_gib, measured_mib, where):
    est = estimate(PROFILES["h100"], twin, "cuda", memory_gib=card_gib, rows=rows)
    measured = measured_mib * MIB / GIB
    assert abs(est.total_gib - measured) <= est.margin * measured, (where, est.to_dict(), measured)
    assert est.margin == MARGIN[twin]


def test_the_estimate_scales_with_its_inputs():
    h = PROFILES["h100"]
    one, two = (estimate(h, rows=r).parts["activations"] for r in (64, 128))
    assert two == pytest.approx(2 * one)
    eager, compiled = estimate(h, compiled=False), estimate(h)
    assert eager.total_gib > 2 * compiled.total_gib and eager.margin == MARGIN["uncalibrated"]
    metal = estimate(PROFILES["mac16"], "mlx", "metal", memory_gib=10.7)
    assert "attention scores" in metal.parts and metal.margin == MARGIN["uncalibrated"]
    assert usable_gib(80) < 80 and not estimate(h).fits(38.0) and estimate(h).fits(70.0)
    with pytest.raises(ValueError, match="torch or mlx"):
        estimate(h, "jax")


@pytest.mark.parametrize("depth", [2, 4, 6, 8])
def test_the_model_shape_is_the_twins(depth):
    """ModelShape counts the parameters as train_torch.py builds them (on the meta device: nothing allocated)."""
    torch = pytest.importorskip("torch")
    import train_torch as tt

    config = tt.build_config(depth, 256, 8192)
    with torch.device("meta"):
        model = tt.GPT(config)
    shape = ModelShape(depth, 256)
    assert (shape.n_embd, shape.n_head) == (config.n_embd, config.n_head)
    assert shape.params == model.num_params()
    assert shape.windows == model._window_sizes


def test_the_eval_chunks_are_mlx_backends(monkeypatch):
    mb = pytest.importorskip("backends.mlx_backend")
    for memory in (8 * GIB, 16 * GIB, 80 * GIB, 192 * GIB, None):
        monkeypatch.setattr(mb, "_memory_bytes", lambda m=memory: m)
        for T, rows in ((1024, 64), (2048, 64), (64, 8)):
            assert eval_chunk_rows(T, 8192, rows, memory) == mb.eval_chunk_rows(T, 8192, rows)


# -- overrides make new names ---------------------------------------------------------------------------------------


def test_a_shorter_context_is_another_profile():
    p = get_profile("h100@T1024")
    assert p.name == "h100@T1024" and p.max_seq_len == 1024
    # the tokens per micro-batch that the tier planned for
    assert p.device_batch_size * p.max_seq_len == 128 * 2048
    assert p.total_batch_size == 2**19 and p.eval_tokens == PROFILES["h100"].eval_tokens
    assert get_profile("gpu24@T1024@120s@20steps").name == "gpu24@T1024@120s@20steps"
    assert get_profile("ci@20steps@T32").name == "ci@T32@20steps"  # one spelling per experiment
    assert get_profile("mac8@T512").device_batch_size == 16
    with pytest.raises(ValueError, match="multiple of 8"):
        get_profile("h100@T1004")
    with pytest.raises(ValueError, match="not a whole number"):
        get_profile("ci@T2048")  # 1,024 tokens per step cannot hold one 2,048-token row
    with pytest.raises(ValueError, match="@T<length>"):
        get_profile("h100@X5")


def test_the_cli_validates_tier_names():
    click = pytest.importorskip("click")
    from common.cli import _check_profile

    assert _check_profile(None, None, "gpu24@T1024") == "gpu24@T1024"
    with pytest.raises(click.BadParameter, match="did you mean `--profile gpu24`"):
        _check_profile(None, None, "gpu242")


# -- the memory cap that benchmarks/tier_caps.py runs under ---------------------------------------------------------


def test_the_memory_cap_parses_and_is_a_no_op_without_cuda(monkeypatch):
    torch = pytest.importorskip("torch")
    from backends import torch_backend as tb

    set_calls = []
    monkeypatch.setattr(
        torch.cuda, "set_per_process_memory_fraction", lambda f, i=0: set_calls.append((f, i))
    )
    monkeypatch.delenv(tb.MEMORY_CAP_ENV, raising=False)
    assert tb.memory_cap_gib() is None and tb.apply_memory_cap() == ""
    for bad in ("abc", "0", "-3", "inf", "nan"):
        monkeypatch.setenv(tb.MEMORY_CAP_ENV, bad)
        with pytest.raises(ValueError, match="positive number of GiB"):
            tb.memory_cap_gib()
    monkeypatch.setenv(tb.MEMORY_CAP_ENV, " 24 ")
    assert tb.memory_cap_gib() == 24.0
    monkeypatch.setattr(tb, "detect", lambda: types.SimpleNamespace(type="cpu"))
    assert "not applied" in tb.apply_memory_cap() and set_calls == []
    # On CUDA it caps the allocator at that share of the card.
    monkeypatch.setattr(tb, "detect", lambda: types.SimpleNamespace(type="cuda"))
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(total_memory=80 * GIB)
    )
    assert "24 GiB: 0.3000 of the GPU's 80.0 GiB" in tb.apply_memory_cap()
    assert set_calls == [(0.3, 0)]
    monkeypatch.setenv(tb.MEMORY_CAP_ENV, "100")  # more than the card: the whole card
    tb.apply_memory_cap()
    assert set_calls[-1] == (1.0, 0)
