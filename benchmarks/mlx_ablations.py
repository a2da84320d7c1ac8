"""train_mlx.py's hand-written backward passes undone, for A/B benchmarks (mlx_profile.py, bench_train_cpu.py): the
same forwards, differentiated by MLX's autodiff."""

from __future__ import annotations

import mlx.core as mx


def plain_relu_squared(x):
    """relu(x)^2 as train_mlx.relu_squared computes it; autodiff keeps x and relu(x) for the backward."""
    return mx.square(mx.maximum(x, 0))


def plain_rotary(x, cos, sin):
    """train_mlx.apply_rotary_emb's forward; autodiff pads each half's cotangent with zeros in the backward."""
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return mx.concatenate([x1 * cos + x2 * sin, x2 * cos - x1 * sin], axis=-1)
