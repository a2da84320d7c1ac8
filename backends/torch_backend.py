"""PyTorch glue for train_torch.py (fixed harness): device choice, compute dtype, sync, peak memory, numpy <-> tensor,
the eval adapter for common.evaluate and weight export/import under the canonical names.

    from backends import torch_backend as tb
    dev = tb.detect()            # cuda, then mps, then cpu; $AUTORESEARCH_BACKEND=cuda|mps|cpu overrides
    print(dev.reason)

Nothing is probed at import: the first detect() call decides, once, and every device branch lives in this file.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.evaluate import padded_chunks
from common.hardware import chip_name
from common.weights import check_weights

ENV = "AUTORESEARCH_BACKEND"
CHOICES = ("cuda", "mps", "cpu")
MEMORY_CAP_ENV = "AUTORESEARCH_MEMORY_CAP_GB"  # GiB: the CUDA allocator capped like a smaller card


@dataclass(frozen=True)
class Device:
    type: str  # cuda | mps | cpu
    device: torch.device
    reason: str  # why this device was chosen, printed at startup
    dtype: torch.dtype  # compute dtype: bf16 on CUDA, float32 elsewhere (bf16 matmuls are slow on CPU)
    compile: bool  # torch.compile + FlexAttention (CUDA with Triton only)
    compile_reason: str


def _has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def detect() -> Device:
    """The device train_torch.py runs on, decided once per process."""
    want = os.environ.get(ENV, "").strip().lower()
    if want in ("", "auto"):
        if torch.cuda.is_available():
            kind, reason = "cuda", "a CUDA GPU is available"  # no device query: that would create a context
        elif torch.backends.mps.is_available():
            kind, reason = "mps", "no CUDA GPU; Apple MPS is available"
        else:
            kind, reason = "cpu", "no CUDA GPU and no Apple MPS"
    elif want in CHOICES:
        kind, reason = want, f"${ENV}={want}"
        if want == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"${ENV}=cuda but torch sees no CUDA GPU: unset it or install a CUDA build of torch"
            )
        if want == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError(
                f"${ENV}=mps but MPS is not available here: unset it to pick a device automatically"
            )
    elif want == "mlx":
        raise RuntimeError(f"${ENV}=mlx is train_mlx.py's backend: run that script, or set cuda|mps|cpu")
    else:
        raise RuntimeError(f"${ENV}={want!r}: choose one of {', '.join(CHOICES)} (or unset it)")
    if kind == "cuda":
        ok = _has_triton()
        why = (
            "torch.compile + FlexAttention"
            if ok
            else "no Triton here (e.g. Windows): running uncompiled, slower"
        )
        return Device(kind, torch.device("cuda"), reason, torch.bfloat16, ok, why)
    why = "eager float32 (compile is for CUDA only)"
    return Device(kind, torch.device(kind), reason, torch.float32, False, why)


def __getattr__(name: str):
    # Lazy module constants: `tb.COMPUTE_DTYPE`, `tb.DEVICE` resolve on first use, not at import.
    if name == "COMPUTE_DTYPE":
        return detect().dtype
    if name == "DEVICE":
        return detect().device
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------------------------
# The device branches, collapsed here


def sync() -> None:
    """Wait for the device's queued work (timing points only; the training loop never calls it per step)."""
    kind = detect().type
    if kind == "cuda":
        torch.cuda.synchronize()
    elif kind == "mps":
        torch.mps.synchronize()


def autocast():
    """bf16 autocast on CUDA (float32 master weights, bf16 matmuls); nothing elsewhere (float32 throughout)."""
    dev = detect()
    if dev.dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(dev.type, dtype=dev.dtype)


def setup() -> None:
    """Process-wide settings: TF32 for the few float32 matmuls left under autocast, and $AUTORESEARCH_MEMORY_CAP_GB's
    cap on the CUDA allocator. Prints which attention kernels will run (backends/torch_kernels.py)."""
    from backends.torch_kernels import describe

    if detect().type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cap = apply_memory_cap()
    if cap:
        print(cap, flush=True)
    print(describe(detect().device), flush=True)


def memory_cap_gib() -> float | None:
    """$AUTORESEARCH_MEMORY_CAP_GB as a number of GiB, None where it is unset; a value that is not a positive number
    fails loudly (a mistyped cap must not prove anything)."""
    value = os.environ.get(MEMORY_CAP_ENV, "").strip()
    if not value:
        return None
    try:
        cap = float(value)
    except ValueError:
        cap = float("nan")
    if not (cap > 0 and cap != float("inf")):
        raise ValueError(f"${MEMORY_CAP_ENV}={value!r} must be a positive number of GiB (e.g. 24), or unset")
    return cap


def apply_memory_cap() -> str:
    """Cap this process's CUDA allocator at $AUTORESEARCH_MEMORY_CAP_GB (torch's per-process memory fraction), so a
    big card runs out of memory where a card of that size would. Returns what it did, in a line ("" if unset)."""
    cap = memory_cap_gib()
    if cap is None:
        return ""
    if detect().type != "cuda":
        return f"memory cap {cap:g} GiB: not applied ({detect().type} has no allocator cap)"
    total = torch.cuda.get_device_properties(0).total_memory
    fraction = min(1.0, cap * 2**30 / total)
    torch.cuda.set_per_process_memory_fraction(fraction, 0)
    return f"memory cap {cap:g} GiB: {fraction:.4f} of the GPU's {total / 2**30:.1f} GiB (${MEMORY_CAP_ENV})"


def sdpa_backends():
    """Context for scaled_dot_product_attention on CUDA: cuDNN (Hopper kernels), then flash, then efficient."""
    if detect().type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
    return sdpa_kernel(order, set_priority=True)


def reset_peak_memory() -> None:
    if detect().type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mb() -> float:
    """Peak memory in MB: CUDA allocator peak; MPS driver memory now (MPS keeps no peak); CPU peak RSS."""
    kind = detect().type
    if kind == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    if kind == "mps":
        return torch.mps.driver_allocated_memory() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def device_name() -> str:
    """The hardware's name as MFU tables know it: torch.cuda.get_device_name / 'Apple MPS' / the CPU model."""
    kind = detect().type
    if kind == "cuda":
        return torch.cuda.get_device_name(0)
    if kind == "mps":
        return "Apple MPS"
    return chip_name()


def mark():
    """A point in the device's work queue, for timing without a sync: a timing CUDA event on CUDA, the host clock
    elsewhere (CPU work is done when the call returns)."""
    if detect().type == "cuda":
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event
    if detect().type == "mps":
        torch.mps.synchronize()
    return time.perf_counter()


def seconds_between(a, b) -> float:
    """Device seconds from mark a to mark b; waits for b."""
    if isinstance(b, float):
        return b - a
    b.synchronize()
    return a.elapsed_time(b) / 1e3


# ---------------------------------------------------------------------------------------------------------------
# Arrays


def async_item(t: torch.Tensor):
    """Start copying a 0-d tensor to the host; returns `read() -> float`, which waits for that copy only. The
    training loop reads the previous step's loss this way, so the GPU never idles on a per-step sync."""
    if t.device.type != "cuda":
        return t.item
    host = torch.empty((), dtype=t.dtype, pin_memory=True)
    host.copy_(t, non_blocking=True)
    done = torch.cuda.Event()
    done.record()

    def read() -> float:
        done.synchronize()
        return host.item()

    return read


def to_device(a: np.ndarray, device: torch.device | None = None) -> torch.Tensor:
    """numpy -> tensor on the device. On CUDA through pinned memory with an asynchronous copy: the caching host
    allocator keeps the pinned block alive until the copy is done, so the host never waits here."""
    device = device or detect().device
    t = torch.from_numpy(np.ascontiguousarray(a))
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


# The run protocol's hooks (common/protocol.py).


def batch(xs: list[np.ndarray], ys: list[np.ndarray]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """A step's micro-batches on the device (pinned, asynchronous on CUDA: the copies overlap the step in flight)."""
    return [to_device(x) for x in xs], [to_device(y) for y in ys]


read_later = async_item  # the one host read per step, of the step before


def make_loss_fn(
    model, device: torch.device | None = None, max_rows: int | None = None, training_graph: bool = False
):
    """Eval adapter for common.evaluate.evaluate_bpb: `loss_fn(x, y) -> float32 numpy (B*T,)` per-token nats.

    Rows go through `model(x, y, reduction="none")` `max_rows` at a time (default: all of them), so the float32
    logits (rows*T*vocab*4 bytes) stay bounded. A short last chunk is padded to max_rows, so a compiled model sees
    one static shape; the padding's losses are dropped. training_graph=True runs with autograd on, exactly as
    training calls the model, so a compiled model reuses its training graph instead of compiling an inference one
    (tens of seconds on a cold cache); that costs one training micro-batch's activation memory, nothing more."""
    device = device or detect().device

    def loss_fn(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        step = max_rows or x.shape[0]
        out = []
        for xc, yc, rows in padded_chunks(x, y, step):
            with torch.set_grad_enabled(training_graph), autocast(), sdpa_backends():
                losses = model(to_device(xc, device), to_device(yc, device), reduction="none")
            out.append(losses.detach().float().view(step, -1)[:rows].reshape(-1).cpu().numpy())
        return np.concatenate(out)

    return loss_fn


# ---------------------------------------------------------------------------------------------------------------
# Weights: a dict of float32 numpy arrays under the canonical names (the state_dict keys), safetensors on disk


def _unwrap(model):
    return getattr(model, "_orig_mod", model)  # torch.compile's wrapper prefixes keys with _orig_mod.


def export_weights(model) -> dict[str, np.ndarray]:
    """All persistent weights as float32 numpy arrays, keyed by canonical name."""
    return {k: v.detach().float().cpu().numpy() for k, v in _unwrap(model).state_dict().items()}


def import_weights(model, weights: dict[str, np.ndarray]) -> None:
    """Load canonical-name weights into the model in place (keeps its dtypes and devices). Strict: every name must
    match and every shape agree, else a KeyError/ValueError says which."""
    model = _unwrap(model)
    state = model.state_dict()
    check_weights({k: tuple(v.shape) for k, v in state.items()}, weights)
    with torch.no_grad():
        for k, target in state.items():
            target.copy_(torch.from_numpy(np.ascontiguousarray(weights[k], dtype=np.float32)))


def save_weights(model, path: str | Path) -> None:
    """Export to a .safetensors file that train_mlx.py can load."""
    from safetensors.numpy import save_file  # lazy: the GPU image may lack it; only weight files need it

    save_file(export_weights(model), str(path))


def load_weights(model, path: str | Path) -> None:
    from safetensors.numpy import load_file

    import_weights(model, load_file(str(path)))
