"""The fast kernels train_torch.py calls, each beside its plain reference (`fused=False`), the way upstream calls its
attention kernel. Fixed harness code: the agent changes the math by switching to the reference (or writing its own
in the script), never by editing a hand-written backward here. tests/test_kernels.py holds every fused function
to its reference and to float64.

    attention(q, k, v, window)                   # FlashAttention's window: query i sees keys i-window..i
    rotary(x, cos, sin)                          # upstream's half-split rotary embedding
    relu_squared(x)                              # relu(x)^2
    softcap_cross_entropy(logits, targets, cap)  # per-token CE of cap * tanh(logits / cap), float32

Attention picks its kernel per call. On Hopper and Blackwell with flash-attn-4 installed (`pip install -e
".[cuda]"`): FlashAttention-4, windows native, as a torch custom op (fake and autograd registered), so
torch.compile traces through it with no graph break. Else, inside torch.compile on CUDA: FlexAttention block masks
for windows (fully masked tiles skipped; at T >= 2048 in query chunks whose leading causal chunk runs on cuDNN) and
cuDNN SDPA for full-causal layers. Eager (CPU, MPS, parity): SDPA with a boolean window mask. `describe()` names the
path; the training log prints it once.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

FA4_ENV = "AUTORESEARCH_FA4"  # 0: never use FlashAttention-4 (an A/B, or a kernel bug to route around)

# Compiled CUDA: windowed layers attend in query chunks as long as half the context (+1.2% tokens/s on two H100
# leases at T 2048, for 1.5 GB of peak that relu^2's saving paid for).
CHUNK_MIN_SEQ_LEN = 2048

_prepared: dict = {}  # (T, window, device, flex) -> mask, BlockMask or chunk plan


def _flex(device: torch.device) -> bool:
    return device.type == "cuda" and torch.compiler.is_compiling()


# ---------------------------------------------------------------------------------------------------------------
# FlashAttention-4 (CuTe DSL; Hopper and Blackwell), as custom ops: torch.compile sees a fake, never the DSL's Python


_fa4: dict[int, str | None] = {}  # device index -> flash-attn-4's version, or None; filled outside any trace


def fa4_version(device_index: int = 0) -> str | None:
    """flash-attn-4's version where it is installed and this GPU runs it (compute capability 9.x or 10.x), else None.
    Resolved once per device, eagerly (describe() and prepare_attention() call it before compile): attention() only
    reads the answer, since an import or a metadata lookup inside torch.compile's trace breaks the graph."""
    if device_index not in _fa4:
        _fa4[device_index] = _find_fa4(device_index)
    return _fa4[device_index]


def _find_fa4(device_index: int) -> str | None:
    if os.environ.get(FA4_ENV) == "0" or not torch.cuda.is_available():
        return None
    if torch.cuda.get_device_capability(device_index)[0] not in (9, 10):
        return None
    try:
        from importlib.metadata import version

        import flash_attn.cute.interface  # noqa: F401

        return version("flash-attn-4")
    except Exception:  # not installed, or its CuTe DSL does not load with this CUDA
        return None


def _fa4_window(window: int) -> int | None:
    return None if window < 0 else window


@torch.library.custom_op("autoresearch::fa4_fwd", mutates_args=(), device_types="cuda")
def fa4_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention over keys i-window..i (window -1: all earlier keys), q, k, v: (B, T, H, D). Returns the
    output and the log-sum-exp per (B, H, T) row, which the backward needs."""
    from flash_attn.cute.interface import _flash_attn_fwd

    out, lse, *_ = _flash_attn_fwd(q, k, v, causal=True, window_size_left=_fa4_window(window), return_lse=True)
    return out.contiguous(), lse.contiguous()


# The fakes promise contiguous outputs, as the kernels make them: Inductor checks the real strides against these.
@fa4_fwd.register_fake
def _fa4_fwd_fake(q, k, v, window):
    B, T, H, _ = q.shape
    return q.new_empty(q.shape), q.new_empty((B, H, T), dtype=torch.float32)


@torch.library.custom_op("autoresearch::fa4_bwd", mutates_args=(), device_types="cuda")
def fa4_bwd(
    dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
    window: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    from flash_attn.cute.interface import _flash_attn_bwd

    dq, dk, dv = _flash_attn_bwd(q, k, v, out, dout, lse, causal=True, window_size_left=_fa4_window(window))[:3]
    return dq.contiguous(), dk.contiguous(), dv.contiguous()


@fa4_bwd.register_fake
def _fa4_bwd_fake(dout, q, k, v, out, lse, window):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _fa4_setup(ctx, inputs, output):
    q, k, v, window = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.window = window


def _fa4_backward(ctx, dout, dlse):
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = fa4_bwd(dout.contiguous(), q, k, v, out, lse, ctx.window)
    return dq, dk, dv, None


fa4_fwd.register_autograd(_fa4_backward, setup_context=_fa4_setup)


def _fa4_attention(q, k, v, window):
    # (B, H, T, D) in and out, as the twin holds them; FlashAttention's layout is (B, T, H, D).
    window = -1 if window >= q.size(2) - 1 else window
    out, _ = fa4_fwd(*(t.transpose(1, 2) for t in (q, k, v)), window)
    return out.transpose(1, 2)


def describe(device: torch.device) -> str:
    """Which attention kernels run on this device, in one line for the training log."""
    if device.type == "cuda":
        fa4 = fa4_version(device.index or 0)
        if fa4:
            return f"attention: FlashAttention-4 {fa4} (causal and windowed layers)"
        return ('attention: cuDNN SDPA (causal) + FlexAttention (windows); FlashAttention-4 would be faster on '
                'Hopper: pip install -e ".[cuda]"')  # fmt: skip
    return "attention: SDPA with a boolean window mask"


def prepare_attention(seq_len: int, windows, device: torch.device, flex: bool) -> None:
    """Build the masks of these windows at this length now, outside the compiled graph (flex: FlexAttention's
    block masks, for a model that runs under torch.compile on CUDA). Nothing to build where FlashAttention-4 runs."""
    if device.type == "cuda" and fa4_version(device.index or 0):
        return
    for w in set(windows):
        if w < seq_len - 1:
            key = (seq_len, w, str(device), flex)
            if key not in _prepared:
                _prepared[key] = _build(seq_len, w, device, flex)


def _build(seq_len, window, device, flex):
    if not flex:
        i = torch.arange(seq_len, device=device)
        dist = i[:, None] - i[None, :]
        return (dist >= 0) & (dist <= window)
    if seq_len >= CHUNK_MIN_SEQ_LEN:
        return window_chunks(seq_len, window, seq_len // 2, device)
    return create_block_mask(_window_mod(window, 0), None, None, seq_len, seq_len, device=device)


def _window_mod(window, q_offset):
    # FlexAttention mask_mod of a window, for query rows that start q_offset positions after the first key.
    def mask_mod(b, h, q_idx, kv_idx):
        dist = q_idx + q_offset - kv_idx
        return (dist >= 0) & (dist <= window)

    return mask_mod


def window_chunks(seq_len, window, chunk, device):
    """A windowed layer's attention split into query chunks: [(q0, q1, k0, mask)], rows q0..q1-1 against keys
    k0..q1-1 only, the keys their window reaches. mask is None (plain causal: cuDNN) for a leading chunk whose rows
    see every earlier key, else the chunk's FlexAttention BlockMask."""
    plan = []
    for q0 in range(0, seq_len, chunk):
        q1, k0 = min(q0 + chunk, seq_len), max(0, q0 - window)
        if q0 == 0 and q1 - 1 <= window:  # square, and every earlier key is inside the window
            plan.append((q0, q1, k0, None))
        else:
            mod = _window_mod(window, q0 - k0)
            plan.append((q0, q1, k0, create_block_mask(mod, None, None, q1 - q0, q1 - k0, device=device)))
    return plan


def attention(q, k, v, window: int, fused: bool = True):
    """Causal attention over a left window, q, k, v: (B, H, T, D) (k, v may have fewer heads: grouped queries).
    window >= T - 1 is plain causal. fused=False: the plain reference (scores, mask, softmax in float32)."""
    T = q.size(2)
    if not fused:
        return attention_reference(q, k, v, window)
    if q.is_cuda and q.dtype in (torch.bfloat16, torch.float16) and _fa4.get(q.device.index or 0):
        return _fa4_attention(q, k, v, window)
    if window >= T - 1:
        return _attend(q, k, v, None)
    flex = _flex(q.device)
    key = (T, window, str(q.device), flex)
    mask = _prepared.get(key)
    if mask is None:
        mask = _build(T, window, q.device, flex)
        if not torch.compiler.is_compiling():  # inside a trace it would cache a traced tensor
            _prepared[key] = mask
    return _attend(q, k, v, mask)


def _attend(q, k, v, mask):
    if isinstance(mask, list):  # a window_chunks plan
        chunks = [_attend(q[:, :, q0:q1], k[:, :, k0:q1], v[:, :, k0:q1], m) for q0, q1, k0, m in mask]
        return torch.cat(chunks, dim=2)
    gqa = q.size(1) != k.size(1)
    if isinstance(mask, BlockMask):
        return flex_attention(q, k, v, block_mask=mask, enable_gqa=gqa)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=gqa)


def attention_reference(q, k, v, window: int):
    """The definition: softmax(q k^T / sqrt(D) over keys i-window..i) v, in float32 (or float64), autograd for the
    backward."""
    T, dtype = q.size(2), q.dtype
    if k.size(1) != q.size(1):
        k, v = (t.repeat_interleave(q.size(1) // t.size(1), dim=1) for t in (k, v))
    q, k, v = (t.to(torch.promote_types(t.dtype, torch.float32)) for t in (q, k, v))  # float64 stays float64
    scores = (q * q.size(-1) ** -0.5) @ k.transpose(-1, -2)
    i = torch.arange(T, device=q.device)
    dist = i[:, None] - i[None, :]
    scores = scores.masked_fill(~((dist >= 0) & (dist <= window)), float("-inf"))
    return (scores.softmax(-1) @ v).to(dtype)


# ---------------------------------------------------------------------------------------------------------------
# Rotary embedding


def rotary_reference(x, cos, sin):
    # Upstream's half-split layout: channel i rotates with channel i + head_dim/2.
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


def rotary(x, cos, sin, fused: bool = True):
    # torch.compile fuses the reference's forward and backward on its own: no hand-written backward needed here.
    return rotary_reference(x, cos, sin)


# ---------------------------------------------------------------------------------------------------------------
# relu^2


def relu_squared_reference(x):
    return F.relu(x).square()


class _ReluSquared(torch.autograd.Function):
    """Saves only its output: the backward's relu(x) is sqrt(output), so x is not kept. Plain autograd keeps both
    x and the output (c_proj's weight gradient needs the output): one MLP-width tensor per layer more, 8 GiB at the
    h100 shape. CUDA autocast runs square (as pow) in float32: y is cast back to x's dtype, or the saved y would be
    twice x's size and torch.compile's partitioner would keep x instead."""

    @staticmethod
    def forward(ctx, x):
        y = F.relu(x).square().to(x.dtype)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (2 * y.sqrt())


def relu_squared(x, fused: bool = True):
    return _ReluSquared.apply(x) if fused else relu_squared_reference(x)


# ---------------------------------------------------------------------------------------------------------------
# Soft-capped cross-entropy


def softcap_cross_entropy_reference(logits, targets, softcap: float):
    """Per-token cross-entropy of softcap * tanh(logits / softcap), in float32, autograd for the backward."""
    z = softcap * torch.tanh(logits.float() / softcap)
    return F.cross_entropy(z, targets.long(), reduction="none")


class _SoftcapCrossEntropy(torch.autograd.Function):
    """The reference's function, but it saves only the compute-dtype logits and one logsumexp per row and recomputes
    the rest in backward. Plain autograd keeps the float32 soft-capped logits instead (8.6 GB per 128 x 2048
    micro-batch at vocab 8192) and reads them back. (The MLX kernel saves tanh and exp instead: CPU time binds
    there; on a GPU that variant measured no faster, benchmarks/RESULTS.md.)"""

    @staticmethod
    def forward(ctx, logits, targets, softcap):
        z = softcap * torch.tanh(logits.float() / softcap)
        lse = torch.logsumexp(z, dim=-1)
        ctx.save_for_backward(logits, targets, lse)
        ctx.softcap = softcap
        return lse - z.gather(-1, targets[:, None]).squeeze(-1)

    @staticmethod
    def backward(ctx, grad):
        logits, targets, lse = ctx.saved_tensors
        softcap = ctx.softcap
        t = torch.tanh(logits.float() / softcap)
        onehot = torch.arange(logits.size(-1), device=logits.device) == targets[:, None]
        dz = (torch.exp(softcap * t - lse[:, None]) - onehot.float()) * grad[:, None]
        return (dz * (1 - t * t)).to(logits.dtype), None, None


def softcap_cross_entropy(logits, targets, softcap: float, fused: bool = True):
    """Per-token losses (float32) of logits (N, V) against targets (N,)."""
    if not fused:
        return softcap_cross_entropy_reference(logits, targets, softcap)
    return _SoftcapCrossEntropy.apply(logits, targets.long(), float(softcap))


def softcap(logits, cap: float):
    """cap * tanh(logits / cap) in float32: the model's logits for generation."""
    return cap * torch.tanh(logits.float() / cap)
