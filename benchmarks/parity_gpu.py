"""The GPU row of the parity check in one device call: torch on CUDA (float32, TF32 off) against MLX on the CPU,
from the same weights, on the demo data prepared on the spot. Prints the table and writes parity.json to $OUT.

    source .stage/b/activate.sh && python3 benchmarks/parity_gpu.py    # MLX's CUDA build brings its CPU backend
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    out = Path(os.environ.get("OUT") or ROOT / ".stage" / "out")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="parity-"))
    os.environ.setdefault("AUTORESEARCH_HOME", str(work / "home"))
    data = work / "demo"
    t = time.time()
    subprocess.run(
        [sys.executable, "-m", "common.cli", "prepare", "--dataset", "demo", "--data-dir", str(data)],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    print(f"demo data prepared in {time.time() - t:.1f}s", flush=True)

    import mlx.core as mx
    import torch

    from common.parity import run_parity

    t = time.time()
    device = sys.argv[1] if len(sys.argv) > 1 else "cuda"  # `cpu` to try this script off the GPU
    report = run_parity(data_dir=data, torch_device=device, mlx_device="cpu")
    name = torch.cuda.get_device_name() if device == "cuda" else device
    print(f"torch {torch.__version__} on {name}, mlx {mx.__version__} on the CPU")
    print(f"parity in {time.time() - t:.1f}s")
    print(report.table())
    (out / "parity.json").write_text(json.dumps(report.to_dict(), indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
