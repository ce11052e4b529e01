"""``io.raster.image_from_array``: an in-memory array gives the RadioImage a PNG of the same pixels gives (real
Kermany pixels, written to PNG in memory and read back through the format table)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from radiolens.errors import ImageDimensionError, PixelRangeError
from radiolens.io.formats import read_image
from radiolens.io.raster import ARRAY_FORMAT, image_from_array

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def grey(data_dir) -> np.ndarray:
    jpeg = sorted((data_dir / "kermany_pediatric_pneumonia" / "images" / "NORMAL").glob("*.jpeg"))[0]
    return np.asarray(Image.open(jpeg).convert("L"))


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["uint8", "uint16", "rgb", "rgba"])
def test_an_array_reads_as_its_png(kind, grey):
    arr = {"uint8": grey, "uint16": grey.astype(np.uint16) * 257,
           "rgb": np.stack([grey, np.roll(grey, 7, axis=1), grey // 2], axis=-1),
           "rgba": np.dstack([grey, grey, grey, np.full_like(grey, 9)])}[kind]
    from_png, from_array = read_image(_png(arr)), image_from_array(arr)
    assert np.array_equal(from_array.pixels, from_png.pixels)
    assert from_array.meta.source_format == ARRAY_FORMAT
    assert from_array.meta.bits_stored == from_png.meta.bits_stored
    assert from_array.meta.extra.get("chroma") == from_png.meta.extra.get("chroma")
    if kind == "rgb":
        assert from_array.meta.extra["chroma"] > 0.05  # measured, so the input gate can refuse colour


def test_floats_in_unit_range_are_taken_as_they_are(grey):
    dark = (grey / 255.0 * 0.2).astype(np.float64)  # a dark image stays dark: no min-max stretch
    img = image_from_array(dark)
    assert img.pixels.dtype == np.float32 and img.meta.bits_stored is None
    assert np.allclose(img.pixels, dark, atol=1e-7) and img.pixels.max() <= 0.2 + 1e-7
    rgb = image_from_array(np.stack([dark] * 3, axis=-1))
    assert np.allclose(rgb.pixels, img.pixels, atol=1e-6) and rgb.meta.extra["chroma"] == 0.0


@pytest.mark.parametrize(("make", "error", "words"), [
    (lambda g: g.astype(np.float32), PixelRangeError, "must lie in [0, 1]"),
    (lambda g: np.where(g > 50, np.inf, 0.5), PixelRangeError, "NaN or infinite"),
    (lambda g: g.astype(np.int32), PixelRangeError, "dtype int32"),
    (lambda g: g.astype(np.complex64), PixelRangeError, "dtype complex64"),
    (lambda g: np.stack([g, g]), ImageDimensionError, "shape"),
    (lambda g: g[..., None, None], ImageDimensionError, "shape"),
    (lambda g: np.zeros((0, 5), np.uint8), ImageDimensionError, "zero-sized"),
])
def test_arrays_outside_the_convention_are_refused(make, error, words, grey):
    with pytest.raises(error, match=words.replace("[", r"\[").replace("]", r"\]")):
        image_from_array(make(grey))
