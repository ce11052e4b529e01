"""Burned-in text in pixel data: find it with Tesseract OCR, then refuse the file or mask the text.

Why OCR and why Tesseract: a header's BurnedInAnnotation is often absent or wrong (CR readers and secondary
captures stamp names, dates and IDs into the pixels without saying so), so the pixels themselves have to be
read. Tesseract is the established open-source engine and runs on CPU. It is called in-process through the
maintained ``tesserocr`` binding (its wheels carry libtesseract, so no Tesseract program, and none of the ICU,
Cairo and Pango libraries Debian's program links, is needed; one engine per thread is kept loaded, so a check
costs no process start); its only data is the language model, e.g. Debian's ``tesseract-ocr-eng`` (4 MB).

Radiographs are not documents: text sits on a busy background (anatomy, collimation edges) in any polarity and
contrast, and Tesseract's own page segmentation reads ribs as letters. So candidates are found first by image
processing: thin strokes that stand out from their surroundings (white and black morphological top-hats, strokes
thinner than :attr:`PixelTextConfig.stroke_px`, at a strict and a lenient threshold), cut into character-shaped
connected components and grouped into lines. All candidate lines of a stroke map are then cut out, scaled to
one line height and read by Tesseract in a single call. A candidate is text when Tesseract reads two characters
with confidence (or three with some) *and* its strokes are drawn in one colour (burned-in text is; edges of
anatomy that happen to read as letters are not). What counts as one colour follows the header
(:func:`colour_tolerance`): strictly on radiographs, cross-sections and grey secondary captures, more loosely on
ultrasound and colour pictures, whose text JPEG smears. A confirmed line takes its neighbours on the same band and is
widened along its band by its colour, so characters touching other structures are covered too.

Policies (:class:`PixelTextConfig`): ``off`` (no OCR, the header rule of :mod:`radiolens.io.deid` alone),
``refuse`` (a file whose pixels show text is refused, typed :class:`~radiolens.errors.BurnedInAnnotationError`)
and ``mask`` (black boxes over the text; :mod:`radiolens.io.deid` then writes a new SOP instance with
BurnedInAnnotation ``NO`` and the method recorded). Nothing detected is ever logged or reported: only counts.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from radiolens.errors import ConfigError

PixelTextPolicy = Literal["refuse", "mask", "off"]
TextDetectorUse = Literal["auto", "all", "off"]
POLICIES: tuple[str, ...] = ("refuse", "mask", "off")


class PixelTextConfig(BaseModel):
    """How pixel data is checked for burned-in text (part of the de-identification configuration)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: PixelTextPolicy = "off"
    #: Tesseract confidence (0-100) at which a word of two or more letters/digits confirms a candidate line.
    min_confidence: float = Field(default=60.0, ge=0, le=100)
    #: Confidence at which a word of three or more letters/digits confirms it.
    line_confidence: float = Field(default=30.0, ge=0, le=100)
    #: Letters/digits of one word, each read with confidence 90 or more, that confirm a candidate line whatever
    #: the word's own confidence (one misread character, e.g. a slashed zero, sinks that).
    sure_characters: int = Field(default=5, ge=2, le=50)
    #: Side of the top-hat structuring element, in pixels of the OCR input: strokes thinner than this survive.
    stroke_px: int = Field(default=21, ge=3, le=101)
    #: Mask margin above and below each text line, as a fraction of its height.
    margin: float = Field(default=0.35, ge=0, le=2)
    #: Mask margin left and right of each text line (characters at its ends that touch other structures and
    #: were not grouped with it), as a fraction of its height.
    side_margin: float = Field(default=1.0, ge=0, le=4)
    #: Frames larger than this (longest side) are read downscaled; boxes are mapped back.
    max_side: int = Field(default=1280, ge=256, le=8192)
    #: Candidate text lines read per stroke map (the longest first).
    max_candidates: int = Field(default=150, ge=1, le=2000)
    #: Share of a candidate line's stroke pixels that must share one grey level (within the colour tolerance
    #: below): burned-in text is drawn in one colour, while edges of anatomy that happen to read as letters are not.
    min_uniformity: float = Field(default=0.75, ge=0, le=1)
    #: What "one colour" means on radiographs and cross-sectional grey images (CR, DX, MG, CT, MR, NM, ...), as a
    #: fraction of the frame's range. Strict: anatomy is grey and smooth, and a wider band lets edges of it pass as
    #: text (a wider tolerance put boxes on 3-5 of 100 clean chest radiographs).
    colour_tolerance: float = Field(default=0.002, ge=0, le=0.1)
    #: The same for pictures in which burned-in text is the norm and often compressed away from one exact colour:
    #: ultrasound (US, IVUS) and colour images (three samples per pixel: screen captures, photographs). See
    #: :func:`colour_tolerance`.
    picture_colour_tolerance: float = Field(default=0.012, ge=0, le=0.1)
    language: str = Field(default="eng", pattern=r"^[a-z_]{3,16}(\+[a-z_]{3,16})*$")
    #: Which frames the learned text detector (:mod:`radiolens.io.text_detector`) reads too: ``auto``
    #: (ultrasound and colour pictures, where text touching the picture and small header print defeat the stroke
    #: maps, and any other frame on which the stroke maps found text, to check and complete what they found: a
    #: clean radiograph costs nothing more), ``all`` (every frame: also text the stroke maps miss entirely on
    #: frames where they find none, about 0.5 s more per 1024-pixel frame on two cores), or ``off`` (stroke maps
    #: and Tesseract alone).
    text_detector: TextDetectorUse = "auto"
    #: The detector's ONNX file; unset: ``RADIOLENS_TEXT_DETECTOR``, an installed ``rapidocr_onnxruntime``, the
    #: user cache, or a download from PyPI (:func:`radiolens.io.text_detector.model_path`).
    detector_model: str | None = None
    #: Mean probability at which a detector region of a picture (ultrasound, colour) drawn in one colour is text
    #: even when Tesseract cannot read it (header print a few pixels high).
    detector_score: float = Field(default=0.7, ge=0, le=1)
    #: Mean probability at which a line-shaped detector region of a picture is text whatever its colour (print
    #: resampled or compressed into its background: neither readable nor one colour any more).
    detector_sure_score: float = Field(default=0.85, ge=0, le=1)


@dataclass(frozen=True)
class TextBox:
    """A region of one frame (pixel coordinates, end exclusive) that shows text."""

    frame: int
    x0: int
    y0: int
    x1: int
    y1: int


#: Where Tesseract language data is looked for after ``TESSDATA_PREFIX`` (Debian/Ubuntu, Fedora, Homebrew, the
#: upstream default prefix).
TESSDATA_DIRS: tuple[str, ...] = (
    "/usr/share/tesseract-ocr/5/tessdata",
    "/usr/share/tesseract-ocr/4.00/tessdata",
    "/usr/share/tessdata",
    "/usr/local/share/tessdata",
    "/opt/homebrew/share/tessdata",
)


#: Confidence (0-100) at which Tesseract's reading of a single character counts as sure.
SURE_SYMBOL = 90.0


def _tesserocr():
    try:
        import tesserocr
    except ImportError as exc:
        raise ConfigError("pixel text checks need tesserocr (pip install 'radiolens[ocr]')") from exc
    return tesserocr


@lru_cache(maxsize=8)
def tessdata_dir(language: str = "eng") -> str:
    """The folder holding ``<language>.traineddata`` for every language of ``language`` (``eng+deu``):
    ``TESSDATA_PREFIX`` (the folder itself or its ``tessdata`` child), then :data:`TESSDATA_DIRS`."""
    wanted = language.split("+")
    candidates = []
    prefix = os.environ.get("TESSDATA_PREFIX")
    if prefix:
        candidates += [prefix, os.path.join(prefix, "tessdata")]
    candidates += list(TESSDATA_DIRS)
    for folder in candidates:
        if all(Path(folder, f"{lang}.traineddata").is_file() for lang in wanted):
            return folder
    raise ConfigError(f"no Tesseract language data for {language!r} (Debian: apt-get install tesseract-ocr-"
                      f"{wanted[0]}; or set TESSDATA_PREFIX to the folder holding {wanted[0]}.traineddata)")


def require_tesseract(language: str = "eng") -> None:
    """Fail with a ``ConfigError`` saying what to install when OCR is asked for but cannot run."""
    with _engine(language):
        pass


def require_ocr(cfg: PixelTextConfig) -> None:
    """Everything ``cfg``'s checks need, loaded once (at start-up: a missing engine, language or detector model
    stops the start, not the first file): Tesseract and, unless switched off, the learned text detector (found
    or downloaded, :func:`radiolens.io.text_detector.model_path`)."""
    require_tesseract(cfg.language)
    if cfg.text_detector != "off":
        from radiolens.io import text_detector

        text_detector.check(text_detector.model_path(cfg.detector_model))


# Idle engines by language. An engine is not thread-safe and takes ~0.1 s to load, so each check borrows one
# and gives it back: the service keeps as many as it ever ran checks at once.
_ENGINES: dict[str, queue.SimpleQueue] = {}


@contextmanager
def _engine(language: str) -> Iterator:
    tesserocr = _tesserocr()
    idle = _ENGINES.setdefault(language, queue.SimpleQueue())
    try:
        api = idle.get_nowait()
    except queue.Empty:
        try:
            api = tesserocr.PyTessBaseAPI(path=tessdata_dir(language), lang=language, psm=tesserocr.PSM.SINGLE_BLOCK)
        except RuntimeError as exc:  # data present but unreadable / wrong version
            raise ConfigError(f"Tesseract cannot load {language!r} ({type(exc).__name__})") from None
    try:
        yield api
    finally:
        api.Clear()
        idle.put(api)


def _luminance(frame: np.ndarray) -> np.ndarray:
    a = np.asarray(frame, dtype=np.float32)
    if a.ndim == 3:
        a = a[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return a


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """One frame (grey or RGB, any integer/float type) as 8-bit grey: what OCR reads. Scaled between the 0.5th
    and 99.5th percentiles, not min-max: text drawn far above the anatomy's range (the largest stored value)
    would otherwise squeeze the anatomy, and fainter text over it, into a few dark grey levels."""
    a = _luminance(frame)
    lo, hi = (float(v) for v in np.percentile(a, (0.5, 99.5)))
    if hi <= lo:
        lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.round(np.clip((a - lo) * (255.0 / (hi - lo)), 0, 255)).astype(np.uint8)


def _strokes(grey: np.ndarray, stroke: int) -> list[np.ndarray]:
    """Binary maps of thin strokes standing out from their surroundings: bright (white top-hat) and dark
    (black top-hat), each at a strict and a lenient threshold (text of any contrast, on any background)."""
    from scipy import ndimage as ndi

    a = grey.astype(np.float32)
    maps = []
    for tophat in (ndi.white_tophat(a, size=(stroke, stroke)), ndi.black_tophat(a, size=(stroke, stroke))):
        peak = float(np.percentile(tophat, 99.99))
        for fraction in (0.5, 0.2):
            threshold = max(6.0, fraction * peak)
            maps.append(tophat > threshold)
    return maps


def _glyphs(bw: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (y0, y1, x0, x1) of connected components shaped like characters."""
    from scipy import ndimage as ndi

    labels, _n = ndi.label(bw)
    out = []
    limit = max(bw.shape) // 6
    for sl in ndi.find_objects(labels):
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        if 5 <= h <= limit and w <= 20 * h:
            out.append((sl[0].start, sl[0].stop, sl[1].start, sl[1].stop))
    return out


def _lines(boxes: list[tuple[int, int, int, int]], max_lines: int) -> list[tuple[int, int, int, int]]:
    """Character boxes grouped into text lines (similar height, shared centre line, small gaps); lines of
    at least two characters, the ones with most characters first."""
    boxes = sorted(boxes, key=lambda b: b[2])
    parent = list(range(len(boxes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, (y0, y1, _x0, x1) in enumerate(boxes):
        h, cy = y1 - y0, (y0 + y1) / 2
        for j in range(i + 1, len(boxes)):
            v0, v1, u0, u1 = boxes[j]
            if u0 - x1 > 1.2 * h:
                break
            g = v1 - v0
            if 0.5 < g / h < 2.0 and abs((v0 + v1) / 2 - cy) < 0.45 * max(h, g):
                parent[root(j)] = root(i)
    groups: dict[int, list] = {}
    for i, b in enumerate(boxes):
        groups.setdefault(root(i), []).append(b)
    lines = [[min(b[0] for b in g), max(b[1] for b in g), min(b[2] for b in g), max(b[3] for b in g), len(g)]
             for g in groups.values()]
    # words of one line, split by punctuation too small to be a character (hyphens, dots): joined when on
    # the same band and close
    lines.sort(key=lambda ln: ln[2])
    merged: list[list[int]] = []
    for ln in lines:
        for m in merged:
            h = max(m[1] - m[0], ln[1] - ln[0])
            overlap = min(m[1], ln[1]) - max(m[0], ln[0])
            if overlap > 0.6 * min(m[1] - m[0], ln[1] - ln[0]) and ln[2] - m[3] < 2.0 * h and 0.5 < (
                    ln[1] - ln[0]) / max(1, m[1] - m[0]) < 2.0:
                m[0], m[1], m[3], m[4] = min(m[0], ln[0]), max(m[1], ln[1]), max(m[3], ln[3]), m[4] + ln[4]
                break
        else:
            merged.append(list(ln))
    # a line: two characters or more, or one component as wide as a word (touching letters)
    keep = [m for m in merged if m[4] >= 2 or (m[3] - m[2]) >= 2 * (m[1] - m[0])]
    keep.sort(key=lambda ln: -ln[4])
    return [tuple(m[:4]) for m in keep[:max_lines]]


def _alnum(text: str) -> int:
    return sum(c.isalnum() for c in text)


def _crop(bw: np.ndarray, line: tuple[int, int, int, int]) -> np.ndarray:
    """A candidate line cut out of ``bw`` with room around it (a quarter of its height above and below, a whole
    height at each end, so characters at its ends are read whole)."""
    y0, y1, x0, x1 = line
    pad = max(2, (y1 - y0) // 4)
    return bw[max(0, y0 - pad):y1 + pad, max(0, x0 - 4 * pad):x1 + 4 * pad]


def _read_crops(crops: list[np.ndarray], cfg: PixelTextConfig, strict: frozenset[int] = frozenset()) -> set[int]:
    """Indexes of the binary ``crops`` (True: stroke) in which Tesseract reads text. All go to Tesseract at
    once: each scaled to a 40-pixel line height and stacked as dark text on white (one call per sheet rather
    than one per candidate; single lines at one size read best)."""
    from PIL import Image

    target, gap = 40, 24
    placed, spans, y, width = [], [], gap, 0
    for crop in crops:
        scale = target / max(1, crop.shape[0])
        w = max(1, min(4000, round(crop.shape[1] * scale)))
        img = Image.fromarray(np.where(crop, 0, 255).astype(np.uint8)).resize((w, target), Image.BILINEAR)
        placed.append((img, y))
        spans.append((y, y + target))
        y += target + gap
        width = max(width, w)
    if not placed:
        return set()
    sheet = Image.new("L", (width + 2 * gap, y), 255)
    for img, top in placed:
        sheet.paste(img, (gap, top))
    found: set[int] = set()
    for text, conf, top, h, sure in _words(sheet, cfg.language):
        n = _alnum(text)
        # two characters read with confidence, or three with some (the candidates already look like text lines),
        # or a word of which several letters or digits were each read with high confidence
        sure_enough = (n >= 2 and conf >= cfg.min_confidence) or sure >= cfg.sure_characters
        if not (sure_enough or (n >= 3 and conf >= cfg.line_confidence)):
            continue
        centre = top + h / 2
        for k, (a, b) in enumerate(spans):
            if a - gap / 2 <= centre < b + gap / 2 and (k not in strict or sure_enough):
                found.add(k)
    return found


def _words(sheet, language: str) -> list[tuple[str, float, int, int, int]]:
    """Tesseract's words on ``sheet`` (one block of lines): text, confidence (0-100), top, height, and how many
    of its letters and digits were read with a confidence of 90 or more each. Word confidence punishes a word
    for one odd character (a slashed zero read as ``@`` takes ``01-NOV-2017`` to 18 while every other
    character reads at 97-99), so the characters' own confidences are kept too."""
    tesserocr = _tesserocr()
    out = []
    word_level, symbol_level = tesserocr.RIL.WORD, tesserocr.RIL.SYMBOL
    with _engine(language) as api:
        api.SetImage(sheet)
        api.Recognize()
        it = api.GetIterator()
        for symbol in tesserocr.iterate_level(it, symbol_level) if it is not None else ():
            if symbol.IsAtBeginningOf(word_level):
                try:
                    text = symbol.GetUTF8Text(word_level)
                except RuntimeError:  # tesserocr's way of saying the word is empty
                    text = ""
                box = symbol.BoundingBox(word_level)
                out.append([text, float(symbol.Confidence(word_level)), box[1] if box else 0,
                            box[3] - box[1] if box else 0, 0])
            if not out:
                continue
            try:
                char = symbol.GetUTF8Text(symbol_level)
            except RuntimeError:
                continue
            if char.isalnum() and symbol.Confidence(symbol_level) >= SURE_SYMBOL:
                out[-1][4] += 1
    return [tuple(w) for w in out if w[0] and w[3]]


def _extend(bw: np.ndarray, line: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Grow a confirmed line sideways while the strokes go on (characters the grouping missed because they
    touch something else, e.g. a collimation edge): half-height steps whose stroke density is at least 40 %
    of the line's."""
    y0, y1, x0, x1 = line
    h = y1 - y0
    density = float(bw[y0:y1, x0:x1].mean())
    if density <= 0:
        return line
    step = max(2, h // 2)
    for _ in range(60):
        if x1 >= bw.shape[1] or bw[y0:y1, x1:x1 + step].mean() < 0.4 * density:
            break
        x1 = min(bw.shape[1], x1 + step)
    for _ in range(60):
        if x0 <= 0 or bw[y0:y1, max(0, x0 - step):x0].mean() < 0.4 * density:
            break
        x0 = max(0, x0 - step)
    return y0, y1, x0, x1


def _uniformity(raw: np.ndarray, strokes: np.ndarray, tolerance: float) -> tuple[float, float]:
    """Share of a line's stroke pixels (original values, full resolution) within ``tolerance`` of their most
    common value: burned-in text is drawn in one colour, edges of anatomy are not."""
    if strokes.shape != raw.shape:  # the stroke map was made downscaled: nearest-neighbour back up
        from PIL import Image

        strokes = np.asarray(Image.fromarray(strokes.astype(np.uint8)).resize(raw.shape[::-1], Image.NEAREST)) > 0
    values = raw[strokes]
    if values.size == 0:
        return 0.0, 0.0
    levels, counts = np.unique(np.round(values / max(tolerance, 1e-6)), return_counts=True)
    mode = levels[counts.argmax()]
    share = float((np.abs(np.round(values / max(tolerance, 1e-6)) - mode) <= 1).mean())
    return share, float(mode * tolerance)


def _rules(mask: np.ndarray, h: int) -> np.ndarray:
    """The pixels of ``mask`` on horizontal runs longer than two line heights (``h``): rules, grid lines, the
    edges of pictures and scale bars, never print."""
    from scipy import ndimage as ndi

    return ndi.binary_opening(mask, structure=np.ones((1, 2 * h + 1), dtype=bool))


def _colour_span(raw: np.ndarray, box: tuple[int, int, int, int], colour: float, tolerance: float,
                 min_pixels: int = 1) -> tuple[int, int]:
    """The columns of a text line, found by its colour: from the line's columns, sideways while columns of the
    line's band hold the text colour at a character's density (5-70 % of the band's height; a saturated
    region fills whole columns), across gaps narrower than the line's height."""
    y0, y1, x0, x1 = box
    h = y1 - y0
    band = np.abs(raw[y0:y1] - colour) <= 1.5 * tolerance
    fill = band.mean(axis=0)
    # runs of the colour longer than two line heights are rules, grid lines and picture edges, not print
    print_fill = (band & ~_rules(band, h)).mean(axis=0)
    text = (print_fill >= max(0.05, (min_pixels - 0.5) / h)) & (fill <= 0.7)
    limit = 40 * h
    lo, gap = x0, 0
    for x in range(x0 - 1, max(-1, x0 - limit), -1):
        gap = 0 if text[x] else gap + 1
        if gap > h:
            break
        if text[x]:
            lo = x
    hi, gap = x1, 0
    for x in range(x1, min(raw.shape[1], x1 + limit)):
        gap = 0 if text[x] else gap + 1
        if gap > h:
            break
        if text[x]:
            hi = x + 1
    return lo, hi


#: Modalities whose grey pixels are pictures with text on them as a rule (ultrasound, intravascular ultrasound)
#: rather than radiographs or cross-sections: see :func:`colour_tolerance`. Grey secondary captures (SC, OT) are
#: not among them: many are digitised films, i.e. radiographs, on which the tolerant test finds false text.
PICTURE_MODALITIES: frozenset[str] = frozenset({"US", "IVUS"})


def is_picture(ds) -> bool:
    """Whether the header says ``ds`` holds pictures with text on them as a rule: ultrasound
    (:data:`PICTURE_MODALITIES`) or colour (more than one sample per pixel: screen captures, photographs)."""
    modality = str(ds.get("Modality", "") or "").strip().upper()
    return int(ds.get("SamplesPerPixel", 1) or 1) > 1 or modality in PICTURE_MODALITIES


def colour_tolerance(ds, cfg: PixelTextConfig) -> float:
    """The one-colour tolerance (fraction of the frame's range) for ``ds``'s pixels, chosen by what the header says
    the picture is, not by whether it was compressed lossily: :attr:`PixelTextConfig.picture_colour_tolerance` for
    pictures (:func:`is_picture`: ultrasound and colour), where burned-in text is the norm and JPEG smears its
    colour; :attr:`PixelTextConfig.colour_tolerance` for everything else, so grey radiographs, cross-sections and
    secondary captures (often digitised films), and grey images of unknown modality, keep the strict test that
    keeps clean radiographs free of false boxes (the tolerant one put boxes on 5 of 100 clean chest
    radiographs)."""
    return _tolerance(cfg, is_picture(ds))


def _tolerance(cfg: PixelTextConfig, picture: bool) -> float:
    return cfg.picture_colour_tolerance if picture else cfg.colour_tolerance


def detect_frame(frame: np.ndarray, cfg: PixelTextConfig, index: int = 0,
                 tolerance: float | None = None, picture: bool = False) -> list[TextBox]:
    """Boxes (margin included, clipped to the frame) around the text lines found in one frame.

    Candidates first, by image processing alone: thin strokes (top-hats) cut into character-shaped
    components, grouped into lines; then Tesseract confirms which candidates read as text. ``picture``: the frame
    is an ultrasound or colour picture (:func:`is_picture`), which sets the one-colour tolerance and whether the
    learned detector reads it whatever the stroke maps found (:attr:`PixelTextConfig.text_detector`).
    ``tolerance`` overrides the one-colour tolerance (a fraction of the frame's range).
    """
    raw = _luminance(frame)
    full = grey = to_uint8(raw)
    h, w = grey.shape
    fraction = _tolerance(cfg, picture) if tolerance is None else tolerance
    tolerance = max(0.5, fraction * float(raw.max() - raw.min()))
    scale = max(h, w) / cfg.max_side if max(h, w) > cfg.max_side else 1.0
    if scale > 1.0:
        from PIL import Image

        grey = np.asarray(Image.fromarray(grey).resize((round(w / scale), round(h / scale)), Image.BILINEAR))
    boxes: list[TextBox] = []
    for bw in _strokes(grey, cfg.stroke_px):
        for y0, y1, x0, x1, colour in _text_lines(raw, bw, scale, tolerance, cfg):
            x0, x1 = _colour_span(raw, (y0, y1, x0, x1), colour, tolerance)
            m, side = cfg.margin * (y1 - y0), cfg.side_margin * (y1 - y0)
            boxes.append(TextBox(index, max(0, int(x0 - side)), max(0, int(y0 - m)), min(w, int(np.ceil(x1 + side))),
                                 min(h, int(np.ceil(y1 + m)))))
    if cfg.text_detector == "all" or (cfg.text_detector == "auto" and (picture or boxes)):
        boxes = _with_detector(raw, full, boxes, cfg, index, tolerance, picture)
    if picture:
        boxes = [_whole_print(raw, b, tolerance) for b in boxes]
    return list(dict.fromkeys(boxes))  # each region once (stroke maps and readings find many lines twice)


def _text_lines(raw: np.ndarray, bw: np.ndarray, scale: float, tolerance: float, cfg: PixelTextConfig):
    """The candidate lines of one stroke map that are text, at full resolution, with their colour.

    Only candidates drawn in one colour go to Tesseract (edges of anatomy that happen to read as letters are
    not; testing colour first spares Tesseract most candidates of a radiograph). Each is read twice on one
    sheet: as the stroke map shows it, and as the pixels of its colour (the glyphs themselves, as exactly as
    the image holds them: thin strokes of small, faint text that the top-hat thickens or breaks, and the
    background ring a top-hat of the other polarity draws around dark text, read much better so)."""
    lines = _lines(_glyphs(bw), cfg.max_candidates)
    colours: dict[int, float] = {}
    uniform: dict[int, bool] = {}

    def full_box(line):
        y0, y1, x0, x1 = line
        return int(y0 * scale), int(np.ceil(y1 * scale)), int(x0 * scale), int(np.ceil(x1 * scale))

    def one_colour(k: int) -> bool:
        if k not in uniform:
            y0, y1, x0, x1 = lines[k]
            fy0, fy1, fx0, fx1 = full_box(lines[k])
            share, colours[k] = _uniformity(raw[fy0:fy1, fx0:fx1], bw[y0:y1, x0:x1], tolerance)
            uniform[k] = share >= cfg.min_uniformity
        return uniform[k]

    # read as text, and drawn in one colour
    candidates = [k for k in range(len(lines)) if one_colour(k)]
    crops = []
    for k in candidates:
        crops.append(_crop(bw, lines[k]))
        crops.append(np.abs(_crop(raw, full_box(lines[k])) - colours[k]) <= 1.5 * tolerance)
    confirmed = {candidates[i // 2] for i in _read_crops(crops, cfg, frozenset(range(1, len(crops), 2)))}
    # the rest of a confirmed line: candidates on its band, close to it, also in one colour (a date split at its
    # hyphens, a word over brighter anatomy that Tesseract did not read on its own)
    for _ in range(3):
        more = {k for k, ln in enumerate(lines) if k not in confirmed
                and any(_continues(lines[c], ln) for c in confirmed) and one_colour(k)}
        if not more:
            break
        confirmed |= more
    out = []
    for k in sorted(confirmed):
        y0, y1, x0, x1 = (round(v * scale) for v in _extend(bw, lines[k]))  # full resolution from here
        out.append((y0, y1, x0, x1, colours[k]))
    return out


def _continues(a, b) -> bool:
    """Whether line ``b`` sits on the band of line ``a`` and within two line heights of it, sideways."""
    ha, hb = a[1] - a[0], b[1] - b[0]
    overlap = min(a[1], b[1]) - max(a[0], b[0])
    gap = max(a[2], b[2]) - min(a[3], b[3])
    return overlap > 0.5 * min(ha, hb) and gap < 2 * max(ha, hb) and 0.4 < hb / max(1, ha) < 2.5


def _overlaps(a: tuple[int, int, int, int], b: TextBox) -> bool:
    return min(b.y1, a[1]) > max(b.y0, a[0]) and min(b.x1, a[3]) > max(b.x0, a[2])


def _iou(a, b) -> float:
    dy, dx = min(a[1], b[1]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[2], b[2])
    if dy <= 0 or dx <= 0:
        return 0.0
    inter = dy * dx
    return inter / ((a[1] - a[0]) * (a[3] - a[2]) + (b[1] - b[0]) * (b[3] - b[2]) - inter)


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of ``values`` (64 bins): the split with the largest between-class variance."""
    hist, edges = np.histogram(values, 64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centres)
    m0, m1 = s0 / np.maximum(w0, 1), (s0[-1] - s0) / np.maximum(w1, 1)
    return float(centres[np.argmax(w0 * w1 * (m0 - m1) ** 2)])


def _with_detector(raw: np.ndarray, grey: np.ndarray, boxes: list[TextBox], cfg: PixelTextConfig, index: int,
                   tolerance: float, picture: bool) -> list[TextBox]:
    """The stroke maps' ``boxes`` checked against the learned detector's regions, and its regions that are text.

    The detector reads the frame twice: as it is and with every pixel set against its neighbourhood (faint print on
    header bars). A stroke-map line that no region touches is dropped (test patterns and lossy MR, whose edges
    Tesseract reads as characters); one more than twice as tall as the regions it touches (blocks of a test pattern
    grouped with their labels), or on a picture touching regions on two lines, is replaced by them; on a picture, a
    line reaching well past its regions is cut back to them (:func:`_clip`). A region is text when Tesseract reads
    it (its pixels split into print and background by Otsu's threshold, the print being the side away from the
    region's border) or, on pictures, when the detector is sure: very sure
    (:attr:`PixelTextConfig.detector_sure_score`), or sure (:attr:`PixelTextConfig.detector_score`) with the print
    drawn in one colour. Regions continuing a confirmed one on its band are taken too. On grey frames a region's box
    is cut to the print inside it (:func:`_print_extent`); on pictures, where print over anatomy cannot be told from
    it, the region is kept, lengthened where its one-colour print goes on (:func:`_picture_line`).
    """
    from radiolens.io import text_detector

    path = text_detector.model_path(cfg.detector_model)
    h, w = grey.shape
    regions = text_detector.regions(grey, path)
    for region in text_detector.regions(text_detector.local_contrast(raw), path):
        # kept unless the first read saw the same line as far (a faint line's end over anatomy is seen in one only)
        if all(_iou(region, other) < 0.5 or not _reaches(other, region) for other in regions):
            regions.append(region)
    kept_boxes: list[TextBox] = []
    for b in boxes:
        touching = [r for r in regions if _overlaps(r, b)]
        if not touching:
            continue
        if b.y1 - b.y0 > 2 * max(r[1] - r[0] for r in touching) or (picture and _stacked(touching)):
            for y0, y1, x0, x1, _score in touching:
                m = int(0.25 * (y1 - y0))
                kept_boxes.append(TextBox(index, max(0, x0 - m), max(0, y0 - m), min(w, x1 + m), min(h, y1 + m)))
        else:
            kept_boxes.append(_clip(b, touching) if picture else b)
    lines, crops, extents, sure = [], [], [], set()
    for y0, y1, x0, x1, score in regions:
        rows = y1 - y0
        if rows < 6 or rows > max(24, h // 8):
            continue
        cut = raw[y0:y1, x0:x1]
        background = float(np.median(np.concatenate([cut[0], cut[-1], cut[:, 0], cut[:, -1]])))
        split = _otsu(cut.ravel())
        ink = cut > split if background <= split else cut < split
        if not 0.02 <= ink.mean() <= 0.6:
            continue
        # not a line of text: a blob, a character. Measured on the print where the region holds one (the region
        # pads it by about half its height all round, which leaves a two-character label as tall as it is wide)
        extent = _print_extent((y0, y1, x0, x1), ink)
        if extent[3] - extent[2] < 1.2 * (extent[1] - extent[0]):
            continue
        if picture and (score >= cfg.detector_sure_score or (
                score >= cfg.detector_score and _uniformity(cut, ink, tolerance)[0] >= cfg.min_uniformity)):
            sure.add(len(lines))
        lines.append((y0, y1, x0, x1))
        crops.append(ink)
        extents.append(extent)
    found = _read_crops(crops, cfg, frozenset(range(len(crops)))) | sure
    for _ in range(3):
        more = {k for k in range(len(lines)) if k not in found and any(_continues(lines[c], lines[k]) for c in found)}
        if not more:
            break
        found |= more
    darkest, brightest = float(raw.min()), float(raw.max())
    strict = max(0.5, cfg.colour_tolerance * (brightest - darkest))  # the grey frames' one colour
    for k in sorted(found):
        # over a picture's anatomy print cannot be told from it by its pixels alone: the region, lengthened where
        # its print colour goes on; on grey frames, the print inside the region
        if picture:
            y0, y1, x0, x1 = _picture_line(raw, lines[k], crops[k], strict, cfg.min_uniformity, (darkest, brightest))
        else:
            y0, y1, x0, x1 = extents[k]
        side, m = 0.5 * (y1 - y0), 0.25 * (y1 - y0)
        kept_boxes.append(TextBox(index, max(0, int(x0 - side)), max(0, int(y0 - m)), min(w, int(np.ceil(x1 + side))),
                                  min(h, int(np.ceil(y1 + m)))))
    return kept_boxes


def _picture_line(raw: np.ndarray, region: tuple[int, int, int, int], ink: np.ndarray, strict: float,
                  min_uniformity: float, extremes: tuple[float, float]) -> tuple[int, int, int, int]:
    """A detector ``region`` of a picture, lengthened sideways (up to six line heights) where its print goes on,
    when the print is one exact colour (within ``strict``) other than the frame's ``extremes``: the detector
    stops short where a line crosses the frame drawn round an ultrasound picture or a header bar's edge. Long runs
    of the colour (that frame) are not print."""
    y0, y1, x0, x1 = region
    h = y1 - y0
    for side in (ink, ~ink):  # Otsu's print side, else the other (bright print on black under a grey bar's edge)
        share, colour = _uniformity(raw[y0:y1, x0:x1], side & ~_rules(side, h), strict)
        extreme = min(abs(colour - e) for e in extremes) <= strict
        if share >= min_uniformity and not extreme:
            lo, hi = _colour_span(raw, region, colour, strict, min_pixels=2)
            return y0, y1, max(lo, x0 - 6 * h), min(hi, x1 + 6 * h)
    return region


def _whole_print(raw: np.ndarray, box: TextBox, tolerance: float) -> TextBox:
    """``box`` grown to the whole characters it cuts, where it lies on a bar of one colour with print of another:
    the characters are then exactly the pixels of the print's colour, and those it cuts (a line printed on the
    lower edge of a header bar, boxed to its upper part with the line above) are taken whole, when no taller or
    wider than the box is tall (not a rule or the edge of a bar). Over anatomy (no colour covers half the box) the
    box is left as it is."""
    from scipy import ndimage as ndi

    x0, y0, x1, y1 = box.x0, box.y0, box.x1, box.y1
    hb = y1 - y0
    cut = raw[y0:y1, x0:x1]
    if cut.size == 0:
        return box
    values, counts = np.unique(cut, return_counts=True)
    order = np.argsort(counts)[::-1]
    if len(order) < 2 or counts[order[0]] < 0.5 * cut.size or counts[order[1]] < 0.05 * cut.size:
        return box
    colour = float(values[order[1]])
    wy0, wy1 = max(0, y0 - hb), min(raw.shape[0], y1 + hb)
    ink = np.abs(raw[wy0:wy1, x0:x1] - colour) <= tolerance
    labels, _n = ndi.label(ink, structure=np.ones((3, 3)))
    cuts = set(np.unique(labels[y0 - wy0:y1 - wy0][ink[y0 - wy0:y1 - wy0]]).tolist())
    top, bottom = y0, y1
    for k, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None or k not in cuts or sl[0].stop - sl[0].start > hb or sl[1].stop - sl[1].start > hb:
            continue
        top, bottom = min(top, wy0 + sl[0].start), max(bottom, wy0 + sl[0].stop)
    return TextBox(box.frame, x0, top, x1, bottom)


def _reaches(a: tuple, b: tuple) -> bool:
    """Whether region ``a`` reaches as far sideways as ``b``, within half ``b``'s height."""
    slack = 0.5 * (b[1] - b[0])
    return a[2] <= b[2] + slack and a[3] >= b[3] - slack


def _stacked(regions: list[tuple]) -> bool:
    """Whether ``regions`` lie on more than one line (two of them overlap by less than half the lower's height)."""
    return any(min(a[1], b[1]) - max(a[0], b[0]) < 0.5 * min(a[1] - a[0], b[1] - b[0])
               for i, a in enumerate(regions) for b in regions[i + 1:])


def _clip(box: TextBox, regions: list[tuple]) -> TextBox:
    """``box`` with each side that reaches more than one region height past the detector ``regions`` it touches
    cut back to half a region height past them: a stroke-map line also takes in rules, scale bars and picture
    edges of the text's colour, while the regions can miss a character or two at a line's end (which the nearer
    sides keep)."""
    hr = max(r[1] - r[0] for r in regions)
    y0, y1 = min(r[0] for r in regions), max(r[1] for r in regions)
    x0, x1 = min(r[2] for r in regions), max(r[3] for r in regions)

    def cut(side: int, edge: int, direction: int) -> int:
        return edge + direction * int(0.5 * hr) if (side - edge) * direction > hr else side

    return TextBox(box.frame, cut(box.x0, x0, -1), cut(box.y0, y0, -1), cut(box.x1, x1, 1), cut(box.y1, y1, 1))


def _print_extent(region: tuple[int, int, int, int], ink: np.ndarray) -> tuple[int, int, int, int]:
    """The part of a detector ``region`` its print covers: the region grows the text by about half its height
    all round (DBNet's unclip), which would mask that much of the picture round every label."""
    from scipy import ndimage as ndi

    y0, y1, x0, x1 = region
    labels, _n = ndi.label(ink)
    # print sits inside the region; what reaches its border is something else the region cuts (a bar, an edge)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    inside = ink & ~np.isin(labels, border[border > 0])
    if inside.sum() < 0.3 * ink.sum():
        return region
    rows, cols = np.nonzero(inside.any(axis=1))[0], np.nonzero(inside.any(axis=0))[0]
    return y0 + int(rows[0]), y0 + int(rows[-1]) + 1, x0 + int(cols[0]), x0 + int(cols[-1]) + 1


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
    picture = is_picture(ds)
    boxes: list[TextBox] = []
    for i, frame in enumerate(frames):
        boxes.extend(detect_frame(frame, cfg, i, picture=picture))
    return boxes


def _fill_value(ds, frames: np.ndarray):
    """Display black: the smallest stored value (the largest for MONOCHROME1, where high values are dark)."""
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if int(ds.get("SamplesPerPixel", 1) or 1) > 1:
        return 0
    return frames.max() if photometric == "MONOCHROME1" else frames.min()


def mask_text(ds, boxes: list[TextBox]) -> int:
    """Black out ``boxes`` in ``ds``'s pixel data, in place; returns how many boxes were filled.

    Compressed pixel data is written back native, Explicit VR Little Endian, since masking changes the decoded
    pixels; native big endian data stays big endian; everything else about the image stays.
    """
    if not boxes:
        return 0
    pixels = np.array(ds.pixel_array)  # decoded, writable (pydicom may hand out a read-only view)
    ts = ds.file_meta.TransferSyntaxUID
    if ts.is_compressed:
        _to_native(ds, pixels)
    frames = frames_of(pixels, ds)
    fill = _fill_value(ds, frames)
    for b in boxes:
        frames[b.frame, b.y0:b.y1, b.x0:b.x1] = fill
    out = frames.reshape(pixels.shape)
    if not ds.file_meta.TransferSyntaxUID.is_little_endian:  # big endian data sets stay big endian
        out = out.astype(out.dtype.newbyteorder(">"))
        if out.dtype.itemsize == 1 and ds["PixelData"].VR == "OW":
            # 8-bit values in big endian 16-bit words: each pair of bytes is stored swapped (pydicom swaps them
            # back when decoding), so written as they are every two neighbouring pixels would trade places
            data = out.tobytes() + (b"\x00" if out.size % 2 else b"")
            ds.PixelData = np.frombuffer(data, dtype=np.uint8).reshape(-1, 2)[:, ::-1].tobytes()
            return len(boxes)
    ds.PixelData = out.tobytes()
    return len(boxes)


def _to_native(ds, pixels: np.ndarray) -> None:
    """Describe ``ds`` as holding ``pixels`` natively (Explicit VR Little Endian), as pydicom decoded them:
    colour as interleaved RGB, the sign its Pixel Representation says."""
    from pydicom.uid import ExplicitVRLittleEndian

    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if int(ds.get("SamplesPerPixel", 1) or 1) > 1:
        if str(ds.get("PhotometricInterpretation", "")).startswith("YBR"):
            ds.PhotometricInterpretation = "RGB"  # pydicom converts YCbCr to RGB when decoding
        ds.PlanarConfiguration = 0
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OB" if int(ds.get("BitsAllocated", 8)) <= 8 else "OW"
    ds["PixelData"].is_undefined_length = False
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            del ds[keyword]
