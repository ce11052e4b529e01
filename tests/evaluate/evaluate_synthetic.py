"""Random but informative logits for unit tests (the real-data checks live in test_realdata.py)."""

from __future__ import annotations

import numpy as np


def binary(n: int, seed: int, separation: float = 1.5, scale: float = 2.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    z = ((2 * y - 1) * separation + rng.normal(0, 1.5, n)) * scale
    return z[:, None], y


def multiclass(n: int, k: int, seed: int, scale: float = 2.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    z = rng.normal(0, 1, (n, k))
    z[np.arange(n), y] += 1.5
    return z * scale, y


def multilabel(n: int, k: int, seed: int, prevalence=None):
    rng = np.random.default_rng(seed)
    prevalence = np.full(k, 0.3) if prevalence is None else np.asarray(prevalence)
    Y = (rng.random((n, k)) < prevalence).astype(int)
    z = (2 * Y - 1) * 1.2 + rng.normal(0, 1.3, (n, k))
    return z, Y
