"""A learned text detector: where a picture shows lines of text, whatever Tesseract can read of them.

Why: the stroke maps of :mod:`radiolens.io.deid_ocr` find text by image processing, which cannot separate text
that touches other structures (an ultrasound's colour flow, a header bar's grey-on-grey print) from them, and
Tesseract cannot read the small pixel fonts of ultrasound headers at all. A detector trained on scene and
document text (PaddleOCR's PP-OCRv4 detection model, a DBNet: 4.7 MB ONNX, Apache-2.0) draws a probability map
of "text here" that does neither; :mod:`radiolens.io.deid_ocr` uses its regions as further candidates, and to
keep stroke-map lines to where there is text.

The model comes from the PyPI wheel of RapidOCR (``rapidocr_onnxruntime`` 1.4.4), which carries it: found in that
package when it is installed, in a file named by :attr:`~radiolens.io.deid_ocr.PixelTextConfig.detector_model`
or ``RADIOLENS_TEXT_DETECTOR``, in the user cache, or else downloaded once from PyPI (the wheel and the model
checked against their SHA-256) into the cache. Only the model is used: RapidOCR's own pre- and post-processing
needs OpenCV, pyclipper and Shapely (about 100 MB in the service image) for rotated polygons, while masking
horizontal burned-in text needs axis-aligned boxes, which connected components of the map give (SciPy), so that
part is written here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import os
import tempfile
import threading
import urllib.request
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from radiolens.errors import ConfigError

log = logging.getLogger(__name__)

#: The model file, as named inside the wheel.
MODEL_NAME = "ch_PP-OCRv4_det_infer.onnx"
MODEL_SHA256 = "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"
#: The PyPI package whose wheel carries the model, and that wheel.
PACKAGE = "rapidocr_onnxruntime"
WHEEL_URL = ("https://files.pythonhosted.org/packages/ba/12/1e5497183bdbe782dbb91bad1d0d2297dba4d2831b2652657f7517bfc6df/"
             "rapidocr_onnxruntime-1.4.4-py3-none-any.whl")
WHEEL_SHA256 = "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf"
WHEEL_MEMBER = f"{PACKAGE}/models/{MODEL_NAME}"
ENV = "RADIOLENS_TEXT_DETECTOR"

#: The detector reads pictures scaled so that their shorter side is at least this (small text of small pictures
#: is upscaled to the sizes it was trained on) and their longer side at most :data:`MAX_SIDE`.
MIN_SIDE = 736
MAX_SIDE = 1600


def cache_dir() -> Path:
    """Where a downloaded model is kept: ``$XDG_CACHE_HOME/radiolens`` or ``~/.cache/radiolens``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "radiolens"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _installed() -> Path | None:
    """The model inside an installed ``rapidocr_onnxruntime`` (found without importing it: its import loads
    OpenCV)."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "models" / MODEL_NAME
        if path.is_file():
            return path
    return None


def fetch(dest: str | Path, url: str = WHEEL_URL, timeout: float = 120.0) -> Path:
    """Download the wheel from PyPI, check it, and write the model out of it to ``dest/MODEL_NAME`` (written
    whole or not at all). Returns the model's path."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    log.info("downloading the text detection model (inside %s, 15 MB)", url.rsplit("/", 1)[-1])
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - a fixed https URL
            wheel = response.read()
    except OSError as exc:
        raise ConfigError(f"could not download the text detection model ({exc.__class__.__name__}); install "
                          f"{PACKAGE}==1.4.4 or set {ENV} to a copy of {MODEL_NAME}") from exc
    if _sha256(wheel) != WHEEL_SHA256:
        raise ConfigError(f"the downloaded {PACKAGE} wheel does not match its SHA-256; refusing it")
    with zipfile.ZipFile(io.BytesIO(wheel)) as zf:
        model = zf.read(WHEEL_MEMBER)
    if _sha256(model) != MODEL_SHA256:
        raise ConfigError(f"{MODEL_NAME} inside the wheel does not match its SHA-256; refusing it")
    fd, tmp = tempfile.mkstemp(dir=dest, suffix=".part")
    with os.fdopen(fd, "wb") as out:
        out.write(model)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from a service user other than the one that fetched it
    os.replace(tmp, dest / MODEL_NAME)
    return dest / MODEL_NAME


_FETCH_LOCK = threading.Lock()


def model_path(explicit: str | Path | None = None, download: bool = True) -> Path:
    """The detection model: ``explicit``, else ``$RADIOLENS_TEXT_DETECTOR``, else an installed
    ``rapidocr_onnxruntime``, else the user cache, else (``download``) fetched from PyPI into the cache.
    A :class:`~radiolens.errors.ConfigError` says how to provide it when none of these has it."""
    named = explicit or os.environ.get(ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"text detection model not found: {path.name} (from "
                              f"{'the configuration' if explicit else ENV})")
        return path
    found = _installed()
    if found is not None:
        return found
    cached = cache_dir() / MODEL_NAME
    if cached.is_file():
        return cached
    if not download:
        raise ConfigError(f"the text detection model is not available offline: install {PACKAGE}==1.4.4, or set "
                          f"{ENV} to a copy of {MODEL_NAME}")
    with _FETCH_LOCK:
        return cached if cached.is_file() else fetch(cache_dir())


@lru_cache(maxsize=4)
def _session(path: str):
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ConfigError("the text detector needs onnxruntime (pip install 'radiolens[serve]')") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = min(4, os.cpu_count() or 1)
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for a bad file
        raise ConfigError(f"{Path(path).name} is not a usable ONNX model ({exc.__class__.__name__})") from exc


def check(path: str | Path) -> None:
    """Load the model at ``path`` (at start-up, so that a missing or broken model fails then, not per file)."""
    _session(str(path))


def probability(grey: np.ndarray, path: str | Path) -> tuple[np.ndarray, float, float]:
    """The detector's text probability map of an 8-bit grey picture, with the factors (rows, columns) from the
    map's pixels back to the picture's."""
    from PIL import Image

    h, w = grey.shape
    ratio = 1.0
    if min(h, w) < MIN_SIDE:
        ratio = MIN_SIDE / min(h, w)
    if max(h, w) * ratio > MAX_SIDE:
        ratio = MAX_SIDE / max(h, w)
    rows, cols = max(32, round(h * ratio / 32) * 32), max(32, round(w * ratio / 32) * 32)
    scaled = np.asarray(Image.fromarray(grey).resize((cols, rows), Image.BILINEAR), dtype=np.float32)
    x = np.repeat(((scaled / 255.0 - 0.5) / 0.5)[None, None], 3, axis=1)  # the model's normalisation, 3 channels
    session = _session(str(path))
    prob = session.run(None, {session.get_inputs()[0].name: x})[0][0, 0]
    return prob, h / rows, w / cols


def regions(grey: np.ndarray, path: str | Path, threshold: float = 0.3, min_score: float = 0.5,
            unclip: float = 1.6) -> list[tuple[int, int, int, int, float]]:
    """Text regions (y0, y1, x0, x1 in ``grey``'s pixels, end exclusive; mean probability) of an 8-bit grey
    picture: connected components of the map above ``threshold`` whose mean probability is ``min_score`` or more,
    grown as DBNet's training shrank them (by area x ``unclip`` / perimeter; PaddleOCR's defaults)."""
    from scipy import ndimage as ndi

    prob, sy, sx = probability(grey, path)
    labels, _n = ndi.label(ndi.binary_dilation(prob > threshold, structure=np.ones((2, 2), dtype=bool)))
    h, w = grey.shape
    out = []
    for i, sl in enumerate(ndi.find_objects(labels), 1):
        if sl is None:
            continue
        part = labels[sl] == i
        score = float(prob[sl][part].mean())
        rows, cols = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        if score < min_score or min(rows, cols) < 3:
            continue
        grow = float(part.sum()) * unclip / (2 * (rows + cols))
        y0, y1 = max(0, int((sl[0].start - grow) * sy)), min(h, int(np.ceil((sl[0].stop + grow) * sy)))
        x0, x1 = max(0, int((sl[1].start - grow) * sx)), min(w, int(np.ceil((sl[1].stop + grow) * sx)))
        out.append((y0, y1, x0, x1, score))
    return out


def local_contrast(raw: np.ndarray, window: int = 17, floor: float = 0.01) -> np.ndarray:
    """``raw`` as 8-bit grey in which every pixel is set against its neighbourhood (mean and spread of a
    ``window``-pixel square; the spread floored at ``floor`` of the range, so flat areas stay flat): faint print on
    a header bar (grey 231 on 244 of 255) stands out as much as white text on black. The window is a little
    smaller than a label's box is tall: a 21-pixel measurement label (grey 233 on a white box drawn on black) set
    against a 25-pixel window is measured against the black above and below its box and vanishes; against 17
    pixels it is read (13 reads it too, but also cuts the tops off print on a bar's edge)."""
    from scipy import ndimage as ndi

    a = np.asarray(raw, dtype=np.float64)
    mean = ndi.uniform_filter(a, window)
    spread = np.sqrt(np.maximum(ndi.uniform_filter(a * a, window) - mean * mean, 0.0))
    z = np.clip((a - mean) / (spread + floor * float(a.max() - a.min()) + 1e-6), -2.5, 2.5)
    return np.round((z + 2.5) * 51.0).astype(np.uint8)
