"""FlexAttention kernel options for the "S" (sliding-window) layers, timed against cuDNN's causal attention on the
h100 profile's shape (one micro-batch: B 128, H 4, T 2048, D 128, bf16, window 1024). One device call:

    python3 benchmarks/flex_tune.py          # prints a table; flex_tune.json to $OUT

Each row is forward + backward (median of 10 after 3 warm-ups, CUDA events), checked against the default
configuration's output and gradients. An S layer does 3/4 of an L layer's work: "SSSL no slower than L" needs
the window kernel at <= ~1.33x cuDNN causal's time per unit of work, i.e. an S call no slower than an L call.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from gpu_profile import bench  # median ms by CUDA events (beside this script; it puts the root on sys.path)
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from backends import torch_kernels as K

B, H, T, D, W = 128, 4, 2048, 128, 1024
CONFIGS = {
    "default": {},
    "rows safe": {"ROWS_GUARANTEED_SAFE": True},
    "fwd 128x128 w8 s2": {"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 8, "num_stages": 2},
    "fwd 128x64 w4 s3": {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3},
    "fwd 128x64 w8 s3": {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3},
    "fwd 64x128 w4 s3": {"BLOCK_M": 64, "BLOCK_N": 128, "num_warps": 4, "num_stages": 3},
    "bwd 64/128 128/64 w8": {
        "BLOCK_M1": 64,
        "BLOCK_N1": 128,
        "BLOCK_M2": 128,
        "BLOCK_N2": 64,
        "num_warps": 8,
    },
    "bwd 32/128 128/32 w4": {
        "BLOCK_M1": 32,
        "BLOCK_N1": 128,
        "BLOCK_M2": 128,
        "BLOCK_N2": 32,
        "num_warps": 4,
    },
}


def main() -> int:
    out_dir = Path(os.environ.get("OUT") or ".stage/out")
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    q, k, v = (
        torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3)
    )
    dout = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16)
    scale = D**-0.5

    mask = create_block_mask(K._window_mod(W, 0), None, None, T, T, device="cuda")  # K.attention's window

    def fwd_bwd(f):
        def run():
            for t in (q, k, v):
                t.grad = None
            o = f(q, k, v)
            o.backward(dout)
            return o

        return run

    rows = []

    def cudnn_causal(a, b, c):
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(a, b, c, is_causal=True, scale=scale)

    ms = bench(fwd_bwd(cudnn_causal))
    rows.append(dict(name="cuDNN SDPA causal (an L layer)", ms=ms))
    print(f"{rows[-1]['name']:<36} {ms:7.2f} ms fwd+bwd", flush=True)
    ref = None
    for name, opts in CONFIGS.items():
        t0 = time.time()
        torch._dynamo.reset()  # a fresh compile per option set (else the recompile limit can fall back to eager)
        try:
            f = torch.compile(
                lambda a, b, c, o=opts: flex_attention(
                    a, b, c, block_mask=mask, scale=scale, kernel_options=o
                )
            )
            run = fwd_bwd(f)
            o = run()
            got = [o.detach().float(), *(t.grad.float() for t in (q, k, v))]
            if ref is None:  # the first configuration that runs (the defaults, unless they fail)
                ref, ref_name = got, name
            err = max((g - r).abs().max().item() for g, r in zip(got, ref))
            ms = bench(run)
            rows.append(
                dict(
                    name=f"flex window: {name}",
                    opts=opts,
                    ms=ms,
                    max_diff_vs=(ref_name, err),
                    compile_s=time.time() - t0,
                )
            )
            print(
                f"{rows[-1]['name']:<36} {ms:7.2f} ms fwd+bwd  diff {err:.1e}  ({time.time() - t0:.0f}s)",
                flush=True,
            )
        except Exception as e:  # noqa: BLE001 - an option set this torch rejects: report and go on
            rows.append(
                dict(name=f"flex window: {name}", opts=opts, error=f"{type(e).__name__}: {str(e)[:200]}")
            )
            print(f"{rows[-1]['name']:<36} rejected: {rows[-1]['error'][:120]}", flush=True)
    (out_dir / "flex_tune.json").write_text(
        json.dumps(dict(torch=torch.__version__, device=torch.cuda.get_device_name(), rows=rows), indent=1)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
