"""The service's PNG renderings: the overlay's colour-table lookup gives the very pixels of mapping the heatmap
through matplotlib's colour map as floats, and the display copy keeps the image's grey levels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from radiolens.io import read_image
from radiolens.io.writers.png import display_png, heatmap_png


def _float_overlay(heat: np.ndarray, size: tuple[int, int], max_alpha: float = 0.6) -> np.ndarray:
    """The overlay computed pixel by pixel in floating point (matplotlib's colour map on the 8-bit levels)."""
    hm = Image.fromarray((np.clip(heat, 0, 1) * 255).astype(np.uint8), mode="L").resize(size, Image.Resampling.BILINEAR)
    v = np.asarray(hm, dtype=np.float32) / 255.0
    rgba = colormaps["inferno"](v)
    rgba[..., 3] = np.clip(v, 0, 1) * max_alpha
    return (rgba * 255 + 0.5).astype(np.uint8)


@pytest.mark.parametrize("size", [(32, 32), (224, 224), (700, 512), (1024, 1024)])
def test_overlay_equals_the_float_colour_map(size):
    rng = np.random.default_rng(0)
    heat = np.kron(rng.random((28, 28)), np.ones((8, 8))).astype(np.float32)  # a smooth-ish 224 px map
    heat[0, :5] = [0.0, 1.0, 0.5, -0.2, 1.3]  # both ends and out-of-range values, which are clipped
    got = np.asarray(Image.open(io.BytesIO(heatmap_png(heat, size))))
    assert got.shape == (size[1], size[0], 4)
    np.testing.assert_array_equal(got, _float_overlay(heat, size))


@pytest.mark.realdata
def test_display_copy_keeps_the_grey_levels(data_dir):
    path = sorted((data_dir / "kermany_pediatric_pneumonia" / "images" / "NORMAL").glob("*.jpeg"))[0]
    pixels = read_image(path).pixels
    data, size = display_png(pixels, 4096)
    got = np.asarray(Image.open(io.BytesIO(data)))
    assert got.shape == pixels.shape and size == (pixels.shape[1], pixels.shape[0])
    np.testing.assert_array_equal(got, (np.clip(pixels, 0, 1) * 255.0 + 0.5).astype(np.uint8))
