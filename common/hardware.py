"""What can train here: the logic behind `autoresearch check-hardware`.

probe() looks at the machine (OS, CPU or Apple chip, memory, NVIDIA GPUs) and at each backend (MLX, torch CUDA,
torch MPS, CPU), then recommends a backend and a profile with a one-line reason; on a GPU the profile is the
tier that its memory picks (the GPU's, or on Apple Silicon the share of unified memory MLX may use) and whose
estimated peak fits it (common/profiles.py pick_tier, common/memory.py). It imports torch and mlx inside
functions, never at module top, and survives either being missing or broken: the error goes into that backend's
`detail` instead of a traceback. Where only the CPU can train and both frameworks run, it times the model's matmuls
in each (once per machine, cached in $AUTORESEARCH_HOME) and recommends the faster; advice() lists what would make
this machine faster.

Run: autoresearch check-hardware        (JSON on stdout, summary on stderr)
     autoresearch doctor                (what would make this machine faster)
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
import time

from common.profiles import APPLE_WORKING_SET, pick_tier

OPENBLAS_ENV = "AUTORESEARCH_OPENBLAS"  # the OpenBLAS that MLX gets preloaded (tests: a missing file)
OPENBLAS_FIX = "sudo apt-get install libopenblas0-pthread"
SPEED_FILE = "cpu_speed.json"  # in $AUTORESEARCH_HOME: the last 8 timings, keyed by what they depend on
# torch on the CPU is recommended over MLX only when its matmuls are this much faster: at equal matmul speed MLX's
# compiled step trains faster (a 2-core x86 box, cpu profile: MLX 4.3-5.0K tokens/s, torch ~3.6K; README).
TORCH_CPU_MARGIN = 1.5
LOW_DISK_GB = 5.0  # below this much free space where data goes, doctor says so


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
            "working_set_gb": _working_set_gb(mx) if metal else None,
        }
    except Exception as e:  # ImportError, or a broken build failing anywhere above
        return {
            "available": False,
            "device": None,
            "detail": f"mlx unusable: {type(e).__name__}: {e}",
            "metal": False,
            "cuda": False,
        }


def _working_set_gb(mx) -> float | None:
    """The unified memory Metal recommends MLX keep resident (max_recommended_working_set_size), in GiB."""
    for info in (getattr(mx, "device_info", None), getattr(mx.metal, "device_info", None)):
        try:
            size = info and dict(info()).get("max_recommended_working_set_size")
        except (AttributeError, RuntimeError, TypeError):
            size = None
        if size:
            return round(int(size) / 2**30, 1)
    return None


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
                out["gpus"].append(
                    {
                        "name": props.name,
                        "memory_gb": round(props.total_memory / 2**30, 1),
                        "capability": f"{props.major}.{props.minor}",
                    }
                )
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


def openblas_path() -> str:
    """Debian's OpenBLAS, which the harness preloads for MLX's Linux CPU build ($AUTORESEARCH_OPENBLAS overrides)."""
    default = f"/usr/lib/{platform.machine()}-linux-gnu/openblas-pthread/libblas.so.3"
    return os.environ.get(OPENBLAS_ENV) or default


def _has_module(name: str) -> bool:
    from importlib.util import find_spec

    try:
        return find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _installed(dist: str) -> bool:
    from importlib import metadata

    try:
        metadata.version(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


def mlx_cpu_build() -> bool:
    """MLX from the `mlx[cpu]` wheel on Linux, whose matmuls run on the BLAS it finds (not the CUDA build)."""
    if sys.platform != "linux" or not _installed("mlx-cpu"):
        return False
    return not any(_installed(d) for d in ("mlx-cuda", "mlx-cuda-12", "mlx-cuda-13"))


def reference_blas() -> bool:
    """True where MLX's CPU build would run on its bundled reference BLAS: no OpenBLAS to preload."""
    return mlx_cpu_build() and not os.path.exists(openblas_path())


REFERENCE_BLAS_WARNING = (
    "warning: MLX's Linux CPU build runs on its bundled reference BLAS here (no OpenBLAS at {path}): ~20x slower "
    "matmuls. Fix: `{fix}` (the harness then preloads it); until then torch (--backend cpu) is faster."
)
_warned: set[str] = set()


def warn_reference_blas() -> None:
    """Say once per command (process) that MLX's CPU build is on its slow reference BLAS here, with the fix."""
    if "blas" not in _warned and reference_blas():
        _warned.add("blas")
        print(
            REFERENCE_BLAS_WARNING.format(path=openblas_path(), fix=OPENBLAS_FIX), file=sys.stderr, flush=True
        )


# The cpu profile's matmuls at a quarter of its 4096 rows (16 x 256 tokens): model dim 128 (depth 2), the MLP's
# 4x and the lm head's 8192-token vocabulary; ~2.4 GFLOP a round, under a second even on a reference BLAS.
_SPEED_SCRIPT = r"""
import json, sys, time
fw, shapes = sys.argv[1], [(1024, 128, 512), (1024, 512, 128), (1024, 128, 8192)]
if fw == "mlx":
    import mlx.core as mx
    mx.set_default_device(mx.cpu)
    pairs = [(mx.random.normal((m, k)), mx.random.normal((k, n))) for m, k, n in shapes]
    mx.eval(pairs)
    run = lambda: mx.eval([a @ b for a, b in pairs])
else:
    import torch
    pairs = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]
    run = lambda: [a @ b for a, b in pairs]
run()
best, t_end = float("inf"), time.perf_counter() + 0.5
while best == float("inf") or time.perf_counter() < t_end:  # the best round: other load only slows rounds down
    t0 = time.perf_counter()
    run()
    best = min(best, time.perf_counter() - t0)
print(json.dumps({"gflops": round(sum(2 * m * k * n for m, k, n in shapes) / best / 1e9, 1)}))
"""


def _time_matmuls(framework: str, preload: str | None) -> float | None:
    """GFLOP/s of the model's float32 matmuls in `framework` on the CPU, in a fresh process (MLX with the OpenBLAS
    preload as the harness runs it); None if it fails."""
    env = dict(os.environ)
    if preload:
        env["LD_PRELOAD"] = preload
    try:
        out = subprocess.run(
            [sys.executable, "-c", _SPEED_SCRIPT, framework],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        return float(json.loads(out.stdout.strip().splitlines()[-1])["gflops"])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError, KeyError):
        return None


def cpu_speed(info: dict, torch_version: str | None, mlx_detail: str) -> dict | None:
    """Measured matmul GFLOP/s of MLX (as the harness runs it) and torch on this CPU: {mlx, torch, blas, seconds,
    shapes}. Cached per machine in $AUTORESEARCH_HOME/cpu_speed.json, keyed by the chip, the versions and the BLAS,
    so it is measured once (a few seconds)."""
    from common.paths import home

    preload = openblas_path() if mlx_cpu_build() and os.path.exists(openblas_path()) else None
    blas = "openblas" if preload else "reference" if mlx_cpu_build() else "bundled"
    key = {
        "chip": info["chip"], "cpu_count": info["cpu_count"], "python": info["python"],
        "torch": torch_version, "mlx": mlx_detail.split(":")[0], "preload": preload,
    }  # fmt: skip
    cache = home() / SPEED_FILE
    try:
        entries = list(json.loads(cache.read_text())["entries"])
        for entry in entries:
            if entry["key"] == key:
                return entry["speed"]
    except (OSError, ValueError, KeyError, TypeError):
        entries = []
    print(
        f"check-hardware: timing float32 matmuls in MLX and torch on this CPU, once (cached in {cache})",
        file=sys.stderr, flush=True,
    )  # fmt: skip
    t0 = time.time()
    mlx, torch = _time_matmuls("mlx", preload), _time_matmuls("torch", None)
    if mlx is None or torch is None:
        return None
    speed = {
        "mlx_gflops": mlx, "torch_gflops": torch, "mlx_blas": blas, "seconds": round(time.time() - t0, 1),
        "what": "float32 matmuls of the cpu profile's model (1024 x 128 @ 128 x 512, 512 x 128, 128 x 8192)",
    }  # fmt: skip
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{SPEED_FILE}.{os.getpid()}.tmp")
        entries = [*entries[-7:], {"key": key, "speed": speed}]  # with and without OpenBLAS, other versions
        tmp.write_text(json.dumps({"entries": entries}, indent=1) + "\n")
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only home: measure again next time
    return speed


def backend_problem(backend: str) -> str | None:
    """Why `backend` (mlx, cuda, mps, cpu) cannot run here, in check-hardware's words; None if it can. Cheap enough to
    ask before every run: it imports torch for cuda and mps only, and creates no GPU context."""
    from importlib.util import find_spec

    if backend == "mlx":
        return None if find_spec("mlx") else "mlx is not installed (`pip install -e .` brings it)"
    if find_spec("torch") is None:
        return "torch is not installed (`pip install -e .` brings it)"
    if backend not in ("cuda", "mps"):
        return None
    try:
        import torch

        if backend == "cuda":
            if torch.cuda.is_available():
                return None
            smi = _probe_nvidia_smi()
            seen = (
                f"nvidia-smi sees {smi['gpus'][0]['name']}"
                if smi and smi["gpus"]
                else "no NVIDIA GPU was found"
            )
            if torch.version.cuda:
                return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU, and {seen}"
            fix = ": install a CUDA build of torch (https://pytorch.org/get-started/locally/)" if smi else ""
            return f"torch {torch.__version__} is a CPU-only build and {seen}{fix}"
        if torch.backends.mps.is_available():
            return None
        if platform.system() == "Darwin":
            return f"torch {torch.__version__} sees no MPS device on this Mac"
        return (
            "MPS is the GPU of Apple Silicon Macs; this is a "
            + f"{platform.system()} {platform.machine()} machine"
        )
    except Exception as e:  # a broken install
        return f"torch unusable: {type(e).__name__}: {e}"


def gpu_memory(info: dict) -> dict | None:
    """The memory that picks a GPU tier, and where it comes from: the largest NVIDIA GPU's (torch or nvidia-smi), or
    on Apple Silicon the share of unified memory MLX may use (Metal's recommended working set, else 75% of RAM)."""
    unified = [g for g in info["gpus"] if "unified memory" in g["name"]]
    if unified or (info["platform"] == "Darwin" and info["machine"] == "arm64"):
        ws = unified and unified[0].get("working_set_gb")
        if ws:
            return {"hardware": "apple", "gib": ws, "source": "Metal's recommended working set (MLX)"}
        ram = info.get("memory_gb") or 0.0
        return {
            "hardware": "apple",
            "gib": round(APPLE_WORKING_SET * ram, 1),
            "source": f"{APPLE_WORKING_SET:.0%} of {ram:g} GiB RAM",
        }
    if info["gpus"]:
        big = max(info["gpus"], key=lambda g: g["memory_gb"] or 0.0)
        return {"hardware": "nvidia", "gib": big["memory_gb"] or 0.0, "source": "the GPU's memory"}
    return None


def choose_profile(info: dict, backend: str) -> dict:
    """{profile, reason, memory} for a GPU backend (cuda, mlx on a GPU, mps): the largest tier that this machine's
    memory reaches and whose estimated peak fits it, for the twin that will run (common.profiles.pick_tier)."""
    mem = gpu_memory(info) or {"hardware": "nvidia", "gib": 0.0, "source": "no GPU memory reported"}
    apple = mem["hardware"] == "apple"
    twin = "torch" if backend in ("cuda", "mps") else "mlx"
    device = "metal" if apple and twin == "mlx" else backend if twin == "torch" else "cuda"
    compiled = backend == "cuda" and bool(info.get("triton", True))
    profile, why = pick_tier(mem["hardware"], mem["gib"], twin, device, compiled)
    if backend == "cuda" and not compiled:
        why += "; no Triton (e.g. Windows): the torch twin runs uncompiled"
    memory = {**mem, "tier": profile.name, "twin": twin, "device": device, "compiled": compiled}
    return {"profile": profile.name, "reason": f"{mem['source']}: {why}", "memory": memory}


def recommend(info: dict) -> dict:
    """The backend and profile to use by default here, and why (DESIGN.md: `auto`). On a GPU the profile is the
    tier its memory picks, and `memory` says from what."""
    b = info["backends"]
    apple = info["platform"] == "Darwin" and info["machine"] == "arm64"
    if b["mlx"]["available"] and b["mlx"].get("metal"):
        tier = choose_profile(info, "mlx")
        reason = f"Apple Silicon ({info['chip']}) with MLX on Metal; {tier['reason']}"
        return {"backend": "mlx", "profile": tier["profile"], "reason": reason, "memory": tier["memory"]}
    if b["cuda"]["available"]:
        tier = choose_profile(info, "cuda")
        reason = f"NVIDIA GPU {info['gpus'][0]['name']}; {tier['reason']}"
        return {"backend": "cuda", "profile": tier["profile"], "reason": reason, "memory": tier["memory"]}
    if b["mlx"]["available"] and b["mlx"].get("cuda"):
        tier = choose_profile(info, "mlx")
        reason = f"MLX on a CUDA GPU (torch sees no GPU); {tier['reason']}"
        return {"backend": "mlx", "profile": tier["profile"], "reason": reason, "memory": tier["memory"]}
    if apple and b["mps"]["available"]:
        tier = choose_profile(info, "mps")
        reason = f"Apple Silicon ({info['chip']}) via torch MPS: MLX is not usable; {tier['reason']}"
        return {"backend": "mps", "profile": tier["profile"], "reason": reason, "memory": tier["memory"]}
    gpu_note = (
        "; an NVIDIA GPU is present but torch has no CUDA: install a CUDA build of torch"
        if info["gpus"]
        else ""
    )
    speed = info.get("cpu_speed")
    if b["mlx"]["available"] and speed:
        mlx, torch = speed["mlx_gflops"], speed["torch_gflops"]
        measured = (
            f"measured float32 matmuls: torch {torch:g} GFLOP/s, MLX {mlx:g} ({speed['mlx_blas']} BLAS)"
        )
        if torch > TORCH_CPU_MARGIN * mlx:
            fix = f"; `{OPENBLAS_FIX}` would speed MLX up" if speed["mlx_blas"] == "reference" else ""
            reason = f"no usable GPU: torch on the CPU is faster here ({measured}{fix})"
            return {"backend": "cpu", "profile": "cpu", "reason": reason + gpu_note}
        reason = (
            f"no usable GPU: MLX on the CPU ({measured}; MLX's compiled step wins unless torch's matmuls are "
            f"{TORCH_CPU_MARGIN:g}x faster)"
        )
        return {"backend": "mlx", "profile": "cpu", "reason": reason + gpu_note}
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


def probe(measure: bool = True) -> dict:
    """JSON-able: {platform, machine, python, cpu_count, memory_gb, chip, gpus: [{name, memory_gb (GiB; on Apple
    also working_set_gb)}], cuda_version, torch_version, triton, backends: {mlx, cuda, mps, cpu: {available, device,
    detail}}, cpu_speed (where only the CPU can train and both frameworks run, unless measure=False; else null),
    recommended: {backend, profile, reason, memory (on a GPU: {hardware, gib, source, tier, twin, device,
    compiled})}, ready}."""
    info = _system()
    mlx = _probe_mlx()
    tor = _probe_torch()
    gpus, cuda_version = tor["gpus"], tor["cuda_version"]
    if not gpus:
        smi = _probe_nvidia_smi()
        if smi:
            gpus, cuda_version = smi["gpus"], cuda_version or smi["cuda_version"]
    if mlx.get("metal") and not gpus:
        gpus = [
            {
                "name": f"{info['chip']} GPU (unified memory)",
                "memory_gb": info["memory_gb"],
                "working_set_gb": mlx.get("working_set_gb"),
            }
        ]
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
    info["torch_version"] = tor["version"]
    info["triton"] = _has_module("triton")  # torch.compile's: without it (e.g. Windows) the twin runs eager
    info["cpu_speed"] = None
    cpu_only = not (
        tor["cuda"]["available"] or mlx.get("metal") or mlx.get("cuda") or tor["mps"]["available"]
    )
    if measure and cpu_only and mlx["available"] and tor["version"]:
        info["cpu_speed"] = cpu_speed(info, tor["version"], mlx["detail"])
    info["recommended"] = recommend(info)
    info["ready"] = info["recommended"]["backend"] is not None
    info["advice"] = advice(info)
    return info


def advice(info: dict) -> list[dict]:
    """What would make this machine faster or safer to run on: [{what, fix}], for `autoresearch doctor`."""
    out = []
    if reference_blas():
        out.append(
            {
                "what": f"MLX's Linux CPU build runs on its reference BLAS (no {openblas_path()}): ~20x slower matmuls",
                "fix": OPENBLAS_FIX,
            }
        )
    b = info["backends"]
    if (
        info["platform"] == "Darwin"
        and info["machine"] == "x86_64"
        and _run(["sysctl", "-n", "sysctl.proc_translated"]) == "1"
    ):
        out.append(
            {
                "what": "this Python is x86_64 under Rosetta on Apple Silicon: MLX and MPS cannot use the GPU",
                "fix": "install an arm64 Python (e.g. from python.org or `brew install python`) and reinstall",
            }
        )
    elif info["platform"] == "Darwin" and info["machine"] == "arm64" and not b["mlx"]["available"]:
        out.append({"what": "MLX is not usable on this Apple Silicon Mac", "fix": "pip install -U mlx"})
    nvidia = [g for g in info["gpus"] if "unified memory" not in g["name"]]
    if nvidia and not b["cuda"]["available"] and info.get("torch_version"):
        out.append(
            {
                "what": f"an NVIDIA GPU ({nvidia[0]['name']}) is present but {b['cuda']['detail']}",
                "fix": "install a CUDA build of torch: https://pytorch.org/get-started/locally/",
            }
        )
    fast_attention = [g for g in nvidia if str(g.get("capability", "")).split(".")[0] in ("9", "10")]
    if fast_attention and b["cuda"]["available"] and not _installed("flash-attn-4"):
        out.append(
            {
                "what": f"{fast_attention[0]['name']} (Hopper/Blackwell) without FlashAttention-4",
                "fix": 'pip install -e ".[cuda]"',
            }
        )
    disk = _free_gb_where_data_goes()
    if disk and disk[1] < LOW_DISK_GB:
        out.append(
            {
                "what": f"only {disk[1]:.1f} GB free at {disk[0]}, where prepared data goes",
                "fix": "free some space, or point $AUTORESEARCH_HOME (or prepare's --data-dir) at a bigger disk",
            }
        )
    return out


def _free_gb_where_data_goes() -> tuple[str, float] | None:
    from common.paths import home

    path = home()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return str(path), shutil.disk_usage(path).free / 1e9
    except OSError:
        return None


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
    speed = info.get("cpu_speed")
    if speed:
        lines.append(
            f"cpu speed: torch {speed['torch_gflops']:g} GFLOP/s, MLX {speed['mlx_gflops']:g} GFLOP/s "
            f"({speed['mlx_blas']} BLAS; float32 matmuls of the cpu profile's model)"
        )
    for item in info.get("advice", []):
        lines.append(f"faster:   {item['what']}: {item['fix']}")
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
