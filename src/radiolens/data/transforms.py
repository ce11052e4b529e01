"""The intensity contract at the model boundary.

Every model in radiolens receives 1-channel tensors built here from [0, 1] pixels, then normalised with
the bundle's mean/std. Inputs outside [0, 1] are rejected loudly, because silently mis-scaled input is
the commonest cause of constant predictions.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from radiolens.errors import InputError

RANGE_TOLERANCE = 1e-4


def check_unit_range(x: np.ndarray | torch.Tensor, what: str = "image") -> None:
    n = x.size if isinstance(x, np.ndarray) else x.numel()
    if n == 0:
        raise InputError(f"{what}: empty image")
    lo, hi = float(x.min()), float(x.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError(f"{what}: contains NaN or infinite values")
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise InputError(f"{what}: pixel values must lie in [0, 1] before normalisation (got {lo:.4g}..{hi:.4g});"
                         " was it scaled to 0..255 or already normalised?")


def resize_unit(pixels: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) [0,1] pixels -> (1, h, w) float tensor, antialiased area-preserving resize."""
    t = torch.as_tensor(np.ascontiguousarray(pixels) if isinstance(pixels, np.ndarray) else pixels,
                        dtype=torch.float32)
    if t.ndim == 2:
        t = t[None]
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t[None], size=tuple(size), mode="bilinear", antialias=True, align_corners=False)[0]
    return t.clamp_(0.0, 1.0)


def to_model_tensor(pixels: np.ndarray | torch.Tensor, size: tuple[int, int], mean: float, std: float,
                    what: str = "image") -> torch.Tensor:
    """Validate, resize and normalise one image -> (1, h, w)."""
    check_unit_range(pixels, what)
    return (resize_unit(pixels, size) - mean) / std
