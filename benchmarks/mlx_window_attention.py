"""MLX attention for a windowed ("S") layer on a GPU: one call with the full T x T window mask against
train_mlx.py's query chunks (WINDOW_CHUNK), with a causal ("L") layer for scale. Each variant is checked against
a float32 reference (explicit scores) for its output and its q, k, v gradients. Random inputs, no data.

    python benchmarks/mlx_window_attention.py                   # h100 shape: B 64, H 4, T 2048, D 128, window 1024
    python benchmarks/mlx_window_attention.py --chunks 128 256  # chunk sizes to try (0 = the full mask)
    AUTORESEARCH_PROFILE=ci python benchmarks/mlx_window_attention.py --rows 2   # a CPU smoke test

Prints one table (median ms of forward and of forward + backward, compiled, and the largest errors); with $OUT set,
writes mlx_window_attention.json there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AUTORESEARCH_PROFILE", "h100")

import mlx.core as mx  # noqa: E402

import train_mlx as tm  # noqa: E402
from backends import mlx_backend as mb  # noqa: E402
from benchmarks.mlx_profile import median_ms  # noqa: E402


def reference(q, k, v, mask, scale):
    """Float32 attention with explicit scores: mask "causal" or boolean (T, T), True = attend."""
    q, k, v = (t.astype(mx.float32) for t in (q, k, v))
    T = q.shape[2]
    if isinstance(mask, str):
        mask = mx.arange(T)[:, None] >= mx.arange(T)[None, :]
    scores = mx.where(mask, (q * scale) @ k.swapaxes(-1, -2), -mx.inf)
    return mx.softmax(scores, axis=-1) @ v


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=tm.DEVICE_BATCH_SIZE)
    ap.add_argument("--chunks", type=int, nargs="+", default=[0, 128, 256, 512, 1024])
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    mb.setup()
    dt, p = tm.COMPUTE_DTYPE, tm.PROFILE
    B, T, D = args.rows, p.max_seq_len, tm.HEAD_DIM
    H = -(-p.depth * tm.ASPECT_RATIO // D)  # n_head as train_mlx.py's main() sizes the model
    w = T // 2
    scale = D**-0.5
    print(f"B {B}, H {H}, T {T}, D {D}, window {w}, {dt}, {mx.default_device()}", flush=True)
    mx.random.seed(0)
    q, k, v = (mx.random.normal((B, H, T, D)).astype(dt) for _ in range(3))
    dout = mx.random.normal((B, H, T, D)).astype(dt)

    def vjp_of(fn):
        return lambda q, k, v: mx.vjp(fn, [q, k, v], [dout])[1]

    rows = []
    variants = {"L: causal": (None, "causal")}
    for c in args.chunks:
        mask = tm.window_mask(T, w) if c == 0 else tm.window_chunks(T, w, c)
        variants["S: full mask" if c == 0 else f"S: chunks of {c}"] = (c, mask)
    for name, (c, mask) in variants.items():
        ref_mask = mask if isinstance(mask, str) else tm.window_mask(T, w)

        def fwd(q, k, v, mask=mask):
            return tm.attention(q, k, v, mask, scale)

        fwd_c, fwd_bwd_c = mx.compile(fwd), mx.compile(vjp_of(fwd))
        out, grads = fwd_c(q, k, v), fwd_bwd_c(q, k, v)
        ref_out = reference(q, k, v, ref_mask, scale)
        ref_grads = vjp_of(lambda q, k, v, m=ref_mask: reference(q, k, v, m, scale))(q, k, v)
        err_out = mx.abs(out.astype(mx.float32) - ref_out).max().item()
        err_grad = max(mx.abs(g.astype(mx.float32) - r).max().item() for g, r in zip(grads, ref_grads))
        del ref_out, ref_grads
        f_ms = median_ms(lambda f=fwd_c: f(q, k, v), args.reps)
        fb_ms = median_ms(lambda f=fwd_bwd_c: f(q, k, v), args.reps)
        rows.append(
            dict(variant=name, chunk=c, fwd_ms=f_ms, fwd_bwd_ms=fb_ms, err_out=err_out, err_grad=err_grad)
        )
        print(
            f"{name:<18} fwd {f_ms:8.2f} ms  fwd+bwd {fb_ms:8.2f} ms  max err out {err_out:.2e} grads {err_grad:.2e}",
            flush=True,
        )
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "mlx_window_attention.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
