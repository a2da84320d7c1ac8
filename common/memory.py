"""Peak training memory of a profile's shape, estimated without running it: what picks and checks the profiles.

    from common.memory import estimate
    e = estimate(get_profile("gpu24"), twin="torch", device="cuda")        # the compiled torch twin on a GPU
    e = estimate(get_profile("mac16"), twin="mlx", device="metal", memory_gib=10.7)
    print(e.total_gib, e.parts, e.fits(23.6))

A micro-step's peak is the weights and optimizer state, the step's gradients and update, the activations its
backward needs (per token: some multiple of the width per layer, and the vocab-wide head), attention scores where a
backend materializes them, and the eval's chunk of logits. The coefficients are bytes per token, counted from what
each twin keeps and calibrated on the peaks measured in benchmarks/RESULTS.md (each constant names its source).
The twins' model shape is their committed default (ASPECT_RATIO 64, HEAD_DIM 128, WINDOW_PATTERN SSSL, vocab 8192):
an agent who widens the model changes the memory, and the profile's fit says nothing about that.

Margins (how far a measured peak may sit from the estimate): MARGIN["torch"] for the compiled torch twin on CUDA,
whose count lands within 1% of the h100 shape's measured peak; MARGIN["mlx"] for MLX, whose head/layer split is a
count fitted to two runs; the paths no card has measured (torch uncompiled, MLX's attention backward on Metal, torch
on MPS) carry MARGIN["uncalibrated"]. Pure Python: no torch or mlx.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

GIB = 2**30
VOCAB = 8192  # prepare's BPE vocabulary
ASPECT_RATIO, HEAD_DIM, WINDOW_PATTERN = 64, 128, "SSSL"  # the twins' defaults (build_config)
VE_GATE_CHANNELS = 32
MLX_MAX_ROWS = 64  # train_mlx.py: DEVICE_BATCH_SIZE = min(PROFILE.device_batch_size, 64)
CHUNK_MIN_SEQ_LEN = 2048  # windowed layers attend in query chunks from this length (both kernel modules)

MARGIN = {"torch": 0.05, "mlx": 0.10, "uncalibrated": 0.25}

# -- the torch twin, compiled on CUDA (bf16 autocast). RESULTS.md "Call 9": at the step's peak (the start of the
# backward, h100 shape) the allocator held 11.5 width-d bf16 tensors per layer, two MLP-width ones (one since "Call
# 10": relu^2 keeps only its output), the bf16 logits, one float32 width-d tensor and per-row statistics (attention
# log-sum-exps, norm rstd: 267 MiB over 262,144 tokens and 8 layers). "Call 11": the windowed layers' query chunks
# copy k and v slices (+1.5 GiB: 2d bytes per token per windowed layer).
TORCH_LAYER = 11.5 * 2 + 4 * 2  # bytes per token per layer, times n_embd
TORCH_ROW_STATS = 128  # bytes per token per layer
TORCH_CHUNKS = 2  # bytes per token per windowed layer, times n_embd, at T >= 2048 (FlexAttention chunks)
TORCH_HEAD = 2  # bytes per token, times vocab: the bf16 logits the soft-capped CE saves
TORCH_FLOAT_WIDTH = 4  # bytes per token, times n_embd: one float32 width-d tensor
# Weights (float32), AdamW's two moments, Muon's momentum: "Call 9" measured 553 MiB before the step for 50.3M
# params (11.5 bytes each); the gradients (float32) come on top during the step.
TORCH_STATE = 11.5  # bytes per parameter
TORCH_GRADS = 4  # bytes per parameter

# -- the torch twin uncompiled (CUDA without Triton, e.g. Windows; bf16 autocast). Not measured: counted from what
# autograd saves per layer (the float32 copies norm() makes, the rotary's inputs and outputs, q/k before and after
# their norm, the value embedding, attention's input and output, c_proj's reshaped input, relu^2's output: 46d), and
# the head's backward in eager ops (float32 tanh, exp, one-hot and their products alive at once: ~20 V bytes).
EAGER_LAYER = 46
EAGER_HEAD = 20

# -- the MLX twin (bf16 on GPUs). RESULTS.md "MLX (CUDA backend)", fourth lease: one H200 at the h100 shape peaked at
# 43,117 MiB with 64-row micro-batches and 75,598 MiB with 128: 253 KiB per token more, and 9.2 GiB that does not
# grow with the rows. Per token: the layers as the torch twin's count (33d with MLX's unfused norms and gates; the
# chunks as torch's), the head the rest: 14.4 V (float32 logits, the tanh and exp the CE keeps for its backward,
# the logits' gradient). The 9.2 GiB: charged to the eval, whose chunk of float32 logits (2 GiB there) is the only
# term of that size that does not scale with the training rows; 4.6 chunks of it. Not understood further.
MLX_LAYER = 33
MLX_ROW_STATS = 128
MLX_CHUNKS = 2
MLX_HEAD = 14.4
MLX_EVAL_CHUNKS = 4.6
MLX_STATE = 11.5  # weights, AdamW and Muon state, as torch's
MLX_STEP = 16  # bytes per parameter in the step: gradients, their running sum, bf16 casts, the update
# Eval chunks (backends/mlx_backend.py eval_chunk_rows): float32 logits per chunk, 1/64 of the device memory.
EVAL_LOGIT_BYTES, EVAL_LOGIT_BYTES_MAX = 256 * 2**20, 2 * GIB
# Metal trains attention's backward through MLX's unfused fallback: per layer, while its gradient is computed, the
# B x H x T x T scores, probabilities and their gradients in bf16 (~5 arrays of 2 bytes). Not measured on a Mac.
METAL_SCORES = 10  # bytes per score element

# -- torch on MPS or the CPU: float32, eager, attention's scores kept for the backward (SDPA's math path with a mask).
FLOAT32_LAYER = 80  # EAGER_LAYER's tensors at 4 bytes, less the float32 copies that float32 makes no longer
FLOAT32_HEAD = 22
MATH_SCORES = 8  # bytes per score element per layer: float32 scores and probabilities


@dataclass(frozen=True)
class ModelShape:
    """The twins' model at a depth (build_config): width depth * 64 rounded up to whole heads of 128."""

    depth: int
    seq_len: int
    vocab: int = VOCAB

    @property
    def n_embd(self) -> int:
        return math.ceil(self.depth * ASPECT_RATIO / HEAD_DIM) * HEAD_DIM

    @property
    def n_head(self) -> int:
        return self.n_embd // HEAD_DIM

    @property
    def windows(self) -> list[int]:
        """Each layer's attention window: the pattern cycled, S = T/2, the last layer always L."""
        T = self.seq_len
        sizes = [T if WINDOW_PATTERN[i % len(WINDOW_PATTERN)] == "L" else T // 2 for i in range(self.depth)]
        sizes[-1] = T
        return sizes

    @property
    def n_windowed(self) -> int:
        return sum(w < self.seq_len - 1 for w in self.windows)

    @property
    def n_value_embeds(self) -> int:
        return sum(i % 2 == (self.depth - 1) % 2 for i in range(self.depth))  # has_ve

    @property
    def matrix_params(self) -> int:
        """The blocks' matrices (Muon): q, k, v, proj (4 d^2) and the MLP (8 d^2) per layer, and the gates."""
        d = self.n_embd
        return self.depth * 12 * d * d + self.n_value_embeds * VE_GATE_CHANNELS * self.n_head

    @property
    def params(self) -> int:
        embeddings = (2 + self.n_value_embeds) * self.vocab * self.n_embd  # wte, lm_head, value embeddings
        return embeddings + self.matrix_params + 2 * self.depth


@dataclass(frozen=True)
class Estimate:
    twin: str  # torch | mlx
    device: str  # cuda | metal | mps | cpu
    compiled: bool
    rows: int  # rows per micro-batch as the twin runs them
    seq_len: int
    params: int
    parts: dict[str, float] = field(default_factory=dict)  # GiB each
    total_gib: float = 0.0
    margin: float = 0.0  # a measured peak may sit this fraction above or below total_gib

    def fits(self, memory_gib: float) -> bool:
        """Whether the peak, at the top of the margin, fits `memory_gib` with headroom (usable_gib)."""
        return self.total_gib * (1 + self.margin) <= usable_gib(memory_gib)

    def to_dict(self) -> dict:
        return {
            "twin": self.twin, "device": self.device, "compiled": self.compiled, "rows": self.rows,
            "seq_len": self.seq_len, "params_M": round(self.params / 1e6, 2),
            "parts_gib": {k: round(v, 2) for k, v in self.parts.items()},
            "total_gib": round(self.total_gib, 2), "margin": self.margin,
        }  # fmt: skip


def usable_gib(memory_gib: float) -> float:
    """What a run may plan to use of `memory_gib`: 10% for allocator fragmentation and cached blocks, and 0.5 GiB
    for the CUDA context (or a display on the same card)."""
    return 0.9 * memory_gib - 0.5


def estimate(
    profile, twin: str = "torch", device: str = "cuda", *, compiled: bool | None = None,
    memory_gib: float | None = None, rows: int | None = None,
) -> Estimate:  # fmt: skip
    """The peak memory of `profile`'s training step and eval, for a twin (torch | mlx) on a device (cuda | metal |
    mps | cpu). compiled: torch.compile (default: on CUDA; False is CUDA without Triton). memory_gib: the device's
    memory, which sizes MLX's eval chunks (default: 16 GiB). rows: another DEVICE_BATCH_SIZE than the twin's."""
    shape = ModelShape(profile.depth, profile.max_seq_len)
    if twin == "torch":
        compiled = device == "cuda" if compiled is None else compiled and device == "cuda"
        return _torch(shape, rows or profile.device_batch_size, device, compiled)
    if twin == "mlx":
        return _mlx(shape, rows or min(profile.device_batch_size, MLX_MAX_ROWS), device, memory_gib or 16.0)
    raise ValueError(f"twin {twin!r}: torch or mlx")


def _torch(s: ModelShape, rows: int, device: str, compiled: bool) -> Estimate:
    d, V, T, L = s.n_embd, s.vocab, s.seq_len, s.depth
    tokens = rows * T
    state = {"weights + optimizer": TORCH_STATE * s.params, "gradients": TORCH_GRADS * s.params}
    if compiled:
        chunked = s.n_windowed * TORCH_CHUNKS * d if T >= CHUNK_MIN_SEQ_LEN else 0
        per_token = L * (TORCH_LAYER * d + TORCH_ROW_STATS) + chunked + TORCH_HEAD * V + TORCH_FLOAT_WIDTH * d
        parts = {**state, "activations": tokens * per_token}
        margin = MARGIN["torch"]
    elif device == "cuda":  # the eval (no grad, the same rows) keeps less than training: its head alone
        per_token = L * (EAGER_LAYER * d + TORCH_ROW_STATS) + EAGER_HEAD * V + TORCH_FLOAT_WIDTH * d
        parts = {**state, "activations": tokens * per_token, "window masks": 2 * T * T * len(set(s.windows))}
        margin = MARGIN["uncalibrated"]
    else:  # MPS or CPU: float32, eager, attention's probabilities kept per layer
        per_token = L * (FLOAT32_LAYER * d + TORCH_ROW_STATS) + FLOAT32_HEAD * V + 4 * d
        scores = L * rows * s.n_head * T * T * MATH_SCORES
        parts = {**state, "activations": tokens * per_token, "attention scores": scores}
        margin = MARGIN["uncalibrated"]
    total = sum(parts.values())
    return Estimate("torch", device, compiled, rows, T, s.params, _gib(parts), total / GIB, margin)


def _mlx(s: ModelShape, rows: int, device: str, memory_gib: float) -> Estimate:
    d, V, T, L = s.n_embd, s.vocab, s.seq_len, s.depth
    tokens = rows * T
    chunked = s.n_windowed * MLX_CHUNKS * d if device != "cpu" and T >= CHUNK_MIN_SEQ_LEN else 0
    per_token = L * (MLX_LAYER * d + MLX_ROW_STATS) + chunked + MLX_HEAD * V
    parts = {
        "weights + optimizer": MLX_STATE * s.params,
        "gradients + update": MLX_STEP * s.params,
        "activations": tokens * per_token,
        "eval": MLX_EVAL_CHUNKS * eval_chunk_rows(T, V, rows, memory_gib * GIB) * T * V * 4,
    }
    margin = MARGIN["mlx"]
    if device == "metal":  # the attention backward's unfused fallback: one layer's scores at a time
        parts["attention scores"] = rows * s.n_head * T * T * METAL_SCORES
        margin = MARGIN["uncalibrated"]
    total = sum(parts.values())
    return Estimate("mlx", device, True, rows, T, s.params, _gib(parts), total / GIB, margin)


def eval_chunk_rows(seq_len: int, vocab: int, batch_size_limit: int, memory_bytes: float | None) -> int:
    """Rows per MLX eval forward, as backends/mlx_backend.py's eval_chunk_rows computes them (a test ties the two)."""
    budget = EVAL_LOGIT_BYTES
    if memory_bytes:
        budget = min(max(budget, int(memory_bytes) // 64), EVAL_LOGIT_BYTES_MAX)
    return max(1, min(batch_size_limit, budget // (seq_len * vocab * 4)))


def _gib(parts: dict[str, float]) -> dict[str, float]:
    return {k: v / GIB for k, v in parts.items()}
