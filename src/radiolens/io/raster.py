"""PNG, JPEG and TIFF radiographs into the same :class:`RadioImage` as DICOM.

Raster exports are already windowed by whoever made them, so by default values map by the full range
of their bit depth (8-bit /255, 16-bit /65535) rather than a percentile window.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from radiolens.errors import ImageDimensionError, PixelRangeError, UnreadableImageError
from radiolens.io import formats
from radiolens.io.formats import UPLOAD_NAME
from radiolens.io.image import ImageMeta, RadioImage, Window
from radiolens.io.limits import MAX_HEADER_BYTES, MAX_PIXELS, check_dimensions
from radiolens.io.windowing import linear_window

# Pillow's DEBUG log quotes the metadata it parses (EXIF values, PNG text chunks), which can be PHI. Raise its
# logger to INFO unless someone already chose a level for it, so turning on debug logging for an application
# that reads radiographs does not print patient names; Pillow itself has no switch for this.
_PIL_LOGGER = logging.getLogger("PIL")
if _PIL_LOGGER.level == logging.NOTSET:
    _PIL_LOGGER.setLevel(logging.INFO)

def _grey(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 3:
        if arr.shape[-1] == 4:  # RGBA: alpha is not image content
            arr = arr[..., :3]
        if arr.shape[-1] == 3:
            arr = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
        elif arr.shape[-1] in (1, 2):
            arr = arr[..., 0]
        else:
            raise UnreadableImageError(f"unsupported channel layout {arr.shape}")
    return arr


def _peak(dtype: np.dtype) -> float:
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return 1.0


def read_raster(path: str | Path, *, window: Window | None = None) -> RadioImage:
    """A PNG, JPEG or TIFF file -> :class:`RadioImage` (format from :func:`radiolens.io.formats.format_of`:
    content first, since real data sets hold PNG files named .jpg; covid_figure1 has five)."""
    return decode_raster(Path(path), window=window)


def read_raster_bytes(data: bytes, *, name: str = UPLOAD_NAME, window: Window | None = None) -> RadioImage:
    """The same image from bytes in memory (an HTTP upload), so the raw file, metadata and all, never has to
    be written to disk. ``name`` is what error messages call it: pass a neutral one, never a file name."""
    return decode_raster(bytes(data), name=name, window=window)


def decode_raster(source: Path | bytes, *, name: str | None = None, fmt: str | None = None,
                  window: Window | None = None) -> RadioImage:
    """The raster reader of the format table, for a path or bytes. ``fmt`` ("png", "jpeg", "tiff") when the
    caller already knows it; otherwise the table decides (a file by magic, then suffix; bytes by magic).
    Only the table's formats are decoded, each by its own decoder: Pillow is never left to pick one of its
    other plugins (some run external programs) for a file the table does not know."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label, fmt = name or UPLOAD_NAME, fmt or formats.sniff(data)
        src: Path | io.BytesIO = io.BytesIO(data)
    else:
        src = Path(source)
        label, fmt = name or src.name, fmt or formats.format_of(src)
    if fmt not in formats.RASTER:
        raise UnreadableImageError(f"{label}: not a PNG, JPEG or TIFF image")
    return _decode(src, label, fmt, window)


def _decode(source: Path | io.BytesIO, name: str, fmt: str, window: Window | None) -> RadioImage:
    chroma = None
    if fmt == "tiff":
        arr = _read_tiff(source, name)
    else:
        arr, chroma = _read_pil(source, name, fmt)
    peak = _peak(arr.dtype)
    values = _grey(arr.astype(np.float32)) if arr.ndim == 3 else arr.astype(np.float32)
    if window is not None:
        out, used, source = linear_window(values, window), window, "override"
    elif np.issubdtype(arr.dtype, np.floating):
        lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
        used = Window(center=(lo + hi) / 2, width=max(hi - lo, 1e-12))
        out, source = linear_window(values, used), "full_range"
    else:
        used = Window(center=peak / 2.0, width=peak)
        out, source = np.clip(values * np.float32(1.0 / peak), 0, 1).astype(np.float32, copy=False), "full_range"
    meta = ImageMeta(source_format=fmt, rows=int(out.shape[0]), columns=int(out.shape[1]),
                     photometric_interpretation="MONOCHROME2",
                     bits_stored=int(arr.dtype.itemsize * 8) if np.issubdtype(arr.dtype, np.integer) else None,
                     window_used=used, window_source=source)
    if chroma is not None:
        meta.extra["chroma"] = round(chroma, 4)
    return RadioImage(pixels=np.ascontiguousarray(out, dtype=np.float32), meta=meta)


#: ``ImageMeta.source_format`` of pixels handed over in memory (no file, so no header to read).
ARRAY_FORMAT = "array"


def image_from_array(array: np.ndarray, *, name: str = "array") -> RadioImage:
    """Pixels already in memory (a notebook's NumPy array) -> the same :class:`RadioImage` a PNG of them gives.

    The intensity convention is the raster files': display-ready grey values, bright = dense (MONOCHROME2),
    - ``uint8`` / ``uint16``: the full range of the type (0..255, 0..65535), as an 8- or 16-bit PNG maps;
    - floating point: already in [0, 1] (a [0, 1] array is taken as is, never rescaled by its own min and max,
      so a dark image stays dark).
    Shapes: (H, W), (H, W, 1), or (H, W, 3) / (H, W, 4) RGB(A), turned grey with the same BT.601 weights as a
    colour file (alpha dropped), and measured for colour so the input gate can refuse a colour picture.
    Anything else (other dtypes, values outside the range, NaN) is refused with a typed error, because a
    mis-scaled array gives confident nonsense rather than an error further down.
    """
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ImageDimensionError(f"{name}: expected a (H, W), (H, W, 1) or (H, W, 3|4) array, got shape "
                                  f"{tuple(arr.shape)}")
    integer = arr.dtype in (np.uint8, np.uint16)
    if not integer and not np.issubdtype(arr.dtype, np.floating):
        raise PixelRangeError(f"{name}: dtype {arr.dtype} is not supported: give uint8 (0..255), uint16 "
                              "(0..65535) or floating point in [0, 1]")
    samples = 1 if arr.ndim == 2 else int(arr.shape[-1])
    peak, bits = (_peak(arr.dtype), 8 * arr.dtype.itemsize) if integer else (1.0, None)
    check_dimensions(name, int(arr.shape[0]), int(arr.shape[1]), samples=samples, bits=8 * arr.dtype.itemsize)
    if not integer:
        lo, hi = float(np.min(arr)), float(np.max(arr))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise PixelRangeError(f"{name}: contains NaN or infinite values")
        if lo < 0.0 or hi > 1.0:
            raise PixelRangeError(f"{name}: floating-point pixels must lie in [0, 1] (got {lo:.4g}..{hi:.4g}); "
                                  "divide 8-bit values by 255, or window CT/raw values first")
    chroma = None
    if arr.ndim == 3:
        rgb = arr[..., :3]
        if arr.dtype == np.uint8:  # exactly what reading a colour PNG/JPEG of these pixels does (Pillow's luma)
            im = Image.fromarray(np.ascontiguousarray(rgb))
            chroma = _chroma(im)
            arr = np.asarray(im.convert("L"))
        else:
            chroma = _chroma(Image.fromarray(np.clip(np.rint(rgb * (255.0 / peak)), 0, 255).astype(np.uint8)))
            arr = _grey(rgb.astype(np.float32))
    out = np.clip(arr.astype(np.float32) * np.float32(1.0 / peak), 0, 1).astype(np.float32, copy=False)
    meta = ImageMeta(source_format=ARRAY_FORMAT, rows=int(out.shape[0]), columns=int(out.shape[1]),
                     photometric_interpretation="MONOCHROME2",
                     bits_stored=bits,
                     window_used=Window(center=peak / 2.0, width=peak), window_source="full_range")
    if chroma is not None:
        meta.extra["chroma"] = round(chroma, 4)
    return RadioImage(pixels=np.ascontiguousarray(out), meta=meta)


def _chroma(rgb: Image.Image) -> float:
    """Mean (max - min) over the RGB channels, 0..1, on a 32 x 32 nearest-neighbour sample (0.06 ms; a mean
    over 1,024 pixels is all a threshold needs): ~0 for a grey image saved as RGB (most radiograph JPEGs),
    clearly above 0 for a colour photo or screenshot (the monitoring input gate uses it)."""
    small = np.asarray(rgb.resize((32, 32), Image.Resampling.NEAREST), dtype=np.int16)
    return float((small.max(axis=-1) - small.min(axis=-1)).mean() / 255.0)


# Bits per sample of Pillow modes wider than 8 (everything else is 8 or 1 bit per sample).
_PIL_BITS = {"I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}


def _check_raster_size(source: Path | io.BytesIO, name: str, raw_bytes: int) -> None:
    """A compressed image is not larger than its raw pixels plus metadata: anything beyond is padding or
    appended data (Pillow and tifffile read past it), refused like padded DICOM."""
    size = source.getbuffer().nbytes if isinstance(source, io.BytesIO) else Path(source).stat().st_size
    if size > raw_bytes + MAX_HEADER_BYTES:
        raise ImageDimensionError(f"{name}: file is {size:,} bytes, far more than its {raw_bytes:,} bytes of "
                                  "pixels (padding or appended data)")


# The table's raster formats Pillow decodes, by Pillow's plugin names.
_PIL_PLUGINS = {"png": "PNG", "jpeg": "JPEG"}


def _read_pil(path: Path | io.BytesIO, name: str, fmt: str) -> tuple[np.ndarray, float | None]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=[_PIL_PLUGINS[fmt]]) as im:
                w, h = im.size
                bands = len(im.getbands())  # before load(): from the header
                check_dimensions(name, h, w, samples=bands, bits=_PIL_BITS.get(im.mode, 8))
                _check_raster_size(path, name, h * w * bands * max(1, _PIL_BITS.get(im.mode, 8) // 8))
                im.load()
                chroma = None
                if im.mode in ("P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "LA", "1"):
                    # 8-bit colour -> grey in C (BT.601 luma, as _grey): 5-10x faster than float math in numpy.
                    # Alpha is dropped, never composited: it is not image content.
                    if im.mode not in ("L", "LA", "1"):
                        rgb = im.convert("RGB")
                        chroma = _chroma(rgb)
                        im = rgb.convert("L")
                    else:
                        im = im.convert("L")
                arr = np.asarray(im)
                if im.mode in ("I;16", "I;16B", "I;16L"):
                    arr = arr.astype(np.uint16)
                elif im.mode == "I":
                    arr = arr.astype(np.int64)
                    arr = arr.astype(np.uint16) if arr.min() >= 0 and arr.max() <= 65535 else arr.astype(np.float64)
                return arr, chroma
    except ImageDimensionError:
        raise
    except FileNotFoundError as exc:
        raise UnreadableImageError(f"{name}: file not found") from exc
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageDimensionError(f"{name}: image too large (decompression-bomb guard)") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UnreadableImageError(f"{name}: not a readable image ({type(exc).__name__})") from exc


def _read_tiff(path: Path | io.BytesIO, name: str) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            shape = page.shape
            if len(shape) not in (2, 3):
                raise ImageDimensionError(f"{name}: unsupported TIFF layout {shape}")
            h, w = int(shape[0]), int(shape[1])
            samples = int(shape[2]) if len(shape) == 3 else 1
            bits = 8 * int(np.dtype(page.dtype).itemsize) if page.dtype is not None else 8
            check_dimensions(name, h, w, samples=samples, bits=bits)
            _check_raster_size(path, name, h * w * samples * bits // 8)
            arr = page.asarray()
    except ImageDimensionError:
        raise
    except FileNotFoundError as exc:
        raise UnreadableImageError(f"{name}: file not found") from exc
    except Exception as exc:  # tifffile raises many types on corrupt input
        raise UnreadableImageError(f"{name}: not a readable TIFF ({type(exc).__name__})") from exc
    if arr.size > MAX_PIXELS:
        raise ImageDimensionError(f"{name}: image too large")
    return arr
