"""The reader on the real data under RADIOLENS_DATA_DIR (fails, never skips, when it is missing)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from radiolens.io import read_image

pytestmark = pytest.mark.realdata


def _manifest(folder) -> list[dict]:
    with open(folder / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_siim_chest_dicom_metadata_and_pixels(siim_dicom):
    image = read_image(siim_dicom)
    meta = image.meta
    assert meta.source_format == "dicom" and meta.modality == "CR"
    assert meta.patient_age_years == 62 and meta.patient_sex == "M"
    assert meta.view_position == "PA" and meta.body_part == "CHEST"
    assert meta.pixel_spacing_mm == pytest.approx((0.168, 0.168))
    assert image.pixels.shape == (1024, 1024)
    px = image.pixels
    assert np.isfinite(px).all() and px.min() >= 0 and px.max() <= 1 and px.std() > 0.1
    # 8-bit JPEG CR without a window maps like a raster export: stored value / 255, no contrast stretch.
    import pydicom

    stored = pydicom.dcmread(siim_dicom).pixel_array
    assert meta.window_source == "full_range"
    assert np.allclose(px, stored / 255.0, atol=1e-6)
    # chest orientation sanity: lungs (air) darker than the mediastinum between them
    lungs = np.r_[px[350:650, 150:350].ravel(), px[350:650, 680:880].ravel()]
    assert lungs.mean() < px[350:650, 470:550].mean()


def test_kermany_jpeg_samples(data_dir):
    root = data_dir / "kermany_pediatric_pneumonia"
    rows = _manifest(root)
    picks = [r for r in rows if r["label"] == "NORMAL"][:5] + [r for r in rows if r["label"] == "PNEUMONIA"][:5]
    for row in picks:
        path = root / row["path"]
        image = read_image(path)
        assert image.meta.source_format == "jpeg"
        assert image.pixels.shape == (int(row["height"]), int(row["width"]))
        # cross-check against PIL's own RGB->L conversion (same BT.601 weights, rounded to 8 bits)
        ref = np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0
        assert np.abs(image.pixels - ref).max() <= 1.0 / 255.0 + 1e-6


def test_nih_png_samples_including_rgba(data_dir):
    root = data_dir / "nih_chestxray14"
    rows = _manifest(root)
    rgba = [r for r in rows if r["mode"] == "RGBA"][:5]
    rgb = [r for r in rows if r["mode"] == "RGB"][:5]
    assert rgba, "the NIH sample is documented to contain RGBA PNGs"
    fullres = sorted((root / "images_fullres").glob("*.png"))
    for path in [root / r["path"] for r in rgba + rgb] + fullres:
        image = read_image(path)
        px = image.pixels
        assert image.meta.source_format == "png" and px.ndim == 2
        assert np.isfinite(px).all() and px.min() >= 0 and px.max() <= 1 and px.std() > 0.02
        with Image.open(path) as im:
            assert px.shape == (im.height, im.width)
            ref = np.asarray(im.convert("RGB").convert("L"), dtype=np.float64) / 255.0
        assert np.abs(px - ref).max() <= 1.0 / 255.0 + 1e-6


@pytest.mark.parametrize("folder", ["covid_figure1", "tbx11k"])
def test_every_covid_figure1_and_tbx11k_image(data_dir, folder):
    """Every image of the two small demo sets (JPEG grey/RGB of many sizes, PNG-in-.jpg; 512^2 RGB PNGs)."""
    root = data_dir / folder
    rows = _manifest(root)
    assert len(rows) == {"covid_figure1": 55, "tbx11k": 3}[folder]  # the counts PROVENANCE.md states
    for row in rows:
        path = root / row["path"]
        image = read_image(path)
        px = image.pixels
        magic = path.read_bytes()[:4]
        # by content: covid_figure1 has PNG files named .jpg
        assert image.meta.source_format == ("png" if magic == b"\x89PNG" else "jpeg"), row["path"]
        assert px.shape == (int(row["height"]), int(row["width"])), row["path"]
        assert px.dtype == np.float32 and np.isfinite(px).all() and px.min() >= 0 and px.max() <= 1
        assert px.std() > 0.05, row["path"]  # a radiograph, not a blank
        with Image.open(path) as im:
            ref = np.asarray(im.convert("RGB").convert("L"), dtype=np.float64) / 255.0
        assert np.abs(px - ref).max() <= 1.0 / 255.0 + 1e-6, row["path"]
