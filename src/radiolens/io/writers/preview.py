"""Preview PNGs: one display-ready grey frame per file, as ``radiolens preview`` writes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_preview_png(frame: np.ndarray, dst: Path) -> None:
    """Grey pixels in [0, 1] -> an 8-bit greyscale PNG (rounded, clipped: the same bytes as
    :meth:`radiolens.io.image.RadioImage.to_uint8`). No metadata is written: previews carry pixels only."""
    Image.fromarray(np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8), mode="L").save(dst, optimize=False)
