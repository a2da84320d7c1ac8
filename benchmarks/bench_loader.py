"""Loader throughput: tokens/s of the best-fit packer on one core, at a chosen shape.

    python benchmarks/bench_loader.py                      # current prepared data, h100 shape (B=128, T=2048)
    python benchmarks/bench_loader.py --data-dir DIR --batch 16 --seq-len 256

An H100 consumes ~1.7M tokens/s at upstream's shape; the target is >= 5M tokens/s on one core (and the
Prefetcher thread hides it from the training step anyway).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common.data import PreparedData
from common.loader import DocumentIndex, Packer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()

    data = PreparedData.open(args.data_dir)
    docs = DocumentIndex(data.train_shards)
    lengths = docs.length
    print(
        f"data: {data.dir} ({len(docs):,} documents, {docs.num_tokens:,} tokens, median length {int(sorted(lengths)[len(lengths) // 2])})"
    )
    t0 = time.perf_counter()
    packer = Packer(docs, args.seq_len, data.bos_id, seed=0)
    packer.rows(1)
    setup = time.perf_counter() - t0

    n_rows, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        n_rows += len(packer.rows(args.batch))
    dt = time.perf_counter() - t0
    tokens = n_rows * args.seq_len
    print(
        f"shape B={args.batch} T={args.seq_len}: setup {setup:.2f}s; {tokens / dt / 1e6:.2f}M tokens/s "
        f"({n_rows / dt:,.0f} rows/s) over {dt:.1f}s; epoch {packer.epoch}; "
        f"{packer.tokens_drawn / tokens:.4f} document tokens per target position (1 - BOS share)"
    )


if __name__ == "__main__":
    main()
