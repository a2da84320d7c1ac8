"""Where an MLX training step's time goes on a GPU (CUDA here; Metal the same): each part of train_mlx.py's step
timed alone at the profile's micro-batch shape, beside the whole compiled step. Random tokens, no data.

    python benchmarks/mlx_profile.py                      # h100 profile, train_mlx.py's micro-batch (64 rows)
    AUTORESEARCH_PROFILE=ci python benchmarks/mlx_profile.py --reps 2   # a CPU smoke test of this script

MLX has no kernel profiler on CUDA, so the parts are timed one by one (median of --reps after 2 warm-ups, each
ending in mx.eval + synchronize): the ceilings (bf16 matmul, device copy), attention forward and forward+backward
per layer kind (K.attention, as the model calls it), one block forward+backward per kind, the lm_head + soft-capped
cross-entropy, the optimizer update, and the compiled micro-step. Prints one table; with $OUT set, writes
mlx_profile.json there.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AUTORESEARCH_PROFILE", "h100")

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402

import train_mlx as tm  # noqa: E402
from backends import mlx_backend as mb  # noqa: E402
from backends import mlx_kernels as K  # noqa: E402

ROWS = []


def median_ms(fn, reps):
    """Median milliseconds of fn() (which returns arrays to evaluate), after 2 warm-ups."""
    for _ in range(2):
        mx.eval(fn())
    mx.synchronize()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        mx.eval(fn())
        mx.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    return sorted(times)[len(times) // 2]


def bench(name, fn, reps, flop=None, note=""):
    ms = median_ms(fn, reps)
    tflops = flop / ms / 1e9 if flop else None
    ROWS.append(dict(name=name, ms=ms, tflops=tflops, note=note))
    rate = f"{tflops:7.1f} TFLOP/s" if tflops else " " * 15
    print(f"{name:<44} {ms:9.2f} ms {rate}  {note}", flush=True)
    return ms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--rows", type=int, default=tm.DEVICE_BATCH_SIZE, help="micro-batch rows")
    ap.add_argument(
        "--plain-relu2", action="store_true", help="K.relu_squared's reference instead of its kernel (A/B)"
    )
    ap.add_argument(
        "--plain-rotary",
        action="store_true",
        help="K.rotary's reference (autodiff) instead of its hand-written vjp (A/B)",
    )
    args = ap.parse_args()
    # The twin looks its kernels up on K at call time: a kernel switched to its reference there is what it runs.
    if args.plain_relu2:
        K.relu_squared = functools.partial(K.relu_squared, fused=False)
    if args.plain_rotary:
        K.rotary = functools.partial(K.rotary, fused=False)
    mb.setup()
    dt = tm.COMPUTE_DTYPE
    p = tm.PROFILE
    B, T, V = args.rows, p.max_seq_len, 8192
    config = tm.build_config(p.depth, T, V)  # the model train_mlx.py's main() builds
    d, H = config.n_embd, config.n_head
    D = d // H
    N = B * T
    print(
        f"profile {p.name}: micro-batch {B} x {T}, d {d}, heads {H} x {D}, vocab {V}; {mx.default_device()}"
    )

    # Ceilings
    n = 4096 if dt == mx.bfloat16 else 1024
    a, b = mx.random.normal((n, n)).astype(dt), mx.random.normal((n, n)).astype(dt)
    bench(f"matmul {n}^3 ({dt})", lambda: a @ b, args.reps, 2 * n**3)
    big = mx.zeros((2**28,), dtype=mx.float32) if dt == mx.bfloat16 else mx.zeros((2**22,))
    ms = bench("copy (read + write)", lambda: big + 1, args.reps)
    print(f"    -> {2 * big.nbytes / ms / 1e6:.0f} GB/s")
    x = mx.random.normal((N, d)).astype(dt)
    for name, (k, m) in {"q/k/v/proj GEMM": (d, d), "c_fc GEMM": (d, 4 * d), "lm_head GEMM": (d, V)}.items():
        w = mx.random.normal((m, k)).astype(dt)
        bench(f"{name} {k}->{m} (fwd)", lambda w=w: x @ w.T, args.reps, 2 * N * k * m)

    # Attention: forward and forward+backward per layer kind (the model's windows; GPT() prepared their masks)
    q, kk, v = (mx.random.normal((B, H, T, D)).astype(dt) for _ in range(3))
    model = tm.GPT(config)
    windows = {"L (causal)": T}
    short = [w for w in model._window_sizes if w < T - 1]
    if short:
        windows["S (window)"] = short[0]
    for kind, window in windows.items():
        frac = 0.75 if kind.startswith("S") else 0.5  # share of the T x T scores a causal / half window keeps
        flop = 4 * B * H * T * T * D * frac
        bench(f"attention {kind} fwd", lambda w=window: K.attention(q, kk, v, w), args.reps, flop)

        def fb(w=window):
            loss = lambda q, k, v: K.attention(q, k, v, w).astype(mx.float32).sum()
            return mx.grad(loss, (0, 1, 2))(q, kk, v)

        bench(f"attention {kind} fwd+bwd", mx.compile(fb), args.reps, 3.5 * flop)

    # One block forward+backward per kind (compiled), and the head
    model.init_weights()
    mx.eval(model.parameters())
    cos = model._cos[None, :T, None, :].astype(dt)
    sin = model._sin[None, :T, None, :].astype(dt)
    xb = mx.random.normal((B, T, d)).astype(dt)
    ve = mx.random.normal((B, T, d)).astype(dt)
    windows = model._window_sizes
    seen = set()
    for i, block in enumerate(model.transformer.h):
        key = (tm.has_ve(i, p.depth), windows[i] >= T - 1)
        if key in seen:
            continue
        seen.add(key)

        # the block and its input as parameters: the gradient reaches x too, as in training
        holder = nn.Module()
        holder.block, holder.x = block, xb

        def loss(holder=holder, i=i, key=key):
            return (
                holder.block(holder.x, ve if key[0] else None, cos, sin, windows[i]).astype(mx.float32).sum()
            )

        g = mx.compile(nn.value_and_grad(holder, loss), inputs=[holder.state], outputs=[holder.state])
        name = f"block {i} ({'L' if key[1] else 'S'}{', ve' if key[0] else ''}) fwd+bwd"
        bench(name, g, args.reps, 6 * N * 12 * d * d)

    # Rotary + QK norm on q and k, forward + backward into (B, H, T, D): K.rotary (hand-written vjp)
    # against MLX's fused kernel (mx.fast.rope with scale -1: upstream rotates by -theta), to price a switch
    qk = mx.random.normal((2, B, T, H, D)).astype(dt)
    cot = mx.random.normal((2, B, H, T, D)).astype(dt)
    rotary = {
        "elementwise": lambda t: tm.norm(K.rotary(t, cos, sin)).transpose(0, 2, 1, 3),
        "mx.fast.rope": lambda t: tm.norm(
            mx.fast.rope(t.transpose(0, 2, 1, 3), D, traditional=False, base=10000.0, scale=-1.0, offset=0)
        ),
    }
    for name, rot in rotary.items():
        g = mx.compile(mx.grad(lambda t, rot=rot: sum((rot(t[i]) * cot[i]).sum() for i in range(2))))
        bench(f"rotary + QK norm fwd+bwd, {name}", lambda g=g: g(qk), args.reps)

    h = mx.random.normal((N, d)).astype(dt)
    wl = model.lm_head.weight
    tgt = mx.random.randint(0, V, (N,))

    def head(w, h):
        logits = (h @ w.astype(dt).T).astype(mx.float32)
        return K.softcap_cross_entropy(logits, tgt, tm.SOFTCAP).mean()

    hg = mx.compile(mx.grad(head, (0, 1)))
    bench("lm_head + softcap CE fwd+bwd", lambda: hg(wl, h), args.reps, 6 * N * d * V)

    # The compiled micro-step and the optimizer update, as train_mlx.py runs them
    opt = tm.setup_optimizer(
        model, tm.UNEMBEDDING_LR, tm.EMBEDDING_LR, tm.MATRIX_LR, tm.WEIGHT_DECAY, tm.ADAM_BETAS, tm.SCALAR_LR
    )
    xs = mx.random.randint(0, V, (1, B, T))
    ys = mx.random.randint(0, V, (1, B, T))
    loss_and_grad = nn.value_and_grad(model, lambda x, y: model(x, y))
    state = [model.state, mx.random.state]
    micro = mx.compile(loss_and_grad, inputs=state, outputs=state)
    flop_token = model.estimate_flops()
    mx.synchronize()
    mx.reset_peak_memory()  # the micro-step's own peak: weights, gradients and one micro-batch's activations
    bench("micro-step fwd+bwd (compiled)", lambda: micro(xs[0], ys[0]), args.reps, flop_token * N)
    print(f"    -> peak memory of the micro-step {mx.get_peak_memory() / 1e9:.2f} GB")
    fwd = mx.compile(lambda x, y: model(x, y), inputs=state, outputs=state)
    bench("micro-step forward only (compiled)", lambda: fwd(xs[0], ys[0]), args.reps, flop_token * N / 3)
    step = tm.make_train_step(model, opt, compiled=True)
    opt.set_schedule(1.0, 0.85, tm.WEIGHT_DECAY)
    bench(
        "train step, 1 micro-batch + update (compiled)",
        lambda: [step(xs, ys), model.state, opt.state],
        args.reps,
        flop_token * N,
    )
    print(f"peak memory {mx.get_peak_memory() / 1e9:.1f} GB")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "mlx_profile.json").write_text(json.dumps(ROWS, indent=1))


if __name__ == "__main__":
    main()
