"""MLX training and eval tokens/s of train_mlx.py's model at two shapes, on whatever MLX device is here: the `cpu`
profile's (depth 2, T 256, 16 rows) and the `laptop` profile's (depth 4, T 1024, here 4 rows a micro-batch). One
compiled forward + backward (the micro-step) and one compiled eval forward, median of 5 after a warm-up.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 python benchmarks/bench_mlx_shapes.py
"""

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AUTORESEARCH_PROFILE", "cpu")

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
import numpy as np  # noqa: E402

from common.parity import load_script  # noqa: E402

tm = load_script(ROOT / "train_mlx.py", "train_mlx_bench")
mb = tm.mb
mb.setup()
for depth, T, B in [(2, 256, 16), (4, 1024, 4)]:
    d = max(128, -(-depth * 64 // 128) * 128)  # DEPTH * ASPECT_RATIO rounded up to HEAD_DIM
    cfg = tm.GPTConfig(
        sequence_len=T,
        vocab_size=8192,
        n_layer=depth,
        n_head=d // 128,
        n_kv_head=d // 128,
        n_embd=d,
        window_pattern="SSSL",
    )
    mx.random.seed(0)
    model = tm.GPT(cfg)
    model.init_weights()
    mx.eval(model.parameters())
    rng = np.random.default_rng(0)
    x = mx.array(rng.integers(0, 8192, (B, T)).astype(np.int32))
    y = mx.array(rng.integers(0, 8192, (B, T)).astype(np.int32))
    lg = nn.value_and_grad(model, lambda a, b, m=model: m(a, b))
    st = [model.state, mx.random.state]
    f = mx.compile(lg, inputs=st, outputs=st)
    loss, g = f(x, y)
    mx.eval(loss, g)
    ev = mx.compile(lambda a, b, m=model: m(a, b, reduction="none"), inputs=model.state)
    mx.eval(ev(x, y))
    ts, te = [], []
    for _ in range(5):
        t = time.perf_counter()
        l2, g2 = f(x, y)
        mx.eval(l2, g2)
        ts.append(time.perf_counter() - t)
        t = time.perf_counter()
        mx.eval(ev(x, y))
        te.append(time.perf_counter() - t)
    print(
        f"depth {depth} T {T} B {B}: train {B * T / np.median(ts):7,.0f} tok/s  eval {B * T / np.median(te):7,.0f} tok/s  loss {float(loss):.6f}",
        flush=True,
    )
