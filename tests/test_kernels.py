"""The fenced kernels (backends/mlx_kernels.py, backends/torch_kernels.py): each fused function against its plain
reference and against float64 numpy, forward and gradient. Harness tests: they hold for any twin, since no twin
code is involved.

    pytest tests/test_kernels.py
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch

from backends import torch_kernels as TK

try:  # the GPU machine has torch but no MLX: its CUDA tests must still run
    import mlx.core as mx

    from backends import mlx_kernels as MK
except ImportError:
    mx = MK = None
needs_mlx = pytest.mark.skipif(mx is None, reason="needs MLX")

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# ---------------------------------------------------------------------------------------------------------------------
# float64 references, written here from the definitions


def np_rotary(x, T, D):
    """Upstream's rotation (half-split layout) and its transpose, the rotation by the opposite angle."""
    inv = 1.0 / 10000 ** (np.arange(0, D, 2) / D)
    ang = np.outer(np.arange(T), inv)[None, :, None, :]
    cs, sn = np.cos(ang), np.sin(ang)
    h = D // 2

    def rot(a, sign):
        a1, a2 = a[..., :h], a[..., h:]
        return np.concatenate([a1 * cs + sign * a2 * sn, a2 * cs - sign * a1 * sn], axis=-1)

    return rot(x, 1), lambda c: rot(c, -1), cs, sn


def np_window_attention(q, k, v, window):
    """softmax over keys i-window..i of q.k / sqrt(D), times v, row by row in float64; q, k, v: (B, H, T, D)."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    out = np.zeros_like(q)
    for i in range(q.shape[2]):
        j = np.arange(max(0, i - window), i + 1)
        s = np.einsum("bhd,bhkd->bhk", q[:, :, i], k[:, :, j]) / math.sqrt(q.shape[-1])
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        out[:, :, i] = np.einsum("bhk,bhkd->bhd", p, v[:, :, j])
    return out


def np_softcap_ce(logits, targets, cap):
    """Per-token loss and d(sum(loss * w))/d logits of cap * tanh(logits / cap), in float64."""
    t = np.tanh(logits / cap)
    z = cap * t
    zmax = z.max(-1, keepdims=True)
    lse = np.log(np.exp(z - zmax).sum(-1)) + zmax[..., 0]
    loss = lse - np.take_along_axis(z, targets[..., None], -1)[..., 0]
    soft = np.exp(z - lse[..., None])
    onehot = np.arange(logits.shape[-1]) == targets[..., None]
    return loss, lambda w: (soft - onehot) * w[..., None] * (1 - t * t)


# ---------------------------------------------------------------------------------------------------------------------
# Rotary


@needs_mlx
def test_rotary_matches_float64_and_its_backward_is_the_opposite_rotation():
    rng = np.random.default_rng(7)
    B, T, H, D = 2, 12, 3, 8
    x64, c64 = rng.standard_normal((B, T, H, D)), rng.standard_normal((B, T, H, D))
    want_y, transpose, cs, sn = np_rotary(x64, T, D)
    want_g = transpose(c64)
    # MLX: the fused (hand-written vjp) and the reference (autodiff)
    cos, sin = mx.array(cs.astype(np.float32)), mx.array(sn.astype(np.float32))
    x, c = mx.array(x64.astype(np.float32)), mx.array(c64.astype(np.float32))
    for fused in (True, False):
        y, g = mx.value_and_grad(lambda x, fused=fused: (MK.rotary(x, cos, sin, fused=fused) * c).sum())(x)
        np.testing.assert_allclose(np.array(MK.rotary(x, cos, sin, fused=fused)), want_y, atol=1e-5)
        np.testing.assert_allclose(y.item(), (want_y * c64).sum(), rtol=1e-5)
        np.testing.assert_allclose(np.array(g), want_g, atol=1e-5)
    # torch, in float64
    xt = torch.tensor(x64, requires_grad=True)
    y = TK.rotary(xt, torch.tensor(cs), torch.tensor(sn))
    (g,) = torch.autograd.grad(y, xt, torch.tensor(c64))
    np.testing.assert_allclose(y.detach().numpy(), want_y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g.numpy(), want_g, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------------
# relu^2


def _relu_inputs():
    rng = np.random.default_rng(5)
    x64 = np.concatenate([[-2.0, -0.5, 0.0, 0.25, 1.0, 3.0], rng.standard_normal(250)]).reshape(4, 64)
    return x64, rng.standard_normal((4, 64))


@needs_mlx
def test_mlx_relu_squared_has_relus_gradient():
    x64, c64 = _relu_inputs()
    x, c = mx.array(x64.astype(np.float32)), mx.array(c64.astype(np.float32))
    for fused in (True, False):
        y, g = mx.value_and_grad(lambda x, fused=fused: (MK.relu_squared(x, fused=fused) * c).sum())(x)
        np.testing.assert_allclose(y.item(), (np.maximum(x64, 0) ** 2 * c64).sum(), rtol=1e-5)
        np.testing.assert_allclose(np.array(g), 2 * np.maximum(x64, 0) * c64, rtol=1e-6, atol=0)
    # bf16, as GPUs run it: sqrt of the rounded square costs a bf16 rounding or two
    xb, cb = x.astype(mx.bfloat16), c.astype(mx.bfloat16)
    gb = mx.grad(lambda x: (MK.relu_squared(x) * cb).sum())(xb)
    gb, xb, cb = (np.array(a.astype(mx.float32)).astype(np.float64) for a in (gb, xb, cb))
    ref = 2 * np.maximum(xb, 0) * cb
    assert (np.abs(gb - ref) <= 2**-6 * np.abs(ref)).all()


@needs_mlx
def test_mlx_relu_squared_keeps_only_its_output():
    """A compiled MLP's forward + backward with the fused relu^2 and with autodiff of the reference, which keeps
    relu's input (and its output) beside the square: at least one hidden-width float32 tensor per layer more."""
    rng = np.random.default_rng(6)
    layers, d, rows = 4, 64, 256
    ws = [(mx.array(rng.standard_normal((d, 4 * d)).astype(np.float32) * 0.1),
           mx.array(rng.standard_normal((4 * d, d)).astype(np.float32) * 0.1)) for _ in range(layers)]  # fmt: skip
    x = mx.array(rng.standard_normal((rows, d)).astype(np.float32))

    def peak(fused):
        def loss(ws):
            h = x
            for a, b in ws:
                h = h + MK.relu_squared(h @ a, fused=fused) @ b
            return (h * h).mean()

        fn = mx.compile(mx.value_and_grad(loss))
        mx.eval(fn(ws))
        mx.reset_peak_memory()
        value, grads = fn(ws)
        mx.eval(value, grads)
        return value.item(), mx.get_peak_memory()

    (v_fused, fused), (v_plain, plain) = peak(True), peak(False)
    assert v_fused == pytest.approx(v_plain, rel=1e-6)
    unit = rows * 4 * d * 4  # one (rows, 4d) float32 tensor
    assert plain - fused >= 0.9 * layers * unit, (plain - fused) / unit


def test_torch_relu_squared_keeps_only_its_output_and_has_relus_gradient():
    x64, c64 = _relu_inputs()
    x = torch.tensor(x64, requires_grad=True)
    c = torch.tensor(c64)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = TK.relu_squared(x)
    torch.testing.assert_close(y, torch.relu(x) ** 2, rtol=0, atol=0)
    assert len(saved) == 1 and saved[0] is y  # the output, not x: x's memory is freed after the forward
    (g,) = torch.autograd.grad(y, x, c)
    torch.testing.assert_close(g, 2 * torch.relu(x) * c, rtol=1e-15, atol=0)  # 0 where x <= 0
    (g_ref,) = torch.autograd.grad(TK.relu_squared(x, fused=False), x, c)
    torch.testing.assert_close(g, g_ref, rtol=1e-15, atol=0)
    # bf16, as the GPU runs it: sqrt of the rounded square costs at most one more bf16 rounding
    xb, cb = x.detach().bfloat16().requires_grad_(), c.bfloat16()
    (gb,) = torch.autograd.grad(TK.relu_squared(xb), xb, cb)
    ref = 2 * torch.relu(xb.double()) * cb.double()
    assert ((gb.double() - ref).abs() <= 2**-7 * ref.abs()).all()


# ---------------------------------------------------------------------------------------------------------------------
# Soft-capped cross-entropy


def _ce_inputs(shape=(3, 5), vocab=50):
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((*shape, vocab)) * 20  # some beyond the soft cap
    return logits, rng.integers(0, vocab, shape), rng.random(shape)


@needs_mlx
def test_mlx_softcap_cross_entropy_matches_float64():
    logits64, targets64, w64 = _ce_inputs()
    want, want_grad = np_softcap_ce(logits64, targets64, 15.0)
    logits, targets = mx.array(logits64.astype(np.float32)), mx.array(targets64.astype(np.int32))
    w = mx.array(w64.astype(np.float32))
    for fused in (True, False):
        fn = lambda lg, fused=fused: (MK.softcap_cross_entropy(lg, targets, 15.0, fused=fused) * w).sum()
        value, grad = mx.value_and_grad(fn)(logits)
        np.testing.assert_allclose(np.array(MK.softcap_cross_entropy(logits, targets, 15.0, fused=fused)), want,
                                   rtol=1e-5, atol=1e-5)  # fmt: skip
        np.testing.assert_allclose(value.item(), (want * w64).sum(), rtol=1e-5)
        np.testing.assert_allclose(np.array(grad), want_grad(w64), rtol=1e-4, atol=1e-6)


def test_torch_softcap_cross_entropy_matches_float64():
    logits64, targets64, w64 = _ce_inputs(shape=(6,))
    want, want_grad = np_softcap_ce(logits64, targets64, 15.0)
    for fused in (True, False):
        logits = torch.tensor(logits64, requires_grad=True)
        got = TK.softcap_cross_entropy(logits, torch.tensor(targets64), 15.0, fused=fused)
        (grad,) = torch.autograd.grad(got, logits, torch.tensor(w64))
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-6, atol=1e-6)  # float32 inside
        np.testing.assert_allclose(grad.numpy(), want_grad(w64), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# Attention: FlashAttention's window (query i sees keys i-w..i), whole or in chunks


@needs_mlx
@pytest.mark.parametrize("window", [3, 8, 15, 16])
def test_mlx_attention_matches_float64_window_semantics(window):
    rng = np.random.default_rng(window)
    T = 16
    q, k, v, dout = (rng.standard_normal((2, 2, T, 8)).astype(np.float32) for _ in range(4))
    want = np_window_attention(q, k, v, window)
    qa, ka, va, da = (mx.array(a) for a in (q, k, v, dout))
    for fused in (True, False):
        (out,), grads = mx.vjp(lambda q, k, v, fused=fused: MK.attention(q, k, v, window, fused=fused),
                               [qa, ka, va], [da])  # fmt: skip
        np.testing.assert_allclose(np.array(out), want, atol=1e-5)
        if fused:
            fused_grads = grads
    for g, r in zip(fused_grads, grads):  # the fused backward against autodiff of the reference
        np.testing.assert_allclose(np.array(g), np.array(r), atol=1e-5)


@needs_mlx
@pytest.mark.parametrize("chunk", [3, 4, 8, 11])
def test_mlx_window_chunks_equal_one_masked_call(chunk):
    """The GPU's chunked window attention computes what one call with the full mask does, output and q, k, v
    gradients: every chunk sees exactly its rows' windows, and a chunk marked "causal" (bottom-right aligned, fewer
    rows than keys) loses none of them."""
    T, w = 16, 8
    plan = MK.window_chunks(T, w, chunk)
    assert [(q0, q1) for q0, q1, _, _ in plan] == [(q0, min(q0 + chunk, T)) for q0 in range(0, T, chunk)]
    for q0, q1, k0, m in plan:
        assert k0 == max(0, q0 - w)  # the first key any row of the chunk can see
        assert isinstance(m, str) == (k0 == 0 and q1 - 1 <= w)  # "causal" exactly where it is the window
    rng = np.random.default_rng(chunk)
    q, k, v, dout = (mx.array(rng.standard_normal((2, 2, T, 8)).astype(np.float32)) for _ in range(4))

    def run(plan):
        def f(q, k, v):
            parts = [MK._attend(q[:, :, a:b], k[:, :, c:b], v[:, :, c:b], m, 8**-0.5) for a, b, c, m in plan]
            return mx.concatenate(parts, axis=2)

        return mx.vjp(f, [q, k, v], [dout])

    (out, *_), grads = run(plan)
    (ref, *_), ref_grads = run([(0, T, 0, MK._window_band(w, 0, T, 0))])
    np.testing.assert_allclose(np.array(out), np.array(ref), atol=1e-5)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(np.array(g), np.array(r), atol=1e-5)


@needs_mlx
def test_mlx_prepared_masks_are_reused_and_chunked_only_on_gpus(monkeypatch):
    MK._prepared.clear()
    MK.prepare_attention(16, [8, 8, 16])  # 16 >= T - 1: causal, nothing to build
    assert list(MK._prepared) == [(16, 8, False)]  # the CPU: one call with the full mask
    (plan,) = MK._prepared.values()
    assert len(plan) == 1 and np.array_equal(np.array(plan[0][3]), np.array(MK._window_band(8, 0, 16, 0)))
    assert MK.window_chunk(2048, on_gpu=True) == 1024 and MK.window_chunk(1024, on_gpu=True) == 0
    assert MK.window_chunk(4096, on_gpu=False) == 0


@pytest.mark.parametrize("window", [3, 8, 15, 16])
def test_torch_attention_matches_float64_window_semantics(window):
    g = torch.Generator().manual_seed(window)
    T = 16
    q, k, v = (torch.randn(2, 3, T, 8, dtype=torch.float64, generator=g, requires_grad=True) for _ in range(3))
    dout = torch.randn(2, 3, T, 8, dtype=torch.float64, generator=g)
    want = np_window_attention(q.detach(), k.detach(), v.detach(), window)
    outs = {}
    for fused in (True, False):
        out = TK.attention(q, k, v, window, fused=fused)
        outs[fused] = (out, torch.autograd.grad(out, (q, k, v), dout))
        np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-10, atol=1e-10)
    for a, b in zip(outs[True][1], outs[False][1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


# FlexAttention eager on purpose here (a reference), so its warning about the unfused path is expected.
@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("chunk", [3, 8, 11])
def test_torch_window_chunks_equal_one_masked_call(chunk):
    """The compiled CUDA path's chunks (a leading chunk through SDPA's causal kernel, the rest FlexAttention)
    compute what one SDPA call with the full boolean mask does. Forward on the CPU (FlexAttention has no CPU
    backward); the CUDA test below checks gradients."""
    T, w = 16, 8
    plan = TK.window_chunks(T, w, chunk, "cpu")
    assert [(q0, q1) for q0, q1, _, _ in plan] == [(q0, min(q0 + chunk, T)) for q0 in range(0, T, chunk)]
    for q0, q1, k0, m in plan:
        assert k0 == max(0, q0 - w)
        assert (m is None) == (q0 == 0 and q1 - 1 <= w)  # SDPA's causal mask only where it is the window's
    g = torch.Generator().manual_seed(chunk)
    q, k, v = (torch.randn(2, 2, T, 8, generator=g) for _ in range(3))
    with torch.no_grad():
        got = TK._attend(q, k, v, plan)
        ref = TK._attend(q, k, v, TK._build(T, w, torch.device("cpu"), flex=False))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ref, torch.from_numpy(np_window_attention(q, k, v, w)).float(), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# CUDA only: the compiled paths


@needs_cuda
def test_cuda_compiled_attention_matches_the_reference():
    """Compiled (FlexAttention windows, chunked at T >= 2048; cuDNN causal) against the float32 reference: output
    and q, k, v gradients, for an S and an L layer at the chunked length."""
    T = 2048
    for window in (T // 2, T):
        qkv = [torch.randn(1, 2, T, 64, device="cuda", requires_grad=True) for _ in range(3)]
        dout = torch.randn(1, 2, T, 64, device="cuda")
        TK.prepare_attention(T, [window], torch.device("cuda"), flex=True)

        def run(fn, qkv=qkv, dout=dout):
            out = fn(*qkv)
            return [out.detach(), *torch.autograd.grad(out, qkv, dout)]

        got = run(torch.compile(partial(TK.attention, window=window), dynamic=False))
        ref = run(partial(TK.attention, window=window, fused=False))
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2)


@needs_cuda
def test_cuda_relu_squared_saves_bf16_under_autocast():
    """Autocast runs square as pow in float32: the fused relu^2 must still save its output in bf16 (or the compiled
    partitioner keeps x instead)."""
    x = torch.randn(64, 256, device="cuda", dtype=torch.bfloat16)
    saved = []
    with torch.autocast("cuda", dtype=torch.bfloat16):
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            y = TK.relu_squared(x.requires_grad_())
    assert y.dtype == torch.bfloat16 and [t.dtype for t in saved] == [torch.bfloat16]


needs_fa4 = pytest.mark.skipif(
    not torch.cuda.is_available() or TK.fa4_version() is None, reason='needs flash-attn-4 on Hopper/Blackwell: pip install -e ".[cuda]"'
)


@needs_fa4
@pytest.mark.parametrize("window", [512, 1024])
def test_cuda_fa4_matches_the_reference_and_compiles_without_a_graph_break(window):
    """FlashAttention-4 (bf16) against the float32 reference, output and q, k, v gradients, for an S layer
    (window T/2) and an L layer (window T: causal); then under torch.compile with no graph break."""
    T, g = 1024, torch.Generator(device="cuda").manual_seed(window)
    qkv = [torch.randn(2, 4, T, 128, device="cuda", generator=g).bfloat16().requires_grad_() for _ in range(3)]
    dout = torch.randn(2, 4, T, 128, device="cuda", generator=g).bfloat16()

    def run(fn):
        out = fn(*qkv)
        return [out.detach().float(), *(x.float() for x in torch.autograd.grad(out, qkv, dout))]

    got = run(partial(TK.attention, window=window))
    ref = run(partial(TK.attention_reference, window=window))
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, ref):
        err = ((a - b).norm() / b.norm()).item()
        assert err < 1e-2, (name, err)  # bf16 inputs: ~3e-3 expected
    explained = torch._dynamo.explain(partial(TK.attention, window=window))(*qkv)
    assert explained.graph_break_count == 0, explained.break_reasons
    compiled = run(torch.compile(partial(TK.attention, window=window), dynamic=False))
    for name, a, b in zip(("out", "dq", "dk", "dv"), compiled, ref):  # traced through the custom op, strides and all
        err = ((a - b).norm() / b.norm()).item()
        assert err < 1e-2, ("compiled", name, err)
