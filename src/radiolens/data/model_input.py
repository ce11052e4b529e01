"""The model input of one image, computed with numpy and Pillow only (no PyTorch).

A ``radiolens[serve]`` installation runs exported ONNX models without torch, yet must feed them the tensor
the model was trained and validated on. :func:`to_model_array` is that tensor: with PyTorch installed it is
exactly :func:`radiolens.data.transforms.to_model_tensor` (the numbers training and evaluation saw); without
it, the same antialiased bilinear resize done by Pillow, whose float ("F" mode) resampler is the filter
PyTorch's ``interpolate(mode="bilinear", antialias=True)`` was modelled on (same triangle kernel widened by
the scale factor, same edge renormalisation). The two differ only by float rounding: at most ~1e-5 on [0, 1]
pixels, measured on real radiographs in ``tests/serve/test_torch_free.py``.
"""

from __future__ import annotations

import numpy as np

from radiolens.errors import InputError, missing_extra

RANGE_TOLERANCE = 1e-4


def check_unit_range(x, what: str = "image") -> None:
    """Refuse pixels outside [0, 1] (numpy arrays and torch tensors alike): silently mis-scaled input is the
    commonest cause of constant predictions."""
    n = x.size if isinstance(x, np.ndarray) else x.numel()
    if n == 0:
        raise InputError(f"{what}: empty image")
    lo, hi = float(x.min()), float(x.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError(f"{what}: contains NaN or infinite values")
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise InputError(f"{what}: pixel values must lie in [0, 1] before normalisation (got {lo:.4g}..{hi:.4g});"
                         " was it scaled to 0..255 or already normalised?")


def resize_unit_pillow(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) or (1, H, W) [0, 1] pixels -> a NEW (1, h, w) float32 array, antialiased bilinear, clamped."""
    from PIL import Image

    size = (int(size[0]), int(size[1]))
    arr = np.asarray(pixels, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise InputError(f"expected one (H, W) image, got shape {tuple(arr.shape)}")
    if tuple(arr.shape) != size:
        resized = Image.fromarray(np.ascontiguousarray(arr)).resize((size[1], size[0]), Image.Resampling.BILINEAR)
        arr = np.asarray(resized, dtype=np.float32)
    return np.clip(arr, 0.0, 1.0)[None]  # np.clip: a new array, never the caller's


def to_model_array_pillow(pixels: np.ndarray, size: tuple[int, int], mean: float, std: float,
                          what: str = "image") -> np.ndarray:
    """Validate, resize (Pillow) and normalise one image -> (1, h, w) float32."""
    check_unit_range(pixels, what)
    out = resize_unit_pillow(pixels, size)
    out -= np.float32(mean)
    out /= np.float32(std)
    return out


def to_model_array(pixels: np.ndarray, size: tuple[int, int], mean: float, std: float,
                   what: str = "image") -> np.ndarray:
    """Validate, resize and normalise one image -> (1, h, w) float32: PyTorch's resize when installed (the
    training path, bit for bit), else Pillow's (see the module docstring)."""
    try:
        from radiolens.data.transforms import to_model_tensor
    except ImportError as exc:
        if missing_extra(exc) is None:  # not a lean install: a real failure
            raise
        return to_model_array_pillow(pixels, size, mean, std, what)
    return to_model_tensor(pixels, size, mean, std, what).numpy()
