"""Checks shared by both backends' weight import: the canonical names and shapes must match exactly."""

from __future__ import annotations

import numpy as np


def check_weights(model_shapes: dict[str, tuple], weights: dict[str, np.ndarray]) -> None:
    """Raise KeyError (names) or ValueError (shapes) saying what differs between a model and a weights dict."""
    missing = sorted(set(model_shapes) - set(weights))
    unexpected = sorted(set(weights) - set(model_shapes))
    if missing or unexpected:
        raise KeyError(
            f"weights do not match the model: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''} "
            "(same DEPTH, vocab and window pattern in both scripts?)"
        )
    for name, shape in model_shapes.items():
        got = tuple(np.shape(weights[name]))
        if got != tuple(shape):
            raise ValueError(f"{name}: weights have shape {got}, the model {tuple(shape)}")
