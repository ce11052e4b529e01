"""The one-colour test of burned-in text candidates follows what the header says the picture is: strict on grey
radiographs, cross-sections and secondary captures (often digitised films), tolerant on ultrasound and colour
pictures (where text is the norm and lossy compression smears its colour)."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from radiolens.io.deid_ocr import PixelTextConfig, colour_tolerance, detect_frame, detect_text

CFG = PixelTextConfig(policy="mask")


@pytest.mark.parametrize(("modality", "samples", "tolerant"), [
    ("CR", 1, False), ("DX", 1, False), ("MG", 1, False), ("CT", 1, False), ("MR", 1, False), ("NM", 1, False),
    (None, 1, False),  # unknown grey images might be radiographs: strict
    ("SC", 1, False), ("OT", 1, False),  # grey secondary captures are often digitised films
    ("US", 1, True), ("IVUS", 1, True),
    ("CR", 3, True), ("SC", 3, True), (None, 3, True),  # three samples per pixel: a colour picture
])
def test_tolerance_follows_the_kind_of_picture(modality, samples, tolerant):
    ds = Dataset()
    if modality is not None:
        ds.Modality = modality
    ds.SamplesPerPixel = samples
    expected = CFG.picture_colour_tolerance if tolerant else CFG.colour_tolerance
    assert colour_tolerance(ds, CFG) == expected
    assert CFG.picture_colour_tolerance > CFG.colour_tolerance


def _smeared_text() -> np.ndarray:
    """A noisy grey picture with a name and an ID drawn in a colour that varies by +-2 of 255 from pixel to pixel
    (as JPEG leaves it): not one colour for the strict test."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(0)
    img = (40 + rng.integers(0, 30, (256, 384))).astype(np.uint8)
    canvas = Image.new("L", img.shape[::-1], 0)
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 18)
    ImageDraw.Draw(canvas).text((20, 20), "DOE^JANE 4417203", fill=255, font=font)
    return np.where(np.asarray(canvas) > 127, 220 + rng.integers(-2, 3, img.shape), img).astype(np.uint8)


def _dataset(pixels: np.ndarray, modality: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality = modality
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    return ds


def test_smeared_text_is_found_on_ultrasound_only():
    pixels = _smeared_text()
    assert detect_frame(pixels, CFG) == []  # the strict default: the colour varies too much
    assert detect_frame(pixels, CFG, tolerance=CFG.picture_colour_tolerance)
    boxes = detect_text(_dataset(pixels, "US"), CFG)
    assert boxes and all(b.y0 <= 20 and b.y1 >= 38 and b.x0 <= 20 for b in boxes)  # over the drawn line
    assert detect_text(_dataset(pixels, "CR"), CFG) == []  # a radiograph keeps the strict test


def test_a_grid_line_of_the_text_colour_does_not_widen_the_line():
    """A rule of the text's own colour running on past the text (a test pattern's grid, a scale bar, a picture's
    edge) is not print: the line's columns end where its characters end."""
    from radiolens.io.deid_ocr import _colour_span

    raw = np.full((40, 400), 127.0)
    for x in range(40, 120, 10):  # eight stand-in characters ("[" shapes) from column 40 to 117
        raw[14:26, x:x + 2] = 191
        raw[14:16, x:x + 7] = raw[24:26, x:x + 7] = 191
    raw[20:22, 0:400] = 191  # a 2-pixel grid line through the band, across the whole frame
    lo, hi = _colour_span(raw, (10, 30, 50, 110), 191.0, 1.0)
    assert lo == 40 and hi == 117
    plain = raw.copy()
    plain[20:22, :40] = plain[20:22, 120:] = 127  # without the line: the same columns
    assert _colour_span(plain, (10, 30, 50, 110), 191.0, 1.0) == (lo, hi)
