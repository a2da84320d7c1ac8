"""The metric: validation bits per byte (val_bpb), written once for both backends.

val_bpb = sum of per-token cross-entropy (nats) over target tokens whose byte length is > 0, divided by ln 2 times
the sum of those tokens' UTF-8 byte lengths. Special tokens (byte length 0, e.g. BOS) are excluded from both sums.
Because it is normalised by bytes, not tokens, it does not depend on the vocabulary. Sums are float64 in numpy; a
backend only supplies `loss_fn(x, y) -> float32 (B*T,)` per-token losses in nats.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

LossFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def nats_and_bytes(losses: np.ndarray, targets: np.ndarray, token_bytes: np.ndarray) -> tuple[float, int]:
    """(sum of nats over counted targets, sum of their bytes), in float64 / int64."""
    losses = np.asarray(losses, dtype=np.float64).reshape(-1)
    targets = np.asarray(targets).reshape(-1)
    if losses.shape != targets.shape:
        raise ValueError(f"loss_fn returned {losses.shape[0]} losses for {targets.shape[0]} targets")
    nbytes = token_bytes[targets].astype(np.int64)
    counted = nbytes > 0
    nats = float(losses[counted].sum())
    if not math.isfinite(nats):
        raise FloatingPointError("non-finite loss in evaluation")
    return nats, int(nbytes.sum())


def bits_per_byte(nats: float, nbytes: int) -> float:
    if nbytes <= 0:
        raise ValueError("no bytes to evaluate: the val set has no non-special target tokens")
    return nats / (math.log(2) * nbytes)


def evaluate_bpb(loss_fn: LossFn, rows: np.ndarray, batch_size: int, token_bytes: np.ndarray) -> float:
    """val_bpb of `loss_fn` over the fixed val rows (N, T+1), fed `batch_size` rows at a time (the last batch may
    be smaller). The result does not depend on batch_size beyond float32 rounding inside the backend."""
    total_nats, total_bytes = 0.0, 0
    for i in range(0, rows.shape[0], batch_size):
        chunk = rows[i : i + batch_size]
        x, y = chunk[:, :-1], chunk[:, 1:]
        nats, nbytes = nats_and_bytes(loss_fn(x, y), y, token_bytes)
        total_nats += nats
        total_bytes += nbytes
    return bits_per_byte(total_nats, total_bytes)


def unigram_bpb(train_counts: np.ndarray, val_tokens: np.ndarray, token_bytes: np.ndarray) -> float:
    """Bits per byte of a unigram model fitted on training token counts (add-one smoothing), scored on val tokens:
    the baseline any trained model must beat by a wide margin."""
    counts = train_counts.astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    nats = -logp[val_tokens]
    return bits_per_byte(*nats_and_bytes(nats, val_tokens, token_bytes))


def padded_chunks(x: np.ndarray, y: np.ndarray, rows: int):
    """Yield (x_chunk, y_chunk, real_rows) of exactly `rows` rows each: the last chunk is padded with zeros, so a
    compiled forward sees one static shape. The caller keeps the losses of the first real_rows rows."""
    for i in range(0, x.shape[0], rows):
        xc, yc = x[i : i + rows], y[i : i + rows]
        real = xc.shape[0]
        if real < rows:
            pad = ((0, rows - real), (0, 0))
            xc, yc = np.pad(xc, pad), np.pad(yc, pad)
        yield xc, yc, real
