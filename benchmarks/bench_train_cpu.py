"""CPU training and eval throughput of the twin scripts at a profile's shape (by default the `cpu` profile: depth 2,
T=256, 16 x 256 = 4,096 tokens per step, vocab 8192), on random tokens: no prepared data needed.

    python benchmarks/bench_train_cpu.py                 # MLX compiled, MLX eager, and train_torch.py if it imports
    python benchmarks/bench_train_cpu.py --ablations     # plus MLX with each CPU optimization undone
    python benchmarks/bench_train_cpu.py --steps 20 --eval-tokens 65536
    python benchmarks/bench_train_cpu.py --profile laptop --only mlx --steps 2 --eval-tokens 8192   # T 1024, minutes

Every configuration runs in its own process (MLX with OpenBLAS preloaded where the system has it, as the runner
does), so peak memory and threads are its own. Prints train tokens/s, step time, eval tokens/s and peak memory.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"
VOCAB = 8192

# name: (framework, description, options)
CONFIGS = {
    "mlx": ("mlx", "MLX, compiled step (train_mlx.py as it runs)", {}),
    "mlx-eager": ("mlx", "MLX, uncompiled step", {"compiled": False}),
    "torch": ("torch", "PyTorch twin (train_torch.py on the CPU)", {}),
}
ABLATIONS = {
    "mlx-native-exp": (
        "mlx",
        "MLX compiled, mx.exp/mx.tanh instead of the CPU drop-ins",
        {"native_exp": True},
    ),
    "mlx-mmap": ("mlx", "MLX compiled, glibc's default mmap for big buffers", {"mmap": True}),
    "mlx-plain-relu2": (
        "mlx",
        "MLX compiled, K.relu_squared's reference (autodiff) instead of its kernel",
        {"plain_relu2": True},
    ),
    "mlx-plain-rotary": (
        "mlx",
        "MLX compiled, K.rotary's reference (autodiff) instead of its hand-written vjp",
        {"plain_rotary": True},
    ),
    "mlx-bf16": (
        "mlx",
        "MLX compiled, bfloat16 compute on the CPU",
        {"bf16": True, "steps": 3, "eval": 8192},
    ),
    "mlx-refblas": (
        "mlx",
        "MLX compiled, MLX's bundled reference BLAS",
        {"refblas": True, "steps": 2, "eval": 4096},
    ),
}


def max_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def random_rows(n: int, seq_len: int, seed: int):
    import numpy as np

    return np.random.default_rng(seed).integers(0, VOCAB, (n, seq_len + 1)).astype(np.int32)


def run_mlx(opts: dict, steps: int, eval_tokens: int) -> dict:
    import mlx.core as mx
    import numpy as np

    import train_mlx as tm
    from backends import mlx_backend as mb
    from common.evaluate import evaluate_bpb

    if opts.get("mmap"):
        mb._keep_heap = lambda: None
    mb.setup()
    if opts.get("native_exp"):
        mb.exp, mb.tanh = (lambda x, bounded=False: mx.exp(x)), mx.tanh
    if opts.get("bf16"):
        tm.COMPUTE_DTYPE = mx.bfloat16
    # The twin looks its kernels up on tm.K at call time: a kernel switched to its reference there is what it runs.
    if opts.get("plain_relu2"):
        tm.K.relu_squared = functools.partial(tm.K.relu_squared, fused=False)
    if opts.get("plain_rotary"):
        tm.K.rotary = functools.partial(tm.K.rotary, fused=False)
    T, B = tm.MAX_SEQ_LEN, tm.DEVICE_BATCH_SIZE
    accum = tm.TOTAL_BATCH_SIZE // (B * T)
    config = tm.build_config(tm.DEPTH, T, VOCAB)
    mx.random.seed(0)
    model = tm.GPT(config)
    model.init_weights()
    opt = tm.setup_optimizer(
        model, tm.UNEMBEDDING_LR, tm.EMBEDDING_LR, tm.MATRIX_LR, tm.WEIGHT_DECAY, tm.ADAM_BETAS, tm.SCALAR_LR
    )
    step = tm.make_train_step(model, opt, compiled=opts.get("compiled", True))
    state = [model.state, opt.state]

    def batch(i):
        rows = random_rows(accum * B, T, i).reshape(accum, B, T + 1)
        return mx.array(rows[..., :-1]), mx.array(rows[..., 1:])

    t0 = time.perf_counter()
    mx.eval(step(*batch(0)), state)  # compile (or the first eager step)
    compile_s = time.perf_counter() - t0
    times = []
    for i in range(steps):
        x, y = batch(i + 1)
        t0 = time.perf_counter()
        loss = step(x, y)
        mx.eval(loss, state)
        times.append(time.perf_counter() - t0)
    assert np.isfinite(loss.item())

    rows = random_rows(max(1, eval_tokens // T), T, 999)
    loss_fn = mb.make_loss_fn(model, tm.EVAL_BATCH_SIZE)
    loss_fn(rows[: tm.EVAL_BATCH_SIZE, :-1], rows[: tm.EVAL_BATCH_SIZE, 1:])  # compile the eval graph
    t0 = time.perf_counter()
    evaluate_bpb(loss_fn, rows, tm.EVAL_BATCH_SIZE, np.ones(VOCAB, np.int64))
    eval_s = time.perf_counter() - t0
    return dict(
        step_s=float(np.median(times)), tokens_per_step=accum * B * T, compile_s=compile_s,
        eval_tok_s=rows.shape[0] * T / eval_s, peak_mb=mb.peak_memory_mb(), rss_mb=max_rss_mb(),
        params_M=model.num_params() / 1e6, device=mb.device_name(),
    )  # fmt: skip


def run_torch(opts: dict, steps: int, eval_tokens: int) -> dict:
    import inspect

    import numpy as np
    import torch

    import train_torch as tt
    from backends import torch_backend as tb
    from common.evaluate import evaluate_bpb

    tb.setup()
    T, B = tt.MAX_SEQ_LEN, tt.DEVICE_BATCH_SIZE
    accum = tt.TOTAL_BATCH_SIZE // (B * T)
    config = tt.build_config(tt.DEPTH, T, VOCAB)
    torch.manual_seed(0)
    dev = tb.detect()
    with torch.device(dev.device):
        model = tt.GPT(config)
    model.init_weights()
    opt = tt.setup_optimizer(
        model, tt.UNEMBEDDING_LR, tt.EMBEDDING_LR, tt.MATRIX_LR, tt.WEIGHT_DECAY, tt.ADAM_BETAS, tt.SCALAR_LR
    )
    compiled = tt.COMPILE and dev.compile
    step = tt.make_train_step(model, opt, compiled=compiled)

    def batch(i):
        rows = random_rows(accum * B, T, i).reshape(accum, B, T + 1)
        return [tb.to_device(r[:, :-1]) for r in rows], [tb.to_device(r[:, 1:]) for r in rows]

    t0 = time.perf_counter()
    step(*batch(0)).item()
    compile_s = time.perf_counter() - t0
    times = []
    for i in range(steps):
        x, y = batch(i + 1)
        t0 = time.perf_counter()
        loss = step(x, y).item()
        times.append(time.perf_counter() - t0)
    assert np.isfinite(loss)

    rows = random_rows(max(1, eval_tokens // T), T, 999)
    run = getattr(step, "model", model)
    params = inspect.signature(tb.make_loss_fn).parameters
    kwargs = {"max_rows": tt.EVAL_BATCH_SIZE} if "max_rows" in params else {}
    if "training_graph" in params:
        kwargs["training_graph"] = compiled
    loss_fn = tb.make_loss_fn(run, **kwargs)
    loss_fn(rows[: tt.EVAL_BATCH_SIZE, :-1], rows[: tt.EVAL_BATCH_SIZE, 1:])
    t0 = time.perf_counter()
    evaluate_bpb(loss_fn, rows, tt.EVAL_BATCH_SIZE, np.ones(VOCAB, np.int64))
    eval_s = time.perf_counter() - t0
    return dict(
        step_s=float(np.median(times)), tokens_per_step=accum * B * T, compile_s=compile_s,
        eval_tok_s=rows.shape[0] * T / eval_s, peak_mb=None, rss_mb=max_rss_mb(),
        params_M=sum(p.numel() for p in model.parameters()) / 1e6, device=tb.device_name(),
    )  # fmt: skip


def worker(name: str, steps: int, eval_tokens: int) -> None:
    framework, _, opts = {**CONFIGS, **ABLATIONS}[name]
    steps, eval_tokens = min(steps, opts.get("steps", steps)), min(eval_tokens, opts.get("eval", eval_tokens))
    sys.path.insert(0, str(ROOT))
    run = run_mlx if framework == "mlx" else run_torch
    print(json.dumps(run(opts, steps, eval_tokens)), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="timed training steps per configuration (median)")
    ap.add_argument("--eval-tokens", type=int, default=32768, help="eval tokens per configuration")
    ap.add_argument("--ablations", action="store_true", help="also MLX with each CPU optimization undone")
    ap.add_argument("--only", default=None, help="comma-separated configuration names")
    sys.path.insert(0, str(ROOT))
    from common.profiles import PROFILES

    ap.add_argument(
        "--profile", default="cpu", choices=sorted(PROFILES), help="the profile whose shape to run"
    )
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.steps, args.eval_tokens)

    names = list(CONFIGS) + (list(ABLATIONS) if args.ablations else [])
    if args.only:
        names = args.only.split(",")
    print(f"{'config':16s} {'train tok/s':>11s} {'step ms':>8s} {'eval tok/s':>10s} {'peak MB':>8s} "
          f"{'max RSS MB':>10s} {'compile s':>9s}  description")  # fmt: skip
    device = "-"
    for name in names:
        framework, desc, opts = {**CONFIGS, **ABLATIONS}[name]
        env = dict(os.environ, AUTORESEARCH_PROFILE=args.profile, PYTHONUNBUFFERED="1")
        if (
            framework == "mlx"
            and not opts.get("refblas")
            and sys.platform == "linux"
            and os.path.exists(OPENBLAS)
        ):
            env["LD_PRELOAD"] = OPENBLAS  # as common/runner.py does for the mlx backend
        if framework == "torch" and not (ROOT / "train_torch.py").exists():
            print(f"{name:16s} skipped: no train_torch.py")
            continue
        cmd = [sys.executable, __file__, "--worker", name, "--steps", str(args.steps)]
        proc = subprocess.run(
            [*cmd, "--eval-tokens", str(args.eval_tokens)], cwd=ROOT, env=env, capture_output=True, text=True
        )
        if proc.returncode != 0:
            print(f"{name:16s} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        device = r["device"]
        peak = "-" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
        print(
            f"{name:16s} {r['tokens_per_step'] / r['step_s']:11,.0f} {r['step_s'] * 1e3:8.0f} {r['eval_tok_s']:10,.0f} "
            f"{peak:>8s} {r['rss_mb']:10.0f} {r['compile_s']:9.1f}  {desc}",
            flush=True,
        )
    print(
        f"shape: the {args.profile} profile, vocab {VOCAB}, random tokens; device: {device}, {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
