"""MLX attention for a windowed ("S") layer on a GPU: one call with the full T x T window mask against query chunks
of several sizes (K.window_chunks; K.attention runs chunks of T / 2 on GPUs at T >= K.CHUNK_MIN_SEQ_LEN), with a
causal ("L") layer (K.attention) for scale. Each variant is checked against the kernels' float32 reference
(K.attention_reference, explicit scores) for its output and its q, k, v gradients. Random inputs, no data.

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
from backends import mlx_kernels as K  # noqa: E402
from benchmarks.mlx_profile import median_ms  # noqa: E402


def reference(q, k, v, window):
    """Float32 attention with explicit scores over keys i-window..i (the kernels' reference on float32 inputs)."""
    return K.attention_reference(*(t.astype(mx.float32) for t in (q, k, v)), window)


def attend(q, k, v, plan):
    """K.attention's fused path with an explicit plan [(q0, q1, k0, mask)]: rows q0..q1-1 against keys k0..q1-1."""
    scale = q.shape[-1] ** -0.5
    out = [K._attend(q[:, :, q0:q1], k[:, :, k0:q1], v[:, :, k0:q1], m, scale) for q0, q1, k0, m in plan]
    return out[0] if len(out) == 1 else mx.concatenate(out, axis=2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=tm.DEVICE_BATCH_SIZE)
    ap.add_argument("--chunks", type=int, nargs="+", default=[0, 128, 256, 512, 1024])
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    mb.setup()
    dt, p = tm.COMPUTE_DTYPE, tm.PROFILE
    config = tm.build_config(p.depth, p.max_seq_len, 8192)  # the model train_mlx.py's main() builds
    B, T, H = args.rows, p.max_seq_len, config.n_head
    D = config.n_embd // H
    w = T // 2
    print(f"B {B}, H {H}, T {T}, D {D}, window {w}, {dt}, {mx.default_device()}", flush=True)
    mx.random.seed(0)
    q, k, v = (mx.random.normal((B, H, T, D)).astype(dt) for _ in range(3))
    dout = mx.random.normal((B, H, T, D)).astype(dt)

    def vjp_of(fn):
        return lambda q, k, v: mx.vjp(fn, [q, k, v], [dout])[1]

    rows = []
    variants = {"L: causal": (None, T, lambda q, k, v: K.attention(q, k, v, T))}
    for c in args.chunks:
        plan = [(0, T, 0, K._window_band(w, 0, T, 0))] if c == 0 else K.window_chunks(T, w, c)
        mx.eval([m for *_, m in plan if not isinstance(m, str)])  # masks built outside the compiled graphs
        name = "S: full mask" if c == 0 else f"S: chunks of {c}"
        variants[name] = (c, w, lambda q, k, v, plan=plan: attend(q, k, v, plan))
    for name, (c, window, fwd) in variants.items():
        fwd_c, fwd_bwd_c = mx.compile(fwd), mx.compile(vjp_of(fwd))
        out, grads = fwd_c(q, k, v), fwd_bwd_c(q, k, v)
        ref_out = reference(q, k, v, window)
        ref_grads = vjp_of(lambda q, k, v, w=window: reference(q, k, v, w))(q, k, v)
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
