"""Tests for common/hardware.py: the recommendation rules on simulated machines, and one real probe of this one.

Run: .venv/bin/pytest tests/test_hardware.py
"""

from __future__ import annotations

import json
import sys
import types

import pytest

from common import hardware


def _off(detail: str = "absent") -> dict:
    return {"available": False, "device": None, "detail": detail}


def _simulate(
    monkeypatch,
    *,
    system="Linux",
    machine="x86_64",
    chip="Some CPU",
    mlx=None,
    torch=None,
    smi=None,
    triton=True,
):
    monkeypatch.setattr(
        hardware,
        "_system",
        lambda: {
            "platform": system,
            "machine": machine,
            "python": "3.11.0",
            "cpu_count": 8,
            "memory_gb": 32.0,
            "chip": chip,
        },
    )
    mlx = mlx or {**_off("mlx unusable: ImportError"), "metal": False, "cuda": False}
    torch = torch or {"version": None, "cuda_version": None, "gpus": [], "cuda": _off(), "mps": _off()}
    monkeypatch.setattr(hardware, "_probe_mlx", lambda: mlx)
    monkeypatch.setattr(hardware, "_probe_torch", lambda: torch)
    monkeypatch.setattr(hardware, "_probe_nvidia_smi", lambda: smi)
    monkeypatch.setattr(hardware, "cpu_speed", lambda *a: None)  # no timing of this machine's CPU
    monkeypatch.setattr(hardware, "_has_module", lambda name: triton)
    info = hardware.probe()
    assert json.loads(json.dumps(info)) == info
    _check_summary(info)
    return info


def _check_summary(info: dict) -> str:
    """summarize() says what the probe found: the machine, every GPU, every backend's verdict and detail, and the
    recommendation (or why nothing can run), each from the probe's dict."""
    text = hardware.summarize(info)
    lines = text.splitlines()
    machine = lines[0]
    assert machine.startswith("machine:")
    memory = f"{info['memory_gb']} GiB RAM" if info["memory_gb"] else "RAM unknown"
    for fact in (info["platform"], info["machine"], info["chip"], f"{info['cpu_count']} CPUs", memory):
        assert fact in machine, (fact, machine)
    assert machine.endswith(f"Python {info['python']}")
    gpus = lines[1]
    assert gpus.startswith("gpus:")
    assert gpus.split(None, 1)[1] == (
        ", ".join(f"{g['name']} ({g['memory_gb']} GiB)" for g in info["gpus"]) if info["gpus"] else "none"
    )
    assert [ln for ln in lines if ln.startswith("cuda:")] == (
        [f"cuda:     {info['cuda_version']}"] if info["cuda_version"] else []
    )
    for name, b in info["backends"].items():
        (row,) = [ln for ln in lines if ln.startswith("  ") and ln.split()[0] == name]
        assert row.split()[1:3] == ["yes" if b["available"] else "no", b["device"] or "-"], row
        assert row.endswith(b["detail"]), row
    rec = info["recommended"]
    if info["ready"]:
        want = f"recommended: --backend {rec['backend']} --profile {rec['profile']}  ({rec['reason']})"
    else:
        want = f"NOT READY: {rec['reason']}"
    assert lines[-1] == want
    return text


def _mlx(metal=False, cuda=False) -> dict:
    device = "gpu" if metal or cuda else "cpu"
    return {"available": True, "device": device, "detail": "mlx 0.32: test", "metal": metal, "cuda": cuda}


def _torch(gpus=(), mps=False) -> dict:
    cuda = {"available": True, "device": "cuda", "detail": "test"} if gpus else _off("CPU-only build")
    return {
        "version": "2.13",
        "cuda_version": "12.8" if gpus else None,
        "gpus": list(gpus),
        "cuda": cuda,
        "mps": {"available": mps, "device": "mps" if mps else None, "detail": "test"},
    }


def test_no_backend_is_not_ready(monkeypatch):
    info = _simulate(monkeypatch)
    assert info["ready"] is False
    assert info["recommended"]["backend"] is None
    assert not any(b["available"] for b in info["backends"].values())
    assert "NOT READY" in hardware.summarize(info)


def test_apple_silicon_with_mlx_metal(monkeypatch):
    info = _simulate(
        monkeypatch,
        system="Darwin",
        machine="arm64",
        chip="Apple M3 Pro",
        mlx=_mlx(metal=True),
        torch=_torch(mps=True),
    )
    assert info["ready"]
    # 32 GB of RAM, no working set from MLX (a simulated one): 75% of it picks the 32 GB tier
    assert info["recommended"]["backend"] == "mlx" and info["recommended"]["profile"] == "mac32"
    assert info["recommended"]["memory"]["source"] == "75% of 32 GiB RAM"
    assert info["backends"]["mlx"]["device"] == "gpu"
    assert "Apple M3 Pro" in info["gpus"][0]["name"]


def test_apple_silicon_without_mlx_uses_mps(monkeypatch):
    info = _simulate(monkeypatch, system="Darwin", machine="arm64", chip="Apple M1", torch=_torch(mps=True))
    assert info["recommended"]["backend"] == "mps" and info["recommended"]["profile"] == "mac32"
    assert (
        info["recommended"]["memory"]["twin"] == "torch" and "torch mps peak" in info["recommended"]["reason"]
    )


def test_nvidia_big_gpu(monkeypatch):
    info = _simulate(
        monkeypatch, mlx=_mlx(), torch=_torch(gpus=[{"name": "NVIDIA H100 80GB HBM3", "memory_gb": 79.2}])
    )
    assert info["recommended"]["backend"] == "cuda" and info["recommended"]["profile"] == "h100"
    assert info["cuda_version"] == "12.8"
    assert "H100" in info["recommended"]["reason"]


def test_nvidia_small_gpu(monkeypatch):
    info = _simulate(monkeypatch, torch=_torch(gpus=[{"name": "NVIDIA GeForce RTX 4090", "memory_gb": 23.6}]))
    assert info["recommended"]["backend"] == "cuda" and info["recommended"]["profile"] == "gpu24"


def test_cpu_only(monkeypatch):
    info = _simulate(monkeypatch, mlx=_mlx(), torch=_torch())
    assert info["recommended"] == {
        "backend": "mlx",
        "profile": "cpu",
        "reason": info["recommended"]["reason"],
    }
    assert info["backends"]["cpu"]["available"]
    info = _simulate(monkeypatch, torch=_torch())
    assert info["recommended"]["backend"] == "cpu" and info["recommended"]["profile"] == "cpu"
    assert info["ready"]


def test_gpu_seen_by_nvidia_smi_but_not_torch(monkeypatch):
    smi = {"gpus": [{"name": "NVIDIA A100-SXM4-80GB", "memory_gb": 80.0}], "cuda_version": "12.4"}
    info = _simulate(monkeypatch, torch=_torch(), smi=smi)
    assert info["gpus"] == smi["gpus"] and info["cuda_version"] == "12.4"
    assert info["recommended"]["backend"] == "cpu"
    assert "CUDA build of torch" in info["recommended"]["reason"]


def test_missing_or_broken_frameworks_do_not_crash(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlx", None)  # `import mlx.core` now raises ImportError
    monkeypatch.setitem(sys.modules, "mlx.core", None)
    mlx = hardware._probe_mlx()
    assert mlx["available"] is False and "mlx unusable" in mlx["detail"]
    monkeypatch.setitem(sys.modules, "torch", None)
    torch = hardware._probe_torch()
    assert (
        torch["version"] is None
        and not torch["cuda"]["available"]
        and "torch unusable" in torch["cuda"]["detail"]
    )
    # A torch that imports but is broken inside (no torch.version, no torch.cuda).
    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))
    torch = hardware._probe_torch()
    assert not torch["cuda"]["available"] and "failed" in torch["cuda"]["detail"]
    assert not torch["mps"]["available"] and "failed" in torch["mps"]["detail"]


def test_real_probe_on_this_machine():
    pytest.importorskip("mlx.core")
    pytest.importorskip("torch")
    info = hardware.probe()
    assert json.loads(json.dumps(info)) == info
    assert info["backends"]["mlx"]["available"] and info["backends"]["cpu"]["available"]
    assert info["ready"] and info["recommended"]["backend"] in ("mlx", "cuda", "mps", "cpu")
    from common.profiles import PROFILES

    assert info["recommended"]["profile"] in PROFILES
    assert info["cpu_count"] >= 1 and info["chip"]
    print("\n" + _check_summary(info))
