"""torch attention for a windowed ("S") layer on a CUDA GPU, compiled as train_torch.py runs it: one FlexAttention
call, and query chunks of T / 2 (K.window_chunks: a causal cuDNN chunk, then FlexAttention; what K.attention runs at
T >= K.CHUNK_MIN_SEQ_LEN), with a causal ("L") layer for scale. Each variant is checked against float32 attention
with the boolean window mask, for its output and its q, k, v gradients. Random inputs, no data.

    python3 benchmarks/torch_window_attention.py                # h100 shape: B 128, H 4, T 2048, D 128, window 1024
    python3 benchmarks/torch_window_attention.py --rows 64 --reps 20

Prints one table (median ms of forward and of forward + backward by CUDA events, and the largest errors); with $OUT
set, writes torch_window_attention.json there. The mirror of mlx_window_attention.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AUTORESEARCH_PROFILE", "h100")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.attention.flex_attention import create_block_mask  # noqa: E402

import train_torch as tt  # noqa: E402
from backends import torch_kernels as K  # noqa: E402
from benchmarks.gpu_profile import bench  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=tt.DEVICE_BATCH_SIZE)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("torch_window_attention.py needs a CUDA GPU (cuDNN and FlexAttention kernels)")
    p = tt.PROFILE
    config = tt.build_config(p.depth, p.max_seq_len, 8192)  # the model train_torch.py's main() builds
    B, T, H = args.rows, p.max_seq_len, config.n_head
    D = config.n_embd // H
    w, scale, dev = T // 2, D**-0.5, torch.device("cuda")
    print(f"B {B}, H {H}, T {T}, D {D}, window {w}, bf16, {torch.cuda.get_device_name()}", flush=True)
    torch.manual_seed(0)
    q, k, v = (
        torch.randn(B, H, T, D, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3)
    )
    dout = torch.randn(B, H, T, D, device=dev, dtype=torch.bfloat16)
    # Masks as K.attention builds them: None (causal, cuDNN), a BlockMask, a chunk plan; boolean for the reference.
    window = K._build(T, w, dev, flex=False)
    one_call = create_block_mask(K._window_mod(w, 0), None, None, T, T, device=dev)
    variants = {
        "L: causal (cuDNN)": (None, None),
        "S: one FlexAttention call": (one_call, window),
        f"S: FlexAttention chunks of {w}": (K.window_chunks(T, w, w, dev), window),
    }

    def grads(fn, *inputs):
        out = fn(*inputs)
        return [out.detach(), *torch.autograd.grad(out, inputs, dout)]

    rows = []
    for name, (mask, ref_mask) in variants.items():
        fn = torch.compile(lambda q, k, v, mask=mask: K._attend(q, k, v, mask), dynamic=False)
        with tt.tb.sdpa_backends():
            got = grads(fn, q, k, v)
            f32 = [t.detach().float().requires_grad_() for t in (q, k, v)]
            ref = grads(partial(F.scaled_dot_product_attention, attn_mask=ref_mask, is_causal=ref_mask is None,
                                scale=scale), *f32)  # fmt: skip
            errs = [(a.float() - b).abs().max().item() for a, b in zip(got, ref)]
            del got, ref, f32
            with torch.no_grad():
                f_ms = bench(lambda fn=fn: fn(q, k, v), reps=args.reps)
            fb_ms = bench(lambda fn=fn: fn(q, k, v).backward(dout), reps=args.reps)
        rows.append(
            dict(variant=name, fwd_ms=f_ms, fwd_bwd_ms=fb_ms, err_out=errs[0], err_grad=max(errs[1:]))
        )
        print(
            f"{name:<34} fwd {f_ms:7.2f} ms  fwd+bwd {fb_ms:7.2f} ms  "
            f"max err out {errs[0]:.2e} grads {max(errs[1:]):.2e}",
            flush=True,
        )
    print(f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "torch_window_attention.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
