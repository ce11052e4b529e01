"""Burned-in text in pixel data: find it with Tesseract OCR, then refuse the file or mask the text.

Why OCR and why Tesseract: a header's BurnedInAnnotation is often absent or wrong (CR readers and secondary
captures stamp names, dates and IDs into the pixels without saying so), so the pixels themselves have to be
read. Tesseract (Debian's ``tesseract-ocr``, through the maintained ``pytesseract`` binding) is the
established open-source engine, runs on CPU, and needs no model download beyond the Debian package.

Radiographs are not documents: text sits on a busy background (anatomy, collimation edges) in any polarity and
contrast. Each frame is therefore read three times: as it is (8-bit, min-max scaled), and as the white and
black morphological top-hats (strokes thinner than :attr:`PixelTextConfig.stroke_px` kept, smooth anatomy
removed), each rendered as dark text on white, which is what Tesseract reads best. A word counts when
Tesseract is confident about it and it holds at least two letters or digits; a less confident word counts when
it sits on the same line as a confident one (a name next to a date). Boxes are grown by a margin and merged
along a line before masking.

Policies (:class:`PixelTextConfig`): ``off`` (no OCR, the header rule of :mod:`radiolens.io.deid` alone),
``refuse`` (a file whose pixels show text is refused, typed :class:`~radiolens.errors.BurnedInAnnotationError`)
and ``mask`` (black boxes over the text; :mod:`radiolens.io.deid` then writes a new SOP instance with
BurnedInAnnotation ``NO`` and the method recorded). Nothing detected is ever logged or reported: only counts.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from radiolens.errors import ConfigError

PixelTextPolicy = Literal["refuse", "mask", "off"]
POLICIES: tuple[str, ...] = ("refuse", "mask", "off")


class PixelTextConfig(BaseModel):
    """How pixel data is checked for burned-in text (part of the de-identification configuration)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: PixelTextPolicy = "off"
    #: Tesseract word confidence (0-100) at which a word counts on its own.
    min_confidence: float = Field(default=60.0, ge=0, le=100)
    #: Confidence at which a word counts when a confident word sits on the same line.
    line_confidence: float = Field(default=30.0, ge=0, le=100)
    #: Side of the top-hat structuring element, in pixels of the OCR input: strokes thinner than this survive.
    stroke_px: int = Field(default=25, ge=3, le=101)
    #: Mask margin around each detected word, as a fraction of its height.
    margin: float = Field(default=0.35, ge=0, le=2)
    #: Frames larger than this (longest side) are read downscaled; boxes are mapped back.
    max_side: int = Field(default=2048, ge=256, le=8192)
    language: str = Field(default="eng", pattern=r"^[a-z_]{3,16}(\+[a-z_]{3,16})*$")


@dataclass(frozen=True)
class TextBox:
    """A region of one frame (pixel coordinates, end exclusive) that shows text."""

    frame: int
    x0: int
    y0: int
    x1: int
    y1: int


def require_tesseract(language: str = "eng") -> None:
    """Fail with a ``ConfigError`` saying what to install when OCR is asked for but cannot run."""
    try:
        import pytesseract
    except ImportError as exc:
        raise ConfigError("pixel text checks need pytesseract (pip install 'radiolens[ocr]')") from exc
    if shutil.which(pytesseract.pytesseract.tesseract_cmd) is None:
        raise ConfigError("pixel text checks need the tesseract program (Debian: apt-get install tesseract-ocr)")
    try:
        languages = set(pytesseract.get_languages(config=""))
    except Exception as exc:  # tesseract present but broken
        raise ConfigError(f"tesseract cannot run ({type(exc).__name__})") from None
    missing = set(language.split("+")) - languages
    if missing:
        raise ConfigError(f"tesseract lacks language data {sorted(missing)} (Debian: tesseract-ocr-<lang>)")


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """One frame (grey or RGB, any integer/float type) as 8-bit grey, min-max scaled: what OCR reads."""
    a = np.asarray(frame, dtype=np.float32)
    if a.ndim == 3:
        a = a[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _views(grey: np.ndarray, stroke: int) -> list[np.ndarray]:
    """The frame as Tesseract should see it: as is, and thin bright / thin dark strokes as dark-on-white."""
    from scipy import ndimage as ndi

    a = grey.astype(np.float32)
    views = [grey]
    for tophat in (ndi.white_tophat(a, size=(stroke, stroke)), ndi.black_tophat(a, size=(stroke, stroke))):
        peak = float(np.percentile(tophat, 99.9)) or 1.0
        views.append((255 - np.clip(tophat * (255.0 / peak), 0, 255)).astype(np.uint8))
    return views


def _alnum(text: str) -> int:
    return sum(c.isalnum() for c in text)


def _words(image: np.ndarray, cfg: PixelTextConfig) -> list[tuple[int, int, int, int, float, int]]:
    """(x0, y0, x1, y1, confidence, alphanumeric count) of every word Tesseract reads in ``image``."""
    import pytesseract
    from PIL import Image

    data = pytesseract.image_to_data(Image.fromarray(image), lang=cfg.language, config="--psm 11",
                                     output_type=pytesseract.Output.DICT)
    out = []
    for text, conf, x, y, w, h in zip(data["text"], data["conf"], data["left"], data["top"], data["width"],
                                      data["height"], strict=True):
        n = _alnum(str(text))
        if n >= 2 and float(conf) >= cfg.line_confidence and w > 0 and h > 0:
            out.append((x, y, x + w, y + h, float(conf), n))
    return out


def _same_line(a, b) -> bool:
    ha, hb = a[3] - a[1], b[3] - b[1]
    overlap = min(a[3], b[3]) - max(a[1], b[1])
    gap = max(a[0], b[0]) - min(a[2], b[2])
    return overlap > 0.5 * min(ha, hb) and gap < 4 * max(ha, hb)


def detect_frame(frame: np.ndarray, cfg: PixelTextConfig, index: int = 0) -> list[TextBox]:
    """Boxes (margin included, clipped to the frame) around the text Tesseract finds in one frame."""
    grey = to_uint8(frame)
    h, w = grey.shape
    scale = max(h, w) / cfg.max_side if max(h, w) > cfg.max_side else 1.0
    if scale > 1.0:
        from PIL import Image

        grey = np.asarray(Image.fromarray(grey).resize((round(w / scale), round(h / scale)), Image.BILINEAR))
    words = []
    for view in _views(grey, cfg.stroke_px):
        words.extend(_words(view, cfg))
    sure = [wd for wd in words if wd[4] >= cfg.min_confidence]
    kept = sure + [wd for wd in words if wd[4] < cfg.min_confidence and wd[5] >= 3
                   and any(_same_line(wd, s) for s in sure)]
    boxes = []
    for x0, y0, x1, y1, _conf, _n in kept:
        m = cfg.margin * (y1 - y0)
        boxes.append(TextBox(index, max(0, int((x0 - m) * scale)), max(0, int((y0 - m) * scale)),
                             min(w, int(np.ceil((x1 + m) * scale))), min(h, int(np.ceil((y1 + m) * scale)))))
    return boxes


def frames_of(pixels: np.ndarray, ds) -> np.ndarray:
    """``pixels`` (pydicom's array) as (frames, rows, cols[, samples])."""
    n = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if n == 1:
        return pixels[None]
    return pixels if pixels.ndim == (4 if samples > 1 else 3) else pixels[None]


def detect_text(ds, cfg: PixelTextConfig) -> list[TextBox]:
    """Text boxes in every frame of ``ds``'s pixel data (empty when there is none, or no pixel data)."""
    if "PixelData" not in ds:
        return []
    frames = frames_of(ds.pixel_array, ds)
    boxes: list[TextBox] = []
    for i, frame in enumerate(frames):
        boxes.extend(detect_frame(frame, cfg, i))
    return boxes


def _fill_value(ds, frames: np.ndarray):
    """Display black: the smallest stored value (the largest for MONOCHROME1, where high values are dark)."""
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if int(ds.get("SamplesPerPixel", 1) or 1) > 1:
        return 0
    return frames.max() if photometric == "MONOCHROME1" else frames.min()


def mask_text(ds, boxes: list[TextBox]) -> int:
    """Black out ``boxes`` in ``ds``'s pixel data, in place; returns how many boxes were filled.

    Compressed pixel data is decompressed first (pydicom's ``decompress``: native little endian afterwards),
    since masking must change the decoded pixels; everything else about the image stays.
    """
    if not boxes:
        return 0
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    pixels = ds.pixel_array.copy()
    frames = frames_of(pixels, ds)
    fill = _fill_value(ds, frames)
    for b in boxes:
        frames[b.frame, b.y0:b.y1, b.x0:b.x1] = fill
    ds.PixelData = frames.reshape(pixels.shape).tobytes()
    return len(boxes)
