"""A whole H100 measurement of train_torch.py in one device call: prepare the staged corpus, run experiments at a
chosen budget, print one table (tokens/s, MFU, peak GB, compile s, startup+compile+eval s, val_bpb) and keep logs.

    # here, once: stage the corpus and prepare it (tokenizer + shards), then pack the shards (~40 MB)
    mkdir -p .stage/wiki && cp ../shared/corpus/wiki/{train_00,train_01,train_02,val}.parquet .stage/wiki/
    autoresearch prepare --dataset .stage/wiki --data-dir .stage/wiki-data
    tar -cf - -C .stage/wiki-data tokens | xz -6 > .stage/tokens.tar.xz
    # on the device, carrying .stage/tokens.tar.xz and .stage/wiki-data/{manifest.json,tokenizer.json,token_bytes.npy}
    # (or .stage/wiki plus those three, to tokenize there):
    python benchmarks/bench_h100.py --runs SSSL SSSL SSSL --budget 120 --deadline 585

A run spec is `[torch:|mlx:]PATTERN[,NAME=VALUE...]`: `SSSL` is train_torch.py as committed, `mlx:SSSL` is
train_mlx.py (MLX's CUDA build on the path: ../shared/tools/mlx-cuda-stage.sh), `SSSL,DEVICE_BATCH_SIZE=64` a copy
with that top-level constant replaced. NAME is any one-line top-level `NAME = ...` of the twin (the hyperparameters:
DEVICE_BATCH_SIZE, MATRIX_LR, ASPECT_RATIO, HEAD_DIM, DEPTH, COMPILE, ...), or `K.NAME`, a constant of the twin's
kernels module (backends/*_kernels.py), set in the copy after its import: `SSSL,K.CHUNK_MIN_SEQ_LEN=4096` runs one
attention call per S layer at T 2048 instead of query chunks (what `WINDOW_CHUNK=0` did when that was a twin
constant). The step counts (COMPILE_STEPS, CALIBRATION_STEPS) are common/protocol.py's, not a run's. Each runs under
AUTORESEARCH_PROFILE=h100 and AUTORESEARCH_TIME_BUDGET. Logs and results.json go to $OUT (or .stage/out).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.summary import parse_summary  # noqa: E402

T0 = time.time()


def log(msg: str) -> None:
    print(f"[bench {time.time() - T0:6.1f}s] {msg}", flush=True)


def stage(corpus: Path, data_dir: Path, archive: Path) -> float:
    """Token shards from `archive` (tokens/ as tar.xz, made here by the same `autoresearch prepare`) when it is
    there, so no device minutes go to tokenizing; else prepare from the corpus."""
    t = time.time()
    if archive.exists() and not (ROOT / data_dir / "tokens").exists():
        with tarfile.open(ROOT / archive) as tar:
            tar.extractall(ROOT / data_dir, filter="data")
        log(f"unpacked {archive} in {time.time() - t:.1f}s")
    try:
        from common.data import PreparedData

        d = PreparedData.open(ROOT / data_dir)  # checks every shard's sha256 against the manifest
        log(
            f"data ready: {d.manifest['stats']['train_tokens']:,} train tokens, {d.manifest['stats']['val_tokens']:,} val"
        )
        return time.time() - t
    except Exception as e:  # noqa: BLE001 - anything missing: build it
        log(f"no usable prepared data ({type(e).__name__}: {e}); preparing")
    return prepare(corpus, data_dir) + (time.time() - t)


def prepare(corpus: Path, data_dir: Path) -> float:
    t = time.time()
    env = dict(os.environ, AUTORESEARCH_HOME=str(ROOT / ".stage" / "home"))
    cmd = [
        sys.executable,
        "-m",
        "common.cli",
        "prepare",
        "--dataset",
        str(corpus),
        "--data-dir",
        str(data_dir),
    ]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    return time.time() - t


def parse_spec(spec: str) -> dict:
    """A run: `[torch:|mlx:]PATTERN[,NAME=VALUE...]`, e.g. `SSSL`, `mlx:SSSL`, `SSSL,DEVICE_BATCH_SIZE=64`,
    `SSSL,K.CHUNK_MIN_SEQ_LEN=4096`."""
    head = spec.split(",", 1)[0]  # the backend prefix can only be before the first override
    backend, rest = spec.split(":", 1) if ":" in head else ("torch", spec)
    if backend not in ("torch", "mlx"):
        raise SystemExit(f"run {spec!r}: backend must be torch or mlx")
    pattern, *sets = rest.split(",")  # so an override's value cannot contain a comma: use a name for tuples
    if not re.fullmatch(r"[SL]+", pattern):
        raise SystemExit(f"run {spec!r}: window pattern must be made of S and L")
    overrides = {}
    for kv in sets:
        name, eq, value = kv.partition("=")
        if not eq or not re.fullmatch(r"(K\.)?[A-Z_][A-Z0-9_]*", name):
            raise SystemExit(
                f"run {spec!r}: overrides are NAME=VALUE (a twin constant) or K.NAME=VALUE (a kernels constant), "
                "with an upper-case name"
            )
        overrides[name] = value
    return dict(
        spec=spec, backend=backend, pattern=pattern, overrides={"WINDOW_PATTERN": f'"{pattern}"', **overrides}
    )


def script_for(run: dict, i: int) -> Path:
    """A copy of the run's training script with its constants replaced (each a one-line top-level `NAME = ...`),
    and its kernels module's constants (`K.NAME`) set right after the script imports it as K."""
    script, kernels = f"train_{run['backend']}.py", f"backends/{run['backend']}_kernels.py"
    src = (ROOT / script).read_text()
    for name, value in run["overrides"].items():
        line = f"{name} = {value}"
        if name.startswith("K."):
            if not re.search(rf"^{name[2:]} = ", (ROOT / kernels).read_text(), flags=re.M):
                raise SystemExit(f"{kernels} has no top-level `{name[2:]} = ...` constant to set")
            import_k = r"^from backends import \w+_kernels as K\b.*$"
            src, n = re.subn(import_k, lambda m, line=line: f"{m.group(0)}\n{line}", src, count=1, flags=re.M)
            if n != 1:
                raise SystemExit(f"{script} does not import its kernels as K: cannot set {name}")
            continue
        src, n = re.subn(rf"^{name} = .*$", lambda m, line=line: line, src, count=1, flags=re.M)
        if n != 1:
            raise SystemExit(
                f"{script} has no top-level `{name} = ...` line to set (a constant of {kernels} is set as K.NAME, "
                "e.g. K.CHUNK_MIN_SEQ_LEN)"
            )
    path = ROOT / ".stage" / f"run{i}_train_{run['backend']}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(src)
    return path


def run(i: int, spec: str, budget: float, data_dir: Path, out: Path) -> dict:
    r = parse_spec(spec)
    script = script_for(r, i)
    env = dict(
        os.environ,
        AUTORESEARCH_PROFILE="h100",
        AUTORESEARCH_TIME_BUDGET=str(budget),
        AUTORESEARCH_DATA_DIR=str(ROOT / data_dir),
        AUTORESEARCH_BACKEND="cuda",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
    )
    log_path = out / f"run{i}_{re.sub(r'[^A-Za-z0-9_-]+', '_', spec)}.log"
    log(f"run {i}: {spec}, budget {budget:g}s -> {log_path.name}")
    with open(log_path, "w") as f:
        p = subprocess.Popen(
            [sys.executable, str(script)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for line in p.stdout:
            f.write(line)
            # Keep the device output short: the setup lines, every 50th step, the summary.
            if not line.startswith("step ") or re.match(r"step \d*[05]0 ", line) or "FAIL" in line:
                sys.stdout.write(line)
        rc = p.wait()
    text = log_path.read_text()
    try:
        s = parse_summary(text)
    except ValueError:
        s = {}
    s.update(run=i, pattern=spec, exit_code=rc)
    m = re.search(r"calibration (\d+) ms/step", text)
    s["calibrated_ms"] = int(m.group(1)) if m else None
    return s


def table(results: list[dict]) -> str:
    width = max([9] + [len(r["pattern"]) + 1 for r in results])
    head = f"{'run':>3} {'run spec':<{width}}{'steps':>6}{'tok/s':>12}{'MFU%':>7}{'peakGB':>8}{'start':>7}{'compile':>8}{'calib':>7}{'eval':>6}{'overhead':>9}{'val_bpb':>10}"
    lines = [head]
    for r in results:
        if "val_bpb" not in r:
            lines.append(f"{r['run']:>3} {r['pattern']:<{width}} failed (exit {r['exit_code']})")
            continue
        overhead = r["total_seconds"] - r["training_seconds"]
        lines.append(
            f"{r['run']:>3} {r['pattern']:<{width}}{r['num_steps']:>6}{r['tokens_per_second']:>12,.0f}{r['mfu_percent'] or 0:>7.1f}"
            f"{r['peak_vram_mb'] / 1024:>8.1f}{r['startup_seconds']:>7.1f}{r['compile_seconds']:>8.1f}"
            f"{r['calibration_seconds']:>7.1f}{r['eval_seconds']:>6.1f}{overhead:>9.1f}{r['val_bpb']:>10.4f}"
        )
    by = {}
    for r in results:
        if "val_bpb" in r:
            by.setdefault(r["pattern"], []).append(r["val_bpb"])
    for pat, v in by.items():
        if len(v) > 1:
            lines.append(
                f"{pat}: val_bpb mean {sum(v) / len(v):.4f}, spread (max - min) {max(v) - min(v):.4f} over {len(v)} runs"
            )
    lines.append("overhead = total - training = startup + compile + calibration + eval (seconds)")
    return "\n".join(lines)


def add_stage_args(ap: argparse.ArgumentParser, run_cost: float) -> None:
    """The staged corpus and the call's time limit, as every device benchmark that calls stage() takes them."""
    # Relative to the repo root, as when the tokenizer was trained here: the manifest then matches exactly.
    ap.add_argument("--corpus", type=Path, default=Path(".stage/wiki"))
    ap.add_argument("--data-dir", type=Path, default=Path(".stage/wiki-data"))
    ap.add_argument("--tokens", type=Path, default=Path(".stage/tokens.tar.xz"), help="carried token shards")
    ap.add_argument(
        "--deadline", type=float, default=0, help="skip runs that would end after this many seconds"
    )
    ap.add_argument(
        "--run-cost", type=float, default=run_cost, help="expected seconds per run beyond the budget"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--runs", nargs="+", default=["SSSL"], help="[torch:|mlx:]PATTERN[,NAME=VALUE...] per run"
    )
    ap.add_argument("--budget", type=float, default=120.0, help="training seconds per run")
    add_stage_args(ap, run_cost=70)
    args = ap.parse_args()
    out = Path(os.environ.get("OUT") or ROOT / ".stage" / "out")
    out.mkdir(parents=True, exist_ok=True)

    log(
        subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    prep = stage(args.corpus, args.data_dir, args.tokens)
    log(f"data staged in {prep:.1f}s")
    results = []
    for spec in args.runs:
        parse_spec(spec)  # every spec checked before the first run starts
    for i, spec in enumerate(args.runs, 1):
        if args.deadline and time.time() - T0 + args.budget + args.run_cost > args.deadline:
            log(f"skipping run {i} ({spec}): it would pass the {args.deadline:g}s deadline")
            continue
        results.append(run(i, spec, args.budget, args.data_dir, out))
        (out / "results.json").write_text(json.dumps(dict(prepare_seconds=prep, runs=results), indent=1))
    print()
    print(table(results))
    log("done")


if __name__ == "__main__":
    main()
