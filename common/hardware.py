"""What can train here: the logic behind `autoresearch check-hardware`.

probe() looks at the machine (OS, CPU or Apple chip, memory, NVIDIA GPUs) and at each backend (MLX, torch CUDA,
torch MPS, CPU), then recommends a backend and a profile with a one-line reason. It imports torch and mlx inside
functions, never at module top, and survives either being missing or broken: the error goes into that backend's
`detail` instead of a traceback.

Run: autoresearch check-hardware        (JSON on stdout, summary on stderr)
     python -m common.hardware
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys

H100_MIN_GB = 70.0  # an 80 GB card reports ~79 GiB; a 40/48 GB card is a "laptop"-tier GPU for our profiles


def _run(cmd: list[str], timeout: float = 5.0) -> str | None:
    """A command's stdout, or None if it is missing, fails or hangs (a wedged driver must not hang the probe)."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        mem = _run(["sysctl", "-n", "hw.memsize"])  # macOS spelling, should sysconf not know
        return round(int(mem) / 2**30, 1) if mem and mem.isdigit() else None


def chip_name() -> str:
    """The CPU or Apple chip's marketing name ("Apple M3 Max", "AMD EPYC 7R13 ..."); also the device name that
    the backends report when they run on the CPU."""
    if platform.system() == "Darwin":
        name = _run(["sysctl", "-n", "machdep.cpu.brand_string"])
        if name:
            return name
    try:
        with open("/proc/cpuinfo") as f:
            cpuinfo = f.read()
        m = re.search(r"^(?:model name|Hardware|Model)\s*:\s*(.+)$", cpuinfo, re.M)
        if m:
            return m.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _system() -> dict:
    return {
        "platform": platform.system(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "chip": chip_name(),
    }


def _probe_mlx() -> dict:
    """MLX's backend entry, plus whether its GPU is Metal (Apple) or CUDA."""
    try:
        import mlx.core as mx

        metal = bool(mx.metal.is_available())
        cuda = bool(getattr(mx, "cuda", None) and mx.cuda.is_available())
        mx.eval(mx.arange(4).sum())  # an install that imports but cannot compute is not available
        device = "gpu" if metal or cuda else "cpu"
        where = "Metal GPU" if metal else "CUDA GPU" if cuda else "CPU only (no Metal or CUDA)"
        return {
            "available": True,
            "device": device,
            "detail": f"mlx {mx.__version__}: {where}",
            "metal": metal,
            "cuda": cuda,
        }
    except Exception as e:  # ImportError, or a broken build failing anywhere above
        return {
            "available": False,
            "device": None,
            "detail": f"mlx unusable: {type(e).__name__}: {e}",
            "metal": False,
            "cuda": False,
        }


def _probe_torch() -> dict:
    """torch's version, its CUDA and MPS backend entries, and the CUDA GPUs it sees."""
    out = {
        "version": None,
        "cuda_version": None,
        "gpus": [],
        "cuda": {"available": False, "device": None, "detail": ""},
        "mps": {"available": False, "device": None, "detail": ""},
    }
    try:
        import torch
    except Exception as e:
        msg = f"torch unusable: {type(e).__name__}: {e}"
        out["cuda"]["detail"] = out["mps"]["detail"] = msg
        return out
    out["version"] = getattr(torch, "__version__", "?")
    try:
        out["cuda_version"] = torch.version.cuda
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                out["gpus"].append({"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1)})
            names = ", ".join(g["name"] for g in out["gpus"])
            out["cuda"] = {
                "available": True,
                "device": "cuda",
                "detail": f"torch {out['version']}, CUDA {out['cuda_version']}: {names}",
            }
        elif out["cuda_version"]:
            out["cuda"]["detail"] = (
                f"torch {out['version']} is built for CUDA {out['cuda_version']} but sees no GPU"
            )
        else:
            out["cuda"]["detail"] = f"torch {out['version']} is a CPU-only build"
    except Exception as e:
        out["cuda"]["detail"] = f"torch CUDA check failed: {type(e).__name__}: {e}"
    try:
        mps = torch.backends.mps.is_available()
        out["mps"] = {
            "available": bool(mps),
            "device": "mps" if mps else None,
            "detail": f"torch {out['version']}: " + ("Apple GPU via MPS" if mps else "no MPS device"),
        }
    except Exception as e:
        out["mps"]["detail"] = f"torch MPS check failed: {type(e).__name__}: {e}"
    return out


def _probe_nvidia_smi() -> dict | None:
    """GPUs and the driver's CUDA version from nvidia-smi, for when torch cannot see them (a CPU-only torch)."""
    if not shutil.which("nvidia-smi"):
        return None
    rows = _run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"])
    if rows is None:
        return None
    gpus = []
    for row in rows.splitlines():
        name, _, mib = row.rpartition(",")
        try:
            gpus.append({"name": name.strip(), "memory_gb": round(float(mib) / 1024, 1)})
        except ValueError:
            continue
    m = re.search(r"CUDA Version:\s*([\d.]+)", _run(["nvidia-smi"]) or "")
    return {"gpus": gpus, "cuda_version": m.group(1) if m else None}


def recommend(info: dict) -> dict:
    """The backend and profile to use by default here, and why (DESIGN.md: `auto`)."""
    b = info["backends"]
    apple = info["platform"] == "Darwin" and info["machine"] == "arm64"
    if b["mlx"]["available"] and b["mlx"].get("metal"):
        return {
            "backend": "mlx",
            "profile": "laptop",
            "reason": f"Apple Silicon ({info['chip']}) with MLX on Metal",
        }
    big = max((g["memory_gb"] or 0.0 for g in info["gpus"]), default=0.0)
    profile = "h100" if big >= H100_MIN_GB else "laptop"
    size = f"{big:.0f} GiB {'>=' if profile == 'h100' else '<'} {H100_MIN_GB:.0f}"
    if b["cuda"]["available"]:
        return {
            "backend": "cuda",
            "profile": profile,
            "reason": f"NVIDIA GPU {info['gpus'][0]['name']} ({size} GiB)",
        }
    if b["mlx"]["available"] and b["mlx"].get("cuda"):
        return {
            "backend": "mlx",
            "profile": profile,
            "reason": f"MLX on a CUDA GPU ({size} GiB; torch sees no GPU)",
        }
    if apple and b["mps"]["available"]:
        return {
            "backend": "mps",
            "profile": "laptop",
            "reason": f"Apple Silicon ({info['chip']}) via torch MPS: MLX is not usable",
        }
    gpu_note = (
        "; an NVIDIA GPU is present but torch has no CUDA: install a CUDA build of torch"
        if info["gpus"]
        else ""
    )
    if b["mlx"]["available"]:
        return {"backend": "mlx", "profile": "cpu", "reason": "no usable GPU: MLX on the CPU" + gpu_note}
    if b["cpu"]["available"]:
        return {
            "backend": "cpu",
            "profile": "cpu",
            "reason": "no usable GPU and no MLX: torch on the CPU" + gpu_note,
        }
    return {
        "backend": None,
        "profile": None,
        "reason": "neither torch nor mlx can run: reinstall with `pip install -e .` (see the details above)",
    }


def probe() -> dict:
    """JSON-able: {platform, machine, python, cpu_count, memory_gb, chip, gpus: [{name, memory_gb}], cuda_version,
    backends: {mlx, cuda, mps, cpu: {available, device, detail}}, recommended: {backend, profile, reason}, ready}."""
    info = _system()
    mlx = _probe_mlx()
    tor = _probe_torch()
    gpus, cuda_version = tor["gpus"], tor["cuda_version"]
    if not gpus:
        smi = _probe_nvidia_smi()
        if smi:
            gpus, cuda_version = smi["gpus"], cuda_version or smi["cuda_version"]
    if mlx.get("metal") and not gpus:
        gpus = [{"name": f"{info['chip']} GPU (unified memory)", "memory_gb": info["memory_gb"]}]
    on_cpu = [f"torch {tor['version']}"] if tor["version"] else []
    on_cpu += [mlx["detail"].split(":")[0]] if mlx["available"] else []
    cpu = {
        "available": bool(on_cpu),
        "device": "cpu" if on_cpu else None,
        "detail": ("runs on the CPU: " + ", ".join(on_cpu)) if on_cpu else "neither torch nor mlx imports",
    }
    info.update(
        gpus=gpus,
        cuda_version=cuda_version,
        backends={
            "mlx": {k: mlx[k] for k in ("available", "device", "detail", "metal", "cuda")},
            "cuda": tor["cuda"],
            "mps": tor["mps"],
            "cpu": cpu,
        },
    )
    info["recommended"] = recommend(info)
    info["ready"] = info["recommended"]["backend"] is not None
    return info


def summarize(info: dict) -> str:
    """A few lines for a person (stderr); the JSON is for programs."""
    mem = f"{info['memory_gb']} GiB RAM" if info.get("memory_gb") else "RAM unknown"
    lines = [
        f"machine:  {info['platform']} {info['machine']}, {info['chip']}, {info['cpu_count']} CPUs, {mem}, Python {info['python']}",
        "gpus:     " + (", ".join(f"{g['name']} ({g['memory_gb']} GiB)" for g in info["gpus"]) or "none"),
    ]
    if info.get("cuda_version"):
        lines.append(f"cuda:     {info['cuda_version']}")
    for name, b in info["backends"].items():
        mark = "yes" if b["available"] else "no "
        lines.append(f"  {name:<5} {mark} {b['device'] or '-':<5} {b['detail']}")
    rec = info["recommended"]
    if info["ready"]:
        lines.append(f"recommended: --backend {rec['backend']} --profile {rec['profile']}  ({rec['reason']})")
    else:
        lines.append(f"NOT READY: {rec['reason']}")
    return "\n".join(lines)


if __name__ == "__main__":
    result = probe()
    print(json.dumps(result, indent=2))
    print(summarize(result), file=sys.stderr)
    sys.exit(0 if result["ready"] else 1)
