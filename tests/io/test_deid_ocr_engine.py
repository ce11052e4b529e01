"""The OCR engine behind burned-in text checks (tesserocr, in-process): language data found or a clear
configuration error, and concurrent checks (the service runs them from several threads) giving the same boxes
as one after another."""

from __future__ import annotations

import concurrent.futures as cf
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from radiolens.errors import ConfigError
from radiolens.io import deid_ocr
from radiolens.io.deid_ocr import PixelTextConfig, detect_frame, require_tesseract, tessdata_dir


@pytest.fixture
def annotated_ct(pydicom_data_files) -> np.ndarray:
    """A real CT slice (pydicom-data) with a name and an ID drawn into its pixels at the largest stored value."""
    from PIL import Image, ImageDraw, ImageFont

    path = next(p for p in pydicom_data_files if p.name == "693_UNCR.dcm")
    pixels = pydicom.dcmread(path).pixel_array
    canvas = Image.new("L", pixels.shape[::-1], 0)
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 18)
    ImageDraw.Draw(canvas).text((20, 20), "DOE^JANE 4417203", fill=255, font=font)
    return np.where(np.asarray(canvas) > 127, pixels.max(), pixels).astype(pixels.dtype)


def test_concurrent_checks_equal_sequential_ones(annotated_ct, siim_dicom):
    cfg = PixelTextConfig(policy="refuse")
    clean = pydicom.dcmread(siim_dicom).pixel_array
    frames = [annotated_ct, clean, annotated_ct, clean, annotated_ct, clean]
    sequential = [detect_frame(f, cfg) for f in frames]
    assert sequential[0] and not sequential[1]  # the drawn text is found, the chest film has none
    with cf.ThreadPoolExecutor(3) as pool:
        concurrent = list(pool.map(lambda f: detect_frame(f, cfg), frames))
    assert concurrent == sequential
    assert deid_ocr._ENGINES["eng"].qsize() <= 3  # engines are reused, one per check running at once


def test_language_data_is_found_or_named(tmp_path, monkeypatch):
    found = tessdata_dir("eng")
    assert (Path(found) / "eng.traineddata").is_file()
    # TESSDATA_PREFIX wins over the system folders
    shutil.copy(f"{found}/eng.traineddata", tmp_path / "eng.traineddata")
    monkeypatch.setenv("TESSDATA_PREFIX", str(tmp_path))
    tessdata_dir.cache_clear()
    try:
        assert tessdata_dir("eng") == str(tmp_path)
        # a language nobody installed: a configuration error naming what to install, raised at start
        with pytest.raises(ConfigError, match="tesseract-ocr-zzz"):
            require_tesseract("zzz")
        with pytest.raises(Exception) as bad:
            PixelTextConfig(language="../etc")
        assert "language" in str(bad.value)
    finally:
        tessdata_dir.cache_clear()
