"""The device proof of the GPU tiers: each tier's profile trains and evaluates under a memory cap equal to the least
memory that picks it (common/profiles.py TIERS), on one big card. Prints one table: profile, cap, estimated and
measured peak, tokens/s, val_bpb, and whether it fits.

    # on the GPU machine, with the staged corpus of bench_h100.py (carry .stage/tokens.tar.xz and
    # .stage/wiki-data/{manifest.json,tokenizer.json,token_bytes.npy}):
    python benchmarks/tier_caps.py                          # gpu40 gpu24 gpu8 gpu6, 120 s each, compiled torch
    python benchmarks/tier_caps.py --budget 60 --tiers gpu24 gpu8
    python benchmarks/tier_caps.py --no-triton --tiers gpu24 gpu8 gpu6  # as on Windows: no Triton, no torch.compile
    python benchmarks/tier_caps.py --twin mlx --tiers gpu24  # MLX's CUDA build (staged), judged by its own peak

torch runs under AUTORESEARCH_MEMORY_CAP_GB (backends/torch_backend.py setup(): torch's per-process memory
fraction), so a run that would not fit the card runs out of memory here too. --no-triton hides Triton from the run
(a sitecustomize that makes `import triton` fail, and AUTORESEARCH_FA4=0): train_torch.py then runs uncompiled with
SDPA, as on Windows. MLX gets mx.set_memory_limit at start-up, a guideline rather than a hard cap, so its row is
judged by the peak its allocator reports. Each run is `autoresearch train --backend <cuda|mlx> --profile
<tier>@<budget>s` through common/runner.py; logs and tier_caps.json go to $OUT (or .stage/out).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_h100 import add_stage_args, stage  # noqa: E402  (one way to stage the corpus)
from common.memory import estimate  # noqa: E402
from common.profiles import TIERS, get_profile, run_timeout  # noqa: E402
from common.runner import run_experiment  # noqa: E402

CAP_ENV = "AUTORESEARCH_MEMORY_CAP_GB"  # read by backends/torch_backend.py setup()
NO_TRITON = "import sys\nsys.modules['triton'] = None  # tier_caps.py --no-triton: `import triton` fails, as on Windows\n"
MLX_LIMIT = (
    "import os\nimport mlx.core as mx\n"
    "mx.set_memory_limit(int(float(os.environ['AUTORESEARCH_MEMORY_CAP_GB']) * 2**30))  # tier_caps.py --twin mlx\n"
)
T0 = time.time()


def log(msg: str) -> None:
    print(f"[tier_caps {time.time() - T0:6.1f}s] {msg}", flush=True)


def quiet(line: str) -> None:
    """The device output kept short: setup lines, every 50th step, failures and the summary."""
    if not line.startswith("step ") or re.match(r"step \d*[05]0 ", line) or "FAIL" in line:
        sys.stdout.write(line)
        sys.stdout.flush()


def site_dir(out: Path, twin: str, no_triton: bool) -> Path | None:
    """A folder with a sitecustomize.py for the run's start-up (on PYTHONPATH), or None when none is needed."""
    code = (NO_TRITON if no_triton else "") + (MLX_LIMIT if twin == "mlx" else "")
    if not code:
        return None
    path = out / "site"
    path.mkdir(parents=True, exist_ok=True)
    (path / "sitecustomize.py").write_text(code)
    return path


def run_tier(name: str, budget: float, cap: float, args, out: Path) -> dict:
    profile = get_profile(f"{name}@{budget:g}s")
    backend = "mlx" if args.twin == "mlx" else "cuda"
    device = "cuda"
    est = estimate(profile, args.twin, device, compiled=not args.no_triton, memory_gib=cap)
    env = {CAP_ENV: f"{cap:g}"}
    site = site_dir(out, args.twin, args.no_triton)
    if site:
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(site), str(ROOT), os.environ.get("PYTHONPATH")])
        )
    if args.no_triton:
        env["AUTORESEARCH_FA4"] = "0"
    mode = f"{args.twin}" + (" uncompiled" if args.no_triton else "")
    log(f"{profile.name} ({mode}) under a {cap:g} GiB cap; estimated peak {est.total_gib:.1f} GiB")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # run_experiment's child inherits this process's environment
    try:
        log_path = (
            out / f"{profile.name.replace('@', '_')}_{args.twin}{'_notriton' if args.no_triton else ''}.log"
        )
        result = run_experiment(
            backend, profile.name, log_path, ROOT / args.data_dir, timeout=run_timeout(profile), on_line=quiet
        )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    text = Path(log_path).read_text(errors="replace")
    oom = bool(re.search(r"out of memory|OutOfMemoryError", text, re.I))
    peak = (result.get("peak_vram_mb") or 0.0) / 1024
    ok = result.get("exit_code") == 0 and "val_bpb" in result and not oom
    return {
        "profile": profile.name, "twin": mode, "cap_gib": cap, "estimate_gib": round(est.total_gib, 2),
        "margin": est.margin, "peak_gib": round(peak, 2) if peak else None,
        "tokens_per_second": result.get("tokens_per_second"), "val_bpb": result.get("val_bpb"),
        "eval_seconds": result.get("eval_seconds"), "exit_code": result.get("exit_code"), "oom": oom,
        "fits": bool(ok and peak <= cap), "log": log_path.name,
    }  # fmt: skip


def table(rows: list[dict]) -> str:
    head = f"{'profile':<16}{'twin':<18}{'cap GiB':>8}{'est GiB':>9}{'peak GiB':>9}{'tokens/s':>12}{'val_bpb':>10}  fits"
    lines = [head]
    for r in rows:
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] else "-"
        tok = f"{r['tokens_per_second']:,.0f}" if r["tokens_per_second"] else "-"
        bpb = f"{r['val_bpb']:.4f}" if r["val_bpb"] else "-"
        verdict = "yes" if r["fits"] else "OUT OF MEMORY" if r["oom"] else f"no (exit {r['exit_code']})"
        lines.append(
            f"{r['profile']:<16}{r['twin']:<18}{r['cap_gib']:>8g}{r['estimate_gib']:>9.2f}{peak:>9}{tok:>12}"
            f"{bpb:>10}  {verdict}"
        )
    lines.append("est: common/memory.py's peak estimate; peak: the run's allocator peak (training and eval)")
    return "\n".join(lines)


def main() -> None:
    gpu_tiers = [t.name for t in TIERS if t.hardware == "nvidia"]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiers", nargs="+", default=[t for t in gpu_tiers if t != "h100"], choices=gpu_tiers)
    ap.add_argument(
        "--budget", type=float, default=120.0, help="training seconds per run (the profile @<s>s)"
    )
    ap.add_argument(
        "--cap", type=float, default=None, help="GiB for every run (default: each tier's least memory)"
    )
    ap.add_argument("--twin", choices=("torch", "mlx"), default="torch")
    ap.add_argument(
        "--no-triton", action="store_true", help="torch without Triton: uncompiled, as on Windows"
    )
    add_stage_args(ap, run_cost=90)
    args = ap.parse_args()
    if args.no_triton and args.twin == "mlx":
        raise SystemExit("--no-triton is for the torch twin")
    out = Path(os.environ.get("OUT") or ROOT / ".stage" / "out")
    out.mkdir(parents=True, exist_ok=True)
    log(f"data staged in {stage(args.corpus, args.data_dir, args.tokens):.1f}s")
    caps = {t.name: t.memory_gib for t in TIERS}
    rows = []
    for name in args.tiers:
        if args.deadline and time.time() - T0 + args.budget + args.run_cost > args.deadline:
            log(f"skipping {name}: it would pass the {args.deadline:g}s deadline")
            continue
        rows.append(run_tier(name, args.budget, args.cap or caps[name], args, out))
        (out / "tier_caps.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows), flush=True)
    sys.exit(0 if rows and all(r["fits"] for r in rows) else 1)


if __name__ == "__main__":
    main()
