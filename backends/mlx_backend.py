"""MLX glue for train_mlx.py (fixed harness): device choice, compute dtype, sync, peak memory, numpy -> mx.array,
the eval adapter for common.evaluate and weight export/import under the canonical names.

    from backends import mlx_backend as mb
    dev = mb.detect()            # Metal, then CUDA, then CPU
    mb.setup()                   # default device, wired memory on Metal; prints what it chose and why

Nothing is probed at import: the first detect() call decides, once, and every device branch lives in this file.
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_map_with_path

from common.evaluate import padded_chunks
from common.hardware import chip_name
from common.weights import check_weights

# Float32 eval logits per chunk (rows * T * vocab * 4 bytes): 1/64 of the device's memory, within these bounds.
EVAL_LOGIT_BYTES = 256 * 2**20  # at least (a 16 GB laptop)
EVAL_LOGIT_BYTES_MAX = 2 * 2**30  # at most, however much memory there is


@dataclass(frozen=True)
class Device:
    type: str  # metal | cuda | cpu
    reason: str  # why this device was chosen, printed at startup
    dtype: mx.Dtype  # compute dtype: bf16 on GPUs, float32 on CPU (bf16 matmuls are slow there)


@functools.cache
def detect() -> Device:
    """The device train_mlx.py runs on, decided once per process: Metal, then CUDA, then CPU."""
    if mx.metal.is_available():
        return Device("metal", "Metal GPU available (Apple Silicon)", mx.bfloat16)
    cuda = getattr(mx, "cuda", None)
    if cuda is not None and cuda.is_available():
        return Device("cuda", "this MLX build has CUDA and sees a GPU", mx.bfloat16)
    return Device("cpu", "no Metal or CUDA GPU in this MLX build: float32 on the CPU", mx.float32)


def __getattr__(name: str):
    # Lazy module constant: `mb.COMPUTE_DTYPE` resolves on first use, not at import.
    if name == "COMPUTE_DTYPE":
        return detect().dtype
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def setup() -> Device:
    """Make the chosen device the default, wire memory on Metal, keep big CPU buffers in the heap, and say what was
    chosen and why."""
    dev = detect()
    mx.set_default_device(mx.cpu if dev.type == "cpu" else mx.gpu)
    wired = _wire_memory() if dev.type == "metal" else ""
    if dev.type == "cpu":
        _keep_heap()
    print(f"mlx {mx.__version__}: {dev.type} ({dev.reason}); device {device_name()}{wired}", flush=True)
    return dev


def _wire_memory() -> str:
    """Keep up to the GPU's recommended working set resident (macOS 15+), so the OS does not page the weights and
    optimizer state out between steps. Harmless where unsupported."""
    limit = _device_info().get("max_recommended_working_set_size")
    if not limit:
        return ""
    try:
        mx.set_wired_limit(int(limit))
    except (RuntimeError, ValueError, AttributeError):
        return ""
    return f"; wired limit {int(limit) / 2**30:.1f} GB"


def _keep_heap() -> None:
    """MLX's CPU allocator is plain malloc, and glibc serves every buffer over 32 MB (the logits) with a fresh mmap
    that is unmapped on free: each step page-faults them in again, which cost 3x on every pass over the logits.
    Serving them from the heap, never trimmed, reuses the memory. glibc only; harmless elsewhere."""
    if sys.platform != "linux":
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-4, 0)  # M_MMAP_MAX = 0: no mmap'd chunks
    libc.mallopt(-1, ctypes.c_int(2**31 - 1))  # M_TRIM_THRESHOLD: keep freed memory for the next step


def _device_info() -> dict:
    try:
        return dict(mx.device_info())
    except (AttributeError, RuntimeError):
        try:
            return dict(mx.metal.device_info())  # older MLX spelling
        except (AttributeError, RuntimeError):
            return {}


# ---------------------------------------------------------------------------------------------------------------
# The device branches, collapsed here


def sync() -> None:
    """Wait for all queued work (timing points; the training loop's mx.eval already waits for its step)."""
    mx.synchronize()


def reset_peak_memory() -> None:
    mx.reset_peak_memory()


def peak_memory_mb() -> float:
    """Peak memory MLX's allocator has held, in MB (unified memory on Apple, device memory on CUDA, RAM on CPU)."""
    return mx.get_peak_memory() / 2**20


def device_name() -> str:
    """The hardware's name: 'Apple M3 Max' (sysctl), 'NVIDIA H100 80GB HBM3' (device_info), or the CPU model."""
    kind = detect().type
    info = _device_info()
    if kind == "metal":
        # The Metal device reports a GPU architecture; the chip's marketing name is the CPU brand string.
        return chip_name() or str(info.get("device_name") or "Apple GPU")
    if kind == "cuda":
        name = info.get("device_name") or _run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"])
        return str(name).splitlines()[0].strip() if name else "NVIDIA GPU"
    return chip_name() or str(info.get("device_name") or "cpu")


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _memory_bytes() -> int | None:
    size = _device_info().get("memory_size") or _device_info().get("total_memory")
    if size:
        return int(size)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


# ---------------------------------------------------------------------------------------------------------------
# exp and tanh for the vocab-wide softmax


def exp(x, bounded=False):
    """e^x: mx.exp on GPUs; on the CPU `exp_cpu` (float32), a drop-in with the same accuracy. bounded=True promises
    -87 <= x <= 88 (e.g. soft-capped logits) and skips the clamp."""
    return exp_cpu(x, bounded) if cpu_math(x) else mx.exp(x)


def tanh(x):
    """tanh(x): mx.tanh on GPUs; on the CPU `tanh_cpu` (float32), a drop-in with the same accuracy."""
    return tanh_cpu(x) if cpu_math(x) else mx.tanh(x)


# Why: MLX's Linux CPU build runs mx.exp and mx.tanh as scalar libm calls (16-25 ns per element), which made the
# softmax over the vocabulary most of a CPU training step. These use only arithmetic, comparisons and a bit cast,
# which mx.compile fuses into loops that g++ vectorises, as long as two rules hold (measured on 33.5M logits):
# - A fused kernel holds at most 11 ops in a chain (MLX's fusion depth); a longer chain is cut into kernels that
#   each make a pass over memory. So the polynomials use Estrin's scheme (depth ~log2 of the degree), not Horner's.
# - A select (mx.where, and mx.minimum / mx.maximum with their NaN branch) anywhere in a fused loop stops g++
#   vectorising the whole loop. So the clamp runs as its own small kernel, cut off by `_fusion_barrier`.
# tanh went from 6.5 to ~1.8 ns per element this way, exp (bounded) from 6.1 to ~4.5; mx.tanh + mx.exp take ~55.
_LOG2E, _LN2 = 1.4426950408889634, 0.6931471805599453
_EXP_C = [1.0 / math.factorial(k) for k in range(10)]  # Taylor coefficients of e^g, g in [0, ln 2)


@mx.custom_function
def _fusion_barrier(x):
    """x itself, in a separate kernel from what follows: two bit-cast views (free) that mx.compile cannot fuse
    across. Differentiable (identity backward): MLX has no gradient for a view."""
    return mx.view(mx.view(x, mx.int32), x.dtype)


@_fusion_barrier.vjp
def _fusion_barrier_vjp(primals, cotangent, output):
    return cotangent


def _estrin(x, c):
    """c[0] + c[1] x + ... + c[n] x^n by Estrin's scheme: pairs, then pairs of pairs (depth ~2 log2 n, not 2n)."""
    terms, power = [c[i] + c[i + 1] * x if i + 1 < len(c) else c[i] for i in range(0, len(c), 2)], x * x
    while len(terms) > 1:
        terms = [
            terms[i] + terms[i + 1] * power if i + 1 < len(terms) else terms[i]
            for i in range(0, len(terms), 2)
        ]
        power = power * power
    return terms[0]


def exp_cpu(x, bounded=False):
    """e^x = 2^n 2^f in float32: n = floor(x log2 e) written into the exponent bits, 2^f = e^(f ln 2) from its
    Taylor series to degree 9 (error < 1e-8 on [0, ln 2)). Max relative error 4e-6 on [-87, 88], as mx.exp.
    Inputs are clamped to that range (normal floats) unless bounded=True says they lie in it. Differentiable
    (d e^x = e^x dx; MLX has no gradient for the bit cast)."""
    return _exp_bounded(x) if bounded else _exp_clamped(x)


def _exp_arithmetic(x):
    y = x * _LOG2E
    n = (y + 128).astype(mx.int32) - 128  # floor: the cast truncates and y + 128 > 0
    g = (y - n.astype(mx.float32)) * _LN2
    return _estrin(g, _EXP_C) * mx.view(mx.left_shift(n + 127, 23), mx.float32)


@mx.custom_function
def _exp_bounded(x):
    return _exp_arithmetic(x)


@mx.custom_function
def _exp_clamped(x):
    return _exp_arithmetic(_fusion_barrier(mx.where(x > 88.0, 88.0, mx.where(x < -87.0, -87.0, x))))


@_exp_bounded.vjp
def _exp_bounded_vjp(primals, cotangent, output):
    return cotangent * output


@_exp_clamped.vjp
def _exp_clamped_vjp(primals, cotangent, output):
    return cotangent * output


def cpu_math(x) -> bool:
    """True where the arithmetic drop-ins below replace MLX's kernels: float32 on a CPU-only MLX."""
    return detect().type == "cpu" and x.dtype == mx.float32


@mx.custom_function
def _softmax_cpu(x):
    # -inf (masked) scores clamp to e^-87 ~ 1e-38: nothing, next to the row's maximum's e^0
    e = exp_cpu(x - mx.stop_gradient(mx.max(x, axis=-1, keepdims=True)))
    return e / mx.sum(e, axis=-1, keepdims=True)


@_softmax_cpu.vjp
def _softmax_cpu_vjp(primals, cotangent, output):
    # MLX passes plain arrays for a one-output function; lists are accepted too
    g = cotangent[0] if isinstance(cotangent, (list, tuple)) else cotangent
    p = output[0] if isinstance(output, (list, tuple)) else output
    return p * (g - mx.sum(g * p, axis=-1, keepdims=True))


def softmax(x):
    """Softmax over the last axis: mx.softmax, or on the CPU the same with `exp_cpu` (one attention block of the cpu
    profile: 57 -> 33 ms) and a hand-written backward (one pass, instead of autodiff through the exp)."""
    return _softmax_cpu(x) if cpu_math(x) else mx.softmax(x, axis=-1, precise=True)


# tanh(x) ~ x P(x^2) / Q(x^2) on [-9, 9] (beyond, float32 tanh rounds to +-1): a rational least-squares fit made
# for this file, max error 6e-9 in exact arithmetic and 3e-7 evaluated in float32 (mx.tanh: 1e-7).
_TANH_P = (
    0.9999999689319897, 0.13079177376931497, 0.00309866945256767, 1.1101974660700312e-05,
    -2.0030122500249966e-08, 5.1929279717514964e-11, -8.29181505199959e-14,
)  # fmt: skip
_TANH_Q = (1.0, 0.46412497629370786, 0.02447382234408878, 0.00025386228347250956)


def tanh_cpu(x):
    """tanh(x) as a rational function in float32 arithmetic (see exp_cpu). |result| may exceed 1 by 2e-7."""
    x = _fusion_barrier(mx.where(x > 9.0, 9.0, mx.where(x < -9.0, -9.0, x)))
    x2 = x * x
    return x * _estrin(x2, _TANH_P) / _estrin(x2, _TANH_Q)


# ---------------------------------------------------------------------------------------------------------------
# Arrays and the eval adapter


def to_array(a: np.ndarray) -> mx.array:
    """numpy -> mx.array (unified memory on Apple: no device copy to wait for)."""
    return mx.array(np.ascontiguousarray(a))


# The run protocol's hooks (common/protocol.py).


def batch(xs: list[np.ndarray], ys: list[np.ndarray]) -> tuple[mx.array, mx.array]:
    """A step's micro-batches, stacked: (accum, B, T) inputs and targets."""
    return to_array(np.stack(xs)), to_array(np.stack(ys))


def read_later(loss: mx.array):
    """`read() -> float`: the twin's step has already evaluated the loss (its mx.eval is the step's sync)."""
    return loss.item


def mark() -> float:
    """A timing point: the host clock, since each step's mx.eval has waited for the device."""
    return time.perf_counter()


def seconds_between(a: float, b: float) -> float:
    return b - a


def eval_chunk_rows(seq_len: int, vocab_size: int, batch_size_limit: int) -> int:
    """Rows per eval forward: at most batch_size_limit, and few enough that the float32 logits fit the budget
    (1/64 of device memory, clamped to [EVAL_LOGIT_BYTES, EVAL_LOGIT_BYTES_MAX])."""
    budget = EVAL_LOGIT_BYTES
    mem = _memory_bytes()
    if mem:
        budget = min(max(budget, mem // 64), EVAL_LOGIT_BYTES_MAX)
    return max(1, min(batch_size_limit, budget // (seq_len * vocab_size * 4)))


def make_loss_fn(model, batch_size_limit: int):
    """Eval adapter for common.evaluate.evaluate_bpb: `loss_fn(x, y) -> float32 numpy (B*T,)` per-token nats.

    `model(x, y, reduction="none")` runs compiled, over chunks of rows small enough that the float32 logits stay
    bounded (a community port allocated 17 GB of eval logits on a 24 GB laptop). A short last chunk is padded to
    the chunk size, so the compiled forward sees one static shape; the padding's losses are dropped."""
    vocab = model.config.vocab_size
    forward = partial(mx.compile, inputs=model.state)(lambda x, y: model(x, y, reduction="none"))

    def loss_fn(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        n, seq_len = x.shape
        step = eval_chunk_rows(seq_len, vocab, batch_size_limit)
        out = []
        for xc, yc, rows in padded_chunks(x, y, step):
            losses = forward(to_array(xc), to_array(yc))
            out.append(np.array(losses.astype(mx.float32)).reshape(-1, seq_len)[:rows].reshape(-1))
        return np.concatenate(out)

    return loss_fn


# ---------------------------------------------------------------------------------------------------------------
# Weights: a dict of float32 numpy arrays under the canonical names (tree_flatten's names), safetensors on disk


def export_weights(model) -> dict[str, np.ndarray]:
    """All parameters as float32 numpy arrays, keyed by canonical name (e.g. transformer.h.0.attn.c_q.weight)."""
    return {k: np.array(v.astype(mx.float32)) for k, v in tree_flatten(model.parameters())}


def import_weights(model, weights: dict[str, np.ndarray]) -> None:
    """Load canonical-name weights into the model (as float32 master weights). Strict: every name must match and
    every shape agree, else a KeyError/ValueError says which."""
    check_weights({k: v.shape for k, v in tree_flatten(model.parameters())}, weights)
    # Rebuild the tree by path: tree_unflatten would turn value_embeds' "1" key into a list index.
    model.update(
        tree_map_with_path(
            lambda k, _: mx.array(np.asarray(weights[k], dtype=np.float32)), model.parameters()
        )
    )
    mx.eval(model.parameters())


def save_safetensors(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write numpy arrays to a .safetensors file (the format both twins read)."""
    from safetensors.numpy import save_file  # lazy: only weight files need it

    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))


def load_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def save_weights(model, path: str | Path) -> None:
    """Export to a .safetensors file that train_torch.py can load."""
    save_safetensors(path, export_weights(model))


def load_weights(model, path: str | Path) -> None:
    import_weights(model, load_safetensors(path))
