"""Float64 numpy references of the twins' optimizer math, written from docs/twins.md and independent of both
training scripts (a reference must not import what it checks). Used by the MLX and the torch backend tests."""

from __future__ import annotations

import numpy as np

COEFFS = [  # docs/twins.md, copied by hand
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]


def ref_polar_express(G, steps=5):
    X = G / (np.linalg.norm(G, axis=(-2, -1), keepdims=True) * 1.02 + 1e-6)
    for a, b, c in COEFFS[:steps]:
        if X.shape[-2] > X.shape[-1]:
            A = np.swapaxes(X, -1, -2) @ X
            X = a * X + X @ (b * A + c * A @ A)
        else:
            A = X @ np.swapaxes(X, -1, -2)
            X = a * X + (b * A + c * A @ A) @ X
    return X


def ref_muon(p, g, buf, second, momentum, lr, wd, beta2):
    R, C = p.shape[-2:]
    buf = buf + (1 - momentum) * (g - buf)
    g = g + momentum * (buf - g)
    X = ref_polar_express(g)
    red = -1 if R >= C else -2
    v_mean = (X**2).mean(axis=red, keepdims=True)
    n = X.shape[red]
    v_norm = np.sqrt(v_mean.sum(axis=(-2, -1), keepdims=True) * n)
    second = second + (1 - beta2) * (v_mean - second)
    step = 1 / np.sqrt(np.maximum(second, 1e-10))
    v_norm_new = np.sqrt((v_mean * n * step**2).sum(axis=(-2, -1), keepdims=True))
    X = X * step * (v_norm / np.maximum(v_norm_new, 1e-10))
    lr_eff = lr * max(1.0, R / C) ** 0.5
    mask = (X * p) >= 0
    p = p - lr_eff * X - lr_eff * wd * p * mask
    return p, buf, second


def ref_adamw(p, g, m, v, step, lr, beta1, beta2, eps, wd):
    p = p * (1 - lr * wd)
    m = m + (1 - beta1) * (g - m)
    v = v + (1 - beta2) * (g * g - v)
    p = p - (lr / (1 - beta1**step)) * m / (np.sqrt(v / (1 - beta2**step)) + eps)
    return p, m, v
