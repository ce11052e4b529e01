"""PNG renderings for a viewer: the de-identified display copy of an image and a heatmap overlay for it.

Both carry pixels only (no text chunks, no EXIF): whatever the source file held in its metadata stays out.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def display_png(pixels: np.ndarray, max_side: int) -> tuple[bytes, tuple[int, int]]:
    """De-identified display copy: 8-bit grey PNG of the already-VOI-windowed pixels, no metadata."""
    arr = np.clip(pixels if pixels.ndim == 2 else pixels[0], 0, 1)
    im = Image.fromarray((arr * 255.0 + 0.5).astype(np.uint8), mode="L")
    if max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue(), im.size


def heatmap_png(heat: np.ndarray, size: tuple[int, int], max_alpha: float = 0.6) -> bytes:
    """RGBA overlay at the display size: a perceptual colour map, transparency following the heat."""
    from matplotlib import colormaps

    w, h = size
    hm = Image.fromarray((np.clip(heat, 0, 1) * 255).astype(np.uint8), mode="L").resize((w, h),
                                                                                         Image.Resampling.BILINEAR)
    v = np.asarray(hm, dtype=np.float32) / 255.0
    rgba = colormaps["inferno"](v)
    rgba[..., 3] = np.clip(v, 0, 1) * max_alpha
    im = Image.fromarray((rgba * 255 + 0.5).astype(np.uint8), mode="RGBA")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()
