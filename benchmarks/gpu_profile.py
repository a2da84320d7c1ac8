"""Profile train_torch.py on a CUDA GPU before optimizing it: ceilings, attention kernels, compiled-vs-eager
correctness, steady step time per window pattern, and where a step's GPU time goes. Random tokens, no data needed.

    python benchmarks/gpu_profile.py                 # h100 shape (depth 8, B 128, T 2048, vocab 8192)
    python benchmarks/gpu_profile.py --steps 5 --skip attention

Prints one table per section; with $OUT set, also writes the profiler's kernel table there.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AUTORESEARCH_PROFILE", "h100")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import train_torch as tt  # noqa: E402
from backends import torch_backend as tb  # noqa: E402
from backends import torch_kernels as K  # noqa: E402
from common.mfu import mfu_percent  # noqa: E402

OUT = Path(os.environ["OUT"]) if os.environ.get("OUT") else None


def bench(fn, warmup=3, reps=10):
    """Median milliseconds of fn() by CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def section(name):
    print(f"\n=== {name} ({time.strftime('%H:%M:%S')})", flush=True)


def ceilings():
    n = 8192
    a, b = (
        torch.randn(n, n, device="cuda", dtype=torch.bfloat16),
        torch.randn(n, n, device="cuda", dtype=torch.bfloat16),
    )
    ms = bench(lambda: a @ b)
    print(f"bf16 matmul {n}^3: {2 * n**3 / ms / 1e9:.0f} TFLOP/s")
    x = torch.randn(2**28, device="cuda")  # 1 GiB
    y = torch.empty_like(x)
    ms = bench(lambda: y.copy_(x))
    print(f"device copy 1 GiB: {2 * x.numel() * 4 / ms / 1e6:.0f} GB/s (read + write)")
    # The model's own GEMM shapes (tokens x in @ in x out), bf16, fwd only.
    M = 128 * 2048
    for k, nn_ in ((512, 512), (512, 2048), (2048, 512), (512, 8192)):
        a = torch.randn(M, k, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(nn_, k, device="cuda", dtype=torch.bfloat16)
        ms = bench(lambda a=a, w=w: F.linear(a, w))
        print(f"linear {M}x{k} @ {k}x{nn_}: {ms:.3f} ms = {2 * M * k * nn_ / ms / 1e9:.0f} TFLOP/s")


def attention_kernels(B=128, H=4, T=2048, D=128):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def qkv():
        return [
            torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3)
        ]

    q, k, v = qkv()
    do = torch.randn_like(q)
    causal_flops = 4 * B * H * T * T * D / 2  # fwd, useful (masked half skipped)
    rows = []

    def run(name, f, frac=1.0):
        try:
            fwd = bench(lambda: f(q, k, v))
            both = bench(lambda: torch.autograd.grad(f(q, k, v), (q, k, v), do))
            fl = causal_flops * frac
            rows.append((name, fwd, both, fl / fwd / 1e9, 3.5 * fl / both / 1e9))
        except Exception as e:  # one kernel missing must not stop the rest
            print(f"{name}: {type(e).__name__}: {str(e)[:200]}")

    for name, backend in (
        ("sdpa cudnn causal", SDPBackend.CUDNN_ATTENTION),
        ("sdpa flash causal", SDPBackend.FLASH_ATTENTION),
    ):

        def f(q, k, v, backend=backend):
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)

        run(name, f)
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    fx = torch.compile(flex_attention, dynamic=False)
    causal = create_block_mask(lambda b, h, qi, ki: ki <= qi, None, None, T, T, device="cuda")
    run("flex causal", lambda q, k, v: fx(q, k, v, block_mask=causal))
    w = T // 2
    frac = (w * (w + 1) / 2 + (T - w) * (w + 1)) / (T * (T + 1) / 2)  # allowed (q, k) pairs vs causal
    window = create_block_mask(K._window_mod(w, 0), None, None, T, T, device="cuda")  # K.attention's window
    run(f"flex window {w}", lambda q, k, v: fx(q, k, v, block_mask=window), frac)
    print(f"B={B} H={H} T={T} D={D} bf16; TFLOP/s counts only unmasked work (fwd+bwd = 3.5x fwd)")
    print(f"{'kernel':<22}{'fwd ms':>9}{'fwd+bwd ms':>12}{'fwd TF/s':>10}{'f+b TF/s':>10}")
    for r in rows:
        print(f"{r[0]:<22}{r[1]:>9.2f}{r[2]:>12.2f}{r[3]:>10.0f}{r[4]:>10.0f}")


def build(pattern, T=2048, vocab=8192):
    cfg = dataclasses.replace(tt.build_config(tt.DEPTH, T, vocab), window_pattern=pattern)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = tt.GPT(cfg)
    model.init_weights()
    return model


def step_time(pattern, steps, profile=False):
    """Steady train step (2 micro-batches + optimizer) through train_torch.make_train_step; returns a dict."""
    model = build(pattern)
    opt = tt.setup_optimizer(
        model, tt.UNEMBEDDING_LR, tt.EMBEDDING_LR, tt.MATRIX_LR, tt.WEIGHT_DECAY, tt.ADAM_BETAS, tt.SCALAR_LR
    )
    train_step = tt.make_train_step(model, opt, compiled=True)
    B, T = tt.DEVICE_BATCH_SIZE, tt.MAX_SEQ_LEN
    accum = tt.TOTAL_BATCH_SIZE // (B * T)

    def tokens():
        return [torch.randint(0, 8192, (B, T), device="cuda", dtype=torch.int32) for _ in range(accum)]

    batches = [(tokens(), tokens()) for _ in range(2)]

    def one(i):
        opt.set_schedule(1.0, tt.get_muon_momentum(i), tt.WEIGHT_DECAY)
        return train_step(*batches[i % 2])

    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    one(0)
    torch.cuda.synchronize()
    first = time.time() - t0
    t0 = time.time()
    for i in range(1, 3):
        one(i)
    torch.cuda.synchronize()
    second = time.time() - t0
    t0 = time.time()
    for i in range(steps):
        loss = one(i)
    torch.cuda.synchronize()
    dt = (time.time() - t0) / steps
    tok = tt.TOTAL_BATCH_SIZE / dt
    res = dict(
        pattern=pattern,
        first_step_s=first,
        steps_2_3_s=second,
        step_ms=dt * 1e3,
        tok_s=tok,
        mfu=mfu_percent(model.estimate_flops(), tok, tb.device_name()),
        peak_gb=torch.cuda.max_memory_allocated() / 1e9,
        loss=loss.item(),
    )
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as prof

        with prof(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
            for i in range(2):
                one(i)
            torch.cuda.synchronize()
        table = p.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=70)
        if OUT:
            (OUT / f"profile_{pattern}.txt").write_text(table)
        categorize(p, steps=2)
    # Correctness: per-token losses of the compiled training graph (FlexAttention windows) vs the eager model
    # (K.attention outside torch.compile: SDPA with boolean masks), same weights, one micro-batch.
    x, y = batches[0][0][0], batches[0][1][0]
    with tb.autocast(), tb.sdpa_backends():
        got = train_step.model(x, y, reduction="none").detach().float()  # grad on: the training graph
        with torch.no_grad():
            ref = model(x, y, reduction="none").float()
    res["compiled_vs_eager_rel"] = ((got - ref).norm() / ref.norm()).item()
    # The final eval's cost: the same graph, 9 chunks of 128 rows (~the wiki val set).
    rows = torch.randint(0, 8192, (9 * B, T + 1), dtype=torch.int32).numpy()
    t0 = time.time()
    tb.make_loss_fn(train_step.model, max_rows=B, training_graph=True)(rows[:, :-1], rows[:, 1:])
    res["eval_2.4M_tokens_s"] = time.time() - t0
    print(res, flush=True)
    return res


def categorize(p, steps):
    """GPU time per step by kernel family."""
    cats, total = {}, 0.0
    for e in p.key_averages():
        if e.device_type != torch.autograd.DeviceType.CUDA:
            continue
        t = e.self_device_time_total
        k = e.key.lower()
        if any(s in k for s in ("flex", "attention", "fmha", "cudnn", "flash", "sdpa")):
            c = "attention"
        elif any(s in k for s in ("gemm", "nvjet", "cutlass", "xmma", "matmul")):
            c = "matmul"
        elif k.startswith("triton"):
            c = "triton (fused elementwise/reductions)"
        elif "memcpy" in k or "memset" in k:
            c = "memcpy/memset"
        else:
            c = "other: " + e.key[:40]
        cats[c] = cats.get(c, 0.0) + t
        total += t
    print(f"GPU time per step by kernel family (total {total / steps / 1e3:.1f} ms):")
    for c, t in sorted(cats.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {c:<50}{t / steps / 1e3:>9.2f} ms {100 * t / total:>6.1f}%")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--skip", nargs="*", default=[])
    args = ap.parse_args()
    tb.setup()
    print(f"torch {torch.__version__}, {tb.device_name()}, {tb.detect().compile_reason}")
    results = []
    for name, fn in (
        ("ceilings", ceilings),
        ("attention", attention_kernels),
        ("step SSSL", lambda: results.append(step_time("SSSL", args.steps, profile=True))),
        ("step L", lambda: results.append(step_time("L", args.steps, profile=True))),
    ):
        if any(s in name for s in args.skip):
            continue
        section(name)
        try:
            fn()
        except Exception:
            traceback.print_exc()
        torch.cuda.empty_cache()
    from torch._dynamo.utils import counters

    section("summary")
    print("dynamo:", {k: dict(v) for k, v in counters.items() if k in ("stats", "graph_break", "recompiles")})
    print(f"{'pattern':<8}{'first s':>9}{'step ms':>9}{'tok/s':>12}{'MFU %':>7}{'peak GB':>9}")
    for r in results:
        print(
            f"{r['pattern']:<8}{r['first_step_s']:>9.1f}{r['step_ms']:>9.1f}{r['tok_s']:>12,.0f}{r['mfu']:>7.1f}{r['peak_gb']:>9.1f}"
        )


if __name__ == "__main__":
    main()
