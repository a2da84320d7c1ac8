"""The fast kernels train_mlx.py calls, each beside its plain reference (`fused=False`), the way upstream calls its
attention kernel. Fixed harness code: the agent changes the math by switching to the reference (or writing its own
in the script), never by editing a hand-written backward here, so a forward can never go stale beside its
backward. tests/test_kernels.py holds every fused function to its reference and to float64.

    attention(q, k, v, window)                   # FlashAttention's window: query i sees keys i-window..i
    rotary(x, cos, sin)                          # upstream's half-split rotary embedding
    relu_squared(x)                              # relu(x)^2
    softcap_cross_entropy(logits, targets, cap)  # per-token CE of cap * tanh(logits / cap), float32
"""

from __future__ import annotations

import functools

import mlx.core as mx

from backends import mlx_backend as mb

# ---------------------------------------------------------------------------------------------------------------
# Attention

# GPUs: windowed layers attend in query chunks as long as half the context, each against only the keys its window
# reaches. MLX's fused GPU attention has no sliding-window mode: at T 2048 a full T x T mask cost an S layer's
# attention 2.7x an L layer's on an H200, and these chunks cut that to 1.8x (+5% tokens/s; 128-512 row chunks were
# slower). At T 1024 chunks were 20% slower, and on the CPU no faster: there one call takes the full mask.
CHUNK_MIN_SEQ_LEN = 2048

_prepared: dict = {}  # (T, window, chunked) -> mask or chunk plan, built outside any compiled graph


def window_chunk(seq_len: int, on_gpu: bool) -> int:
    return seq_len // 2 if on_gpu and seq_len >= CHUNK_MIN_SEQ_LEN else 0


def prepare_attention(seq_len: int, windows) -> None:
    """Build the masks and chunk plans of these windows at this length now, outside any mx.compile trace (a mask
    made inside a trace is recomputed at every call). Call it where the model is built."""
    on_gpu = mb.detect().type != "cpu"
    for w in set(windows):
        if w < seq_len - 1:
            key = (seq_len, w, on_gpu)
            if key not in _prepared:
                _prepared[key] = _plan(seq_len, w, window_chunk(seq_len, on_gpu))
                mx.eval([m for *_, m in _prepared[key] if not isinstance(m, str)])


def _plan(seq_len, window, chunk):
    if not chunk:
        return [(0, seq_len, 0, _window_band(window, 0, seq_len, 0))]
    return window_chunks(seq_len, window, chunk)


def _window_band(window, q0, q1, k0):
    # Boolean window mask of query rows q0..q1-1 against keys k0..q1-1 (True = attend).
    dist = mx.arange(q0, q1)[:, None] - mx.arange(k0, q1)[None, :]
    return (dist >= 0) & (dist <= window)


def window_chunks(seq_len, window, chunk):
    """A windowed layer's attention split into query chunks: [(q0, q1, k0, mask)], rows q0..q1-1 against keys
    k0..q1-1 only, the keys their window reaches. mask is "causal" (bottom-right aligned) where every earlier key is
    inside the window, else the chunk's boolean window mask."""
    plan = []
    for q0 in range(0, seq_len, chunk):
        q1, k0 = min(q0 + chunk, seq_len), max(0, q0 - window)
        if k0 == 0 and q1 - 1 <= window:
            plan.append((q0, q1, k0, "causal"))
        else:
            plan.append((q0, q1, k0, _window_band(window, q0, q1, k0)))
    return plan


def attention(q, k, v, window: int, fused: bool = True):
    """Causal attention over a left window, q, k, v: (B, H, T, D) (k, v may have fewer heads: grouped queries).
    window >= T - 1 is plain causal. fused=False: the plain reference (scores, mask, softmax in float32)."""
    T, scale = q.shape[2], q.shape[-1] ** -0.5
    if not fused:
        return attention_reference(q, k, v, window)
    if window >= T - 1:
        return _attend(q, k, v, "causal", scale)
    on_gpu = mb.detect().type != "cpu"
    plan = _prepared.get((T, window, on_gpu)) or _plan(T, window, window_chunk(T, on_gpu))
    chunks = [_attend(q[:, :, q0:q1], k[:, :, k0:q1], v[:, :, k0:q1], m, scale) for q0, q1, k0, m in plan]
    return chunks[0] if len(chunks) == 1 else mx.concatenate(chunks, axis=2)


def _attend(q, k, v, mask, scale):
    if not mb.cpu_math(q):
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
    # On the CPU MLX's attention is unfused anyway, and its softmax runs a scalar exp: the same math with the
    # backend's vectorised softmax is 1.7x faster (57 -> 33 ms a block at the cpu profile).
    Tq, Tk = q.shape[2], k.shape[2]
    if isinstance(mask, str):  # causal, bottom-right aligned as in the fused kernel: the last query sees every key
        mask = mx.arange(Tk - Tq, Tk)[:, None] >= mx.arange(Tk)[None, :]
    if k.shape[1] != q.shape[1]:  # grouped-query attention: each kv head serves a group of query heads
        k, v = (mx.repeat(t, q.shape[1] // t.shape[1], axis=1) for t in (k, v))
    scores = mx.where(mask, (q * scale) @ k.swapaxes(-1, -2), -mx.inf)
    return mb.softmax(scores) @ v


def attention_reference(q, k, v, window: int):
    """The definition: softmax(q k^T / sqrt(D) over keys i-window..i) v, in float32, autodiff for the backward."""
    T, dtype = q.shape[2], q.dtype
    if k.shape[1] != q.shape[1]:
        k, v = (mx.repeat(t, q.shape[1] // t.shape[1], axis=1) for t in (k, v))
    q, k, v = (t.astype(mx.float32) for t in (q, k, v))
    scores = (q * q.shape[-1] ** -0.5) @ k.swapaxes(-1, -2)
    scores = mx.where(_window_band(window, 0, T, 0), scores, -mx.inf)
    return (mx.softmax(scores, axis=-1) @ v).astype(dtype)


# ---------------------------------------------------------------------------------------------------------------
# Rotary embedding


def rotary_reference(x, cos, sin):
    # Upstream's half-split layout: channel i rotates with channel i + head_dim/2.
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return mx.concatenate([x1 * cos + x2 * sin, x2 * cos - x1 * sin], axis=-1)


@mx.custom_function
def _rotary(x, cos, sin):
    return rotary_reference(x, cos, sin)


@_rotary.vjp
def _rotary_vjp(primals, cotangent, output):
    # The transpose of a rotation is the opposite rotation: one fused pass, where autodiff of the slices and the
    # concatenation pads each half's cotangent with zeros and adds them (2.3-2.6% of an H200 step). The tables are
    # not trained.
    _, cos, sin = primals
    d = cotangent.shape[-1] // 2
    g1, g2 = cotangent[..., :d], cotangent[..., d:]
    dx = mx.concatenate([g1 * cos - g2 * sin, g2 * cos + g1 * sin], axis=-1)
    return dx, mx.zeros_like(cos), mx.zeros_like(sin)


def rotary(x, cos, sin, fused: bool = True):
    return _rotary(x, cos, sin) if fused else rotary_reference(x, cos, sin)


# ---------------------------------------------------------------------------------------------------------------
# relu^2


def relu_squared_reference(x):
    return mx.square(mx.maximum(x, 0))


@mx.custom_function
def _relu_squared(x):
    return relu_squared_reference(x)


@_relu_squared.vjp
def _relu_squared_vjp(primals, cotangent, output):
    # relu(x) = sqrt(output), so x is not kept: autodiff keeps x, relu(x) and the output (c_proj's weight gradient
    # needs the output), two MLP-width tensors per layer more: 8 GiB at the h100 shape, and 2.8% slower (an H200).
    return cotangent * (2 * mx.sqrt(output))


def relu_squared(x, fused: bool = True):
    return _relu_squared(x) if fused else relu_squared_reference(x)


# ---------------------------------------------------------------------------------------------------------------
# Soft-capped cross-entropy


def softcap_cross_entropy_reference(logits, targets, softcap: float):
    """Per-token cross-entropy of softcap * tanh(logits / softcap), in float32, autodiff for the backward."""
    z = softcap * mx.tanh(logits.astype(mx.float32) / softcap)
    return mx.logsumexp(z, axis=-1) - mx.take_along_axis(z, targets[..., None], axis=-1)[..., 0]


@functools.cache
def _softcap_ce(softcap: float):
    # Saves tanh, exp and their row sum for the backward, which then needs no transcendental: autodiff recomputes
    # tanh and exp, and on a CPU, where they dominate a step, that doubles the time. (The torch kernel saves less and
    # recomputes: GPU memory binds there.)
    @mx.custom_function
    def ce(logits, targets):
        t = mb.tanh(logits / softcap)  # mx.tanh, or on the CPU a 4x faster drop-in (see the backend)
        e = mb.exp(softcap * t, bounded=True)  # |softcap * t| <= softcap: no max subtraction, sum(e) fits float32
        s = mx.sum(e, axis=-1, keepdims=True)
        loss = mx.log(s[..., 0]) - softcap * mx.take_along_axis(t, targets[..., None], axis=-1)[..., 0]
        return loss, t, e, s

    @ce.vjp
    def ce_vjp(primals, cotangents, outputs):
        logits, targets = primals
        _, t, e, s = outputs
        onehot = mx.arange(logits.shape[-1]) == targets[..., None]
        # d loss / d z = softmax - onehot, times d z / d logits = 1 - t^2
        dlogits = (e * (1 / s) - onehot) * (cotangents[0][..., None] * (1 - t * t))
        return dlogits, mx.zeros_like(targets)

    return ce


def softcap_cross_entropy(logits, targets, softcap: float, fused: bool = True):
    """Per-token losses (float32) of logits (..., V) against targets (...)."""
    if not fused:
        return softcap_cross_entropy_reference(logits, targets, softcap)
    return _softcap_ce(float(softcap))(logits.astype(mx.float32), targets)[0]


def softcap(logits, cap: float):
    """cap * tanh(logits / cap) in float32 (the fast CPU tanh where it applies): the model's logits for generation."""
    return cap * mb.tanh(logits.astype(mx.float32) / cap)
