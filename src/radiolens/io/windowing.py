"""VOI windowing into [0, 1].

Written here rather than taken from pydicom's ``apply_windowing`` because that function maps to the
stored bit depth's output range and we need the unit interval with the exact PS3.3 C.11.2.1.2 semantics
(LINEAR, LINEAR_EXACT, SIGMOID) regardless of bit depth; the formulas are a few lines.
"""

from __future__ import annotations

import numpy as np

from radiolens.io.image import Window

PERCENTILE_LOW = 0.5
PERCENTILE_HIGH = 99.5


def apply_window(values: np.ndarray, window: Window, function: str = "LINEAR") -> np.ndarray:
    c, w = float(window.center), float(window.width)
    x = values.astype(np.float32, copy=False)  # float32 is exact for stored values up to 2**24
    function = (function or "LINEAR").upper()
    if function == "SIGMOID":
        out = 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    elif function == "LINEAR_EXACT":
        out = (x - np.float32(c - w / 2.0)) * np.float32(1.0 / w)
    else:  # LINEAR (the default): DICOM's offset of 0.5 and width - 1
        if w < 1:
            w = 1.0
        out = (x - np.float32(c - 0.5)) * np.float32(1.0 / (w - 1.0)) + np.float32(0.5) if w > 1 \
            else (x > c - 0.5).astype(np.float32)
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)


def percentile_window(values: np.ndarray) -> Window:
    """A robust window for files without one: ignores the extreme 0.5% tails (collimator, burned labels)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Window(center=0.0, width=1.0)
    lo, hi = np.percentile(finite, [PERCENTILE_LOW, PERCENTILE_HIGH])
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return Window(center=float(lo), width=1.0)
    return Window(center=float(lo + hi) / 2.0, width=float(hi - lo))


def linear_window(values: np.ndarray, window: Window) -> np.ndarray:
    """Plain min/max mapping used for pre-windowed raster images and overrides on them."""
    lo = window.center - window.width / 2.0
    return np.clip((values.astype(np.float32, copy=False) - np.float32(lo)) / np.float32(window.width),
                   0.0, 1.0).astype(np.float32, copy=False)
