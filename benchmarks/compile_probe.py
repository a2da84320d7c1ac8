"""Where train_torch.py's startup and compile seconds go on a CUDA GPU, and what cuts them. Random tokens, no data.

    python benchmarks/compile_probe.py                          # every variant, cold then warm caches
    python benchmarks/compile_probe.py --variants model eageropt  # a subset
    AUTORESEARCH_PROFILE=ci python benchmarks/compile_probe.py --variants model   # a CPU smoke test of this script
    PROBE_MEMORY=1 python benchmarks/compile_probe.py --variants model  # also: what is alive at a step's peak

Each variant runs twice in a fresh process: first with empty Inductor/Triton caches (a cold machine), then again
with the caches the first run left (every later experiment of a night). Variants:

    model    train_torch.py as committed: the whole model is one torch.compile graph
    nested   Block.forward marked torch.compiler.nested_compile_region: one block compiled, stamped out per layer
    dynopt   the optimizer steps compiled with dynamic shapes: one graph for all shapes instead of one per shape
    eageropt the optimizer steps uncompiled (how much of the compile is the optimizer's, and what it buys)
    plainrelu2  the MLP's relu(x)^2 by K.relu_squared's reference (plain autograd), not its kernel (which saves
                only its output)

Variants combine with '+': `nested+dynopt`. Per run it prints the startup phases (imports, CUDA init, model), the
first two steps (the compile), the median of 10 steady steps and the top of Dynamo's compile-time table.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time

T0 = time.time()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = 8192  # the prepared tokenizer's vocabulary


# Dynamo's phases worth reading (they nest: "all" holds the rest).
PHASES = {
    "all": "_compile.compile_inner",
    "dynamo trace": "bytecode_tracing",
    "aot autograd": "create_aot_dispatcher_function",
    "inductor lowering": "GraphLowering.run",
    "inductor codegen": "Scheduler.codegen",
    "triton compile wait": "async_compile.wait",
    "guards": "build_guards",
}


def child(variant: str) -> None:
    sys.path.insert(0, ROOT)
    os.environ.setdefault("AUTORESEARCH_PROFILE", "h100")
    times = {}
    t = time.time()
    import torch

    times["import_torch"] = time.time() - t
    t = time.time()
    import train_torch as tt

    times["import_train_torch"] = time.time() - t  # its kernels' flex_attention pulls in Dynamo and Inductor
    t = time.time()
    dev = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: a smoke test of this script only
    torch.empty(1, device=dev)
    tt.tb.setup()
    times["cuda_init"] = time.time() - t

    parts = set(variant.split("+"))
    if "plainrelu2" in parts:  # the twin looks K.relu_squared up at call time
        tt.K.relu_squared = functools.partial(tt.K.relu_squared, fused=False)
    if "nested" in parts:
        tt.Block.forward = torch.compiler.nested_compile_region(tt.Block.forward)
    t = time.time()
    p = tt.PROFILE
    config = tt.build_config(p.depth, p.max_seq_len, VOCAB)
    with torch.device(dev):
        model = tt.GPT(config)
    model.init_weights()
    opt = tt.setup_optimizer(
        model, tt.UNEMBEDDING_LR, tt.EMBEDDING_LR, tt.MATRIX_LR, tt.WEIGHT_DECAY, tt.ADAM_BETAS, tt.SCALAR_LR
    )
    if "dynopt" in parts:
        opt._muon = torch.compile(tt.muon_step, dynamic=True, fullgraph=True)
        opt._adamw = torch.compile(tt.adamw_step, dynamic=True, fullgraph=True)
    if "eageropt" in parts:
        opt._muon, opt._adamw = tt.muon_step, tt.adamw_step
    step = tt.make_train_step(model, opt, compiled=True)
    tt.tb.sync()
    times["model"] = time.time() - t

    B, T = p.device_batch_size, p.max_seq_len
    n = p.total_batch_size // (B * T)
    g = torch.Generator(device=dev).manual_seed(0)
    x = [torch.randint(0, config.vocab_size, (B, T), device=dev, generator=g) for _ in range(n)]
    y = [torch.randint(0, config.vocab_size, (B, T), device=dev, generator=g) for _ in range(n)]
    opt.set_schedule(1.0, 0.85, tt.WEIGHT_DECAY)
    for i in range(2):
        t = time.time()
        loss = step(x, y)
        loss.item()
        times[f"step{i}"] = time.time() - t
    ms = []
    for _ in range(10):
        tt.tb.sync()
        t = time.time()
        loss = step(x, y)
        tt.tb.sync()
        ms.append((time.time() - t) * 1e3)
    times["step_ms"] = sorted(ms)[len(ms) // 2]
    times["loss"] = loss.item()
    times["peak_gb"] = torch.cuda.max_memory_allocated() / 1e9 if dev == "cuda" else 0.0
    if dev == "cuda" and os.environ.get("PROBE_MEMORY"):
        memory_at_peak(lambda: step(x, y))
    from torch._dynamo.utils import compile_times

    table = dict(zip(*compile_times(repr="csv", aggregate=True)))  # seconds per (nested) compiler phase
    times["phases"] = {name: float(table[key]) for name, key in PHASES.items() if key in table}
    print("RESULT " + json.dumps(times), flush=True)


def memory_at_peak(fn, top: int = 30) -> None:
    """Record the allocator's history over one fn() and print what is alive at its peak: each allocation's size,
    count and the line of (generated) code that made it, largest first."""
    import linecache

    import torch

    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.memory._record_memory_history(max_entries=1_000_000)
    fn()
    torch.cuda.synchronize()
    snap = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    live, total, peak, at_peak = {}, 0, 0, {}
    for ev in snap["device_traces"][0]:
        if ev["action"] == "alloc":
            live[ev["addr"]] = ev
            total += ev["size"]
            if total > peak:
                peak, at_peak = total, dict(live)
        elif ev["action"] == "free_completed" and ev["addr"] in live:
            total -= live.pop(ev["addr"])["size"]
    groups = {}
    for ev in at_peak.values():
        frame = next(
            (f for f in ev["frames"] if "torch/" not in f["filename"]),
            ev["frames"][0] if ev["frames"] else None,
        )
        where = "?" if frame is None else f"{os.path.basename(frame['filename'])}:{frame['line']}"
        code = "" if frame is None else linecache.getline(frame["filename"], frame["line"]).strip()[:110]
        g = groups.setdefault((ev["size"], where), [0, code])
        g[0] += 1
    print(
        f"MEMORY before the step {base / 2**20:,.0f} MiB; peak of the step's own allocations {peak / 2**20:,.0f} MiB"
    )
    for (size, where), (n, code) in sorted(groups.items(), key=lambda kv: -kv[0][0] * kv[1][0])[:top]:
        print(f"MEMORY {n:3d} x {size / 2**20:9.1f} MiB  {where:<28} {code}")


def run(variant: str, cache: str, label: str) -> dict:
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache, TRITON_CACHE_DIR=os.path.join(cache, "triton"))
    t = time.time()
    p = subprocess.run(
        [sys.executable, __file__, "--child", variant], env=env, capture_output=True, text=True, cwd=ROOT
    )
    wall = time.time() - t
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
    for ln in p.stdout.splitlines():
        if ln.startswith("MEMORY "):
            print(ln[7:], flush=True)
    if p.returncode or line is None:
        print(
            f"{variant} ({label}) failed, exit {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}",
            flush=True,
        )
        return {}
    r = json.loads(line[7:])
    r.update(variant=variant, cache=label, wall=wall)
    print(
        f"[{time.time() - T0:6.1f}s] {variant:<16} {label:<5} wall {wall:5.1f}s | import torch {r['import_torch']:.1f} "
        f"train_torch {r['import_train_torch']:.1f} cuda {r['cuda_init']:.1f} model {r['model']:.1f} | step0 "
        f"{r['step0']:.1f} step1 {r['step1']:.1f} | {r['step_ms']:.1f} ms/step, peak {r['peak_gb']:.1f} GB, "
        f"loss {r['loss']:.4f}",
        flush=True,
    )
    print("    phases: " + ", ".join(f"{k} {v:.1f}" for k, v in r["phases"].items()), flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", nargs="+", default=["model", "nested", "dynopt", "nested+dynopt"])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    results = []
    for v in args.variants:
        with tempfile.TemporaryDirectory(prefix="inductor-") as cache:
            results += [run(v, cache, "cold"), run(v, cache, "warm")]
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "compile_probe.json"), "w") as f:
            json.dump([r for r in results if r], f, indent=1)
    print("\nvariant          cache  startup  step0  step1  compile  ms/step  peak GB")
    for r in results:
        if r:
            startup = r["import_torch"] + r["import_train_torch"] + r["cuda_init"] + r["model"]
            print(
                f"{r['variant']:<16} {r['cache']:<5} {startup:8.1f} {r['step0']:6.1f} {r['step1']:6.1f} "
                f"{r['step0'] + r['step1']:8.1f} {r['step_ms']:8.1f} {r['peak_gb']:8.1f}"
            )


if __name__ == "__main__":
    main()
