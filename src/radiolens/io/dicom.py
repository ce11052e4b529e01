"""Reading DICOM radiographs into :class:`RadioImage`.

Order of operations matters (PS3.3 C.11): stored values -> Modality LUT (rescale or LUT sequence) ->
VOI (window or VOI LUT sequence; a percentile window when the file has neither) -> MONOCHROME1
inversion last. Inverting before the VOI transform is a classic bug that makes air bright.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array
from pydicom.uid import (
    AllTransferSyntaxes,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from radiolens.errors import (
    ImageDimensionError,
    NoPixelDataError,
    NotDicomError,
    RadiolensError,
    TruncatedFileError,
    UnreadableImageError,
    UnsupportedTransferSyntaxError,
)
from radiolens.io import vocab
from radiolens.io.formats import JPEG_SOI, UPLOAD_NAME, Frames, Source
from radiolens.io.image import ImageMeta, RadioImage, Window
from radiolens.io.limits import (
    MAX_HEADER_BYTES,
    check_dimensions,
    check_inflated_size,
    stored_pixel_bytes,
)
from radiolens.io.windowing import apply_window, percentile_window

# pydicom also *logs* its validation warnings, quoting element values (names, IDs): PHI must not reach logs.
logging.getLogger("pydicom").setLevel(logging.ERROR)

_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def read_dicom_dataset(source: Source, *, name: str | None = None, stop_before_pixels: bool = False) -> Dataset:
    """Open a DICOM file, or DICOM bytes in memory, or raise a typed error; both run the same checks.

    Files without the 128-byte preamble / file meta (old ACR-NEMA style exports, e.g. pydicom-data's
    OT-PAL-8-face.dcm) are accepted only when a forced parse yields a plausible image data set (SOP Class
    UID, or Pixel Data with Rows); the transfer syntax is then taken from the encoding pydicom detected.
    Truncation is detected three ways, because pydicom reports it inconsistently: a warning about reaching
    the end of file, a last element shorter than its declared length, or an empty data set after a valid
    preamble. ``name`` is what error messages say: the file name by default, "upload" for bytes.
    """
    name = source_name(source, name)
    with _binary(source, name) as (fh, size):
        try:
            guard_deflated(fh, name)
            if size > MAX_HEADER_BYTES:
                precheck_size(fh.read(MAX_HEADER_BYTES), size, name, force=True)
                fh.seek(0)
        except OSError as exc:
            raise UnreadableImageError(f"{name}: file could not be read") from exc
        ds = _parse(fh, name, stop_before_pixels)
    return ds


def source_name(source: Source, name: str | None = None) -> str:
    """What errors call a source: ``name`` when given, else a path's file name, else "upload" for bytes."""
    if name:
        return name
    if isinstance(source, (bytes, bytearray, memoryview)):
        return UPLOAD_NAME
    return Path(source).name


@contextlib.contextmanager
def _binary(source: Source, name: str) -> Iterator[tuple[BinaryIO, int]]:
    """A seekable binary stream over a path or bytes, and its size in bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        yield io.BytesIO(data), len(data)
        return
    path = Path(source)
    if not path.exists():
        raise UnreadableImageError(f"{name}: file not found")
    try:
        fh = open(path, "rb")
        size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise UnreadableImageError(f"{name}: file could not be read") from exc
    with fh:
        yield fh, size


def _parse(fh: BinaryIO, name: str, stop_before_pixels: bool) -> Dataset:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # recorded, never shown: pydicom warnings can quote values (PHI)
        try:
            try:
                ds = pydicom.dcmread(fh, stop_before_pixels=stop_before_pixels)
            except InvalidDicomError:
                fh.seek(0)
                ds = _forced_read(fh, name, stop_before_pixels)
        except (NotDicomError, UnreadableImageError):
            raise
        except InvalidDicomError as exc:
            raise NotDicomError(f"{name}: not a DICOM file") from exc
        except (EOFError, OSError) as exc:
            raise TruncatedFileError(f"{name}: file is truncated or unreadable") from exc
        except Exception as exc:  # pydicom raises assorted errors on garbage; none may escape untyped
            raise NotDicomError(f"{name}: not a readable DICOM file ({type(exc).__name__})") from exc
    if any("end of file" in str(w.message).lower() for w in caught):
        raise TruncatedFileError(f"{name}: DICOM file is truncated (ends inside an element)")
    if len(ds) == 0:
        raise TruncatedFileError(f"{name}: DICOM file is truncated (no complete data set)")
    last = ds.get_item(list(ds.keys())[-1])
    length = getattr(last, "length", None)
    if length not in (None, 0xFFFFFFFF) and last.value is not None and isinstance(last.value, bytes) \
            and len(last.value) < length:
        raise TruncatedFileError(f"{name}: DICOM file is truncated ({len(last.value)} of {length} bytes "
                                 f"of the last element)")
    return ds


def open_checked_dataset(source: Source, *, name: str | None = None) -> Dataset:
    """:func:`read_dicom_dataset` plus the padding check for data sets with pixel data: the whole checked
    read, before anything (decoding, de-identification) uses the data set."""
    name = source_name(source, name)
    ds = read_dicom_dataset(source, name=name)
    if any(tag in ds for tag in _PIXEL_TAGS):
        size = len(source) if isinstance(source, (bytes, bytearray)) else \
            memoryview(source).nbytes if isinstance(source, memoryview) else Path(source).stat().st_size
        check_padding(ds, name, size)
    return ds


def guard_deflated(fp, name: str) -> None:
    """For a Deflated Explicit VR Little Endian file, refuse a data set that inflates beyond the limit before
    pydicom inflates it (in one ``zlib.decompress`` call, unbounded). ``fp`` is left where it was."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    start = fp.tell()
    try:
        read_preamble(fp, True)
        ts = _read_file_meta_info(fp).get("TransferSyntaxUID")
    except Exception:  # not DICOM, or a broken meta group: the reader reports it
        fp.seek(start)
        return
    try:
        if ts == DeflatedExplicitVRLittleEndian:
            check_inflated_size(fp, name)
    finally:
        fp.seek(start)


def precheck_size(head: bytes | memoryview, total: int, name: str, force: bool = False) -> None:
    """Before the full parse: the header alone (read from at most MAX_HEADER_BYTES) says how large the pixel
    data can be, and a file much larger than that is refused unparsed. pydicom reads padding of zeros as
    millions of empty elements (20 MB took over a minute), so it must be refused before pydicom sees it."""
    if total <= MAX_HEADER_BYTES:
        return
    import io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # warnings can quote element values (PHI)
        try:
            ds = pydicom.dcmread(io.BytesIO(bytes(head[:MAX_HEADER_BYTES])), stop_before_pixels=True, force=force)
        except Exception:  # the full read reports it
            return
        if "Rows" not in ds:
            return
        check_padding(ds, name, total, check_order=False)


def check_padding(ds: Dataset, name: str, file_bytes: int, check_order: bool = True) -> None:
    """Refuse bytes a DICOM file holds beyond its data set: elements after the pixel data that break the tag
    order (padding or appended garbage that pydicom parsed as elements), or a file larger than its pixel data
    plus a header allowance (a tiny image padded to 60 MB, whatever the padding looks like)."""
    last = None
    for tag in ds.keys() if check_order else ():
        if last is not None and tag <= last:
            raise UnreadableImageError(f"{name}: data beyond the end of the DICOM data set (trailing padding "
                                       "or appended bytes)")
        last = tag
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's warnings about a bad value quote it (PHI)
            rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            samples = int(ds.get("SamplesPerPixel", 1) or 1)
            bits = int(ds.get("BitsAllocated", 8) or 8)
    except (TypeError, ValueError):
        return  # reported by the decoder
    allowed = stored_pixel_bytes(max(rows, 0), max(cols, 0), max(frames, 1), max(samples, 1), bits) \
        + MAX_HEADER_BYTES
    if file_bytes > allowed:
        raise UnreadableImageError(f"{name}: file is {file_bytes:,} bytes but its image needs at most "
                                   f"{allowed:,} (padding or data beyond the image)")


def _forced_read(fh: BinaryIO, name: str, stop_before_pixels: bool) -> Dataset:
    try:
        ds = pydicom.dcmread(fh, force=True, stop_before_pixels=stop_before_pixels)
    except Exception as exc:
        raise NotDicomError(f"{name}: not a DICOM file") from exc
    plausible = len(ds) > 0 and ("SOPClassUID" in ds or ("PixelData" in ds and "Rows" in ds))
    if not plausible:
        raise NotDicomError(f"{name}: not a DICOM file")
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        implicit, little = ds.original_encoding
        if little is False:
            ts = ExplicitVRBigEndian
        else:
            ts = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        ds.file_meta = ds.file_meta if isinstance(getattr(ds, "file_meta", None), FileMetaDataset) \
            else FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ts
    return ds


def dicom_to_image(ds: Dataset, *, name: str = "<dataset>", window: Window | None = None,
                   frames: Frames = "first") -> RadioImage:
    """Decode and normalise an already-open dataset."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warnings can quote element values (PHI): keep them out of logs
        return _checked_dicom_to_image(ds, name, window, frames)


def _checked_dicom_to_image(ds: Dataset, name: str, window: Window | None, frames: Frames) -> RadioImage:
    if not any(tag in ds for tag in _PIXEL_TAGS):
        raise NoPixelDataError(f"{name}: DICOM file has no pixel data")
    if "Rows" not in ds or "Columns" not in ds:
        raise ImageDimensionError(f"{name}: DICOM pixel data without Rows/Columns")
    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError) as exc:
        raise UnreadableImageError(f"{name}: malformed image dimensions in the DICOM header") from exc
    try:
        bits = int(ds.get("BitsAllocated", 8) or 8)
    except (TypeError, ValueError) as exc:
        raise UnreadableImageError(f"{name}: malformed BitsAllocated in the DICOM header") from exc
    check_dimensions(name, rows, cols, n_frames, samples, bits=bits,
                     decoded_frames=1 if frames == "first" else n_frames)
    _check_encapsulated_size(ds, name, rows, cols)

    try:
        return _dicom_to_image(ds, name, window, frames, n_frames, samples)
    except RadiolensError:
        raise
    except Exception as exc:  # malformed values (e.g. a bad VR) must still fail typed, never a traceback
        raise UnreadableImageError(f"{name}: malformed DICOM data set ({type(exc).__name__})") from exc


def _check_encapsulated_size(ds: Dataset, name: str, rows: int, cols: int) -> None:
    """A compressed frame declares its own size (JPEG SOF, JPEG 2000 SIZ), and decoders allocate what it says,
    not what Rows/Columns say: refuse a stream declaring more pixels than the header before decoding it."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        encapsulated = ts is not None and ts.is_encapsulated
    except ValueError:  # not a transfer syntax pydicom knows: the reader refuses it (unsupported_transfer_syntax)
        return
    if not encapsulated or "PixelData" not in ds:
        return
    from pydicom.encaps import generate_frames

    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        first = next(generate_frames(ds.PixelData, number_of_frames=frames), b"")
    except Exception:  # malformed encapsulation: the decoder reports it
        return
    declared = _stream_size(bytes(first[:65536]))
    if declared is not None and declared[0] * declared[1] > rows * cols:
        raise ImageDimensionError(f"{name}: compressed frame declares {declared[0]}x{declared[1]} pixels, more "
                                  f"than the header's {rows}x{cols} (decompression bomb?)")


def _stream_size(head: bytes) -> tuple[int, int] | None:
    """(rows, columns) declared by a JPEG / JPEG-LS (SOF marker) or JPEG 2000 (SIZ marker) stream head.

    Hand-written: reading two integers from a marker segment is simpler than asking each decoder library
    (Pillow, pylibjpeg, GDCM) for its header without decoding."""
    if not head.startswith(JPEG_SOI):
        j2k = head.find(b"\xff\x4f\xff\x51")  # SOC + SIZ (raw codestream, or inside a JP2 box)
        if j2k < 0 or len(head) < j2k + 24:
            return None
        rsiz = int.from_bytes(head[j2k + 6:j2k + 8], "big")
        x, y, x0, y0 = (int.from_bytes(head[j2k + o:j2k + o + 4], "big") for o in (8, 12, 16, 20))
        # Rsiz bits 12-13 are unused by every profile (Part 1, broadcast, IMF, HTJ2K, Part 2): set, the marker
        # segment is not a real SIZ (pydicom-data has a stream with a sequence delimiter written over it).
        if rsiz & 0x3000 or x0 >= x or y0 >= y:
            return None
        return y - y0, x - x0
    pos = 2
    sof = {*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0), 0xF7}
    while pos + 4 <= len(head):
        if head[pos] != 0xFF:
            return None
        marker = head[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(head[pos + 2:pos + 4], "big")
        if marker in sof and pos + 9 <= len(head):
            return int.from_bytes(head[pos + 5:pos + 7], "big"), int.from_bytes(head[pos + 7:pos + 9], "big")
        if marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + length
    return None


def _dicom_to_image(ds: Dataset, name: str, window: Window | None, frames: Frames, n_frames: int,
                    samples: int) -> RadioImage:
    raw = _decode(ds, name, frames)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    is_colour = samples > 1 or photometric == "PALETTE COLOR"
    if photometric == "PALETTE COLOR":
        raw = _palette(raw, ds, name)
    frame_axis = (frames == "all" and n_frames > 1)

    if is_colour:
        grey = _rgb_to_grey(raw.astype(np.float64))
        if photometric == "PALETTE COLOR":  # the colour LUT's entries are 8- or 16-bit
            peak = 65535.0 if raw.dtype.itemsize > 1 else 255.0
        else:
            peak = float(2 ** int(ds.get("BitsStored", 8)) - 1)
        values = grey
        if window is not None:
            out = apply_window(values, window, "LINEAR")
            used, source = window, "override"
        else:
            out = np.clip(values / peak, 0.0, 1.0).astype(np.float32)
            used, source = Window(center=peak / 2.0, width=peak), "full_range"
    else:
        values = apply_modality_lut(raw, ds).astype(np.float32, copy=False)
        out, used, source = _voi(values, ds, window)
        if photometric == "MONOCHROME1":
            out = (1.0 - out).astype(np.float32)

    if not frame_axis and out.ndim == 3 and out.shape[0] == n_frames and n_frames > 1:
        out = out[0]
    meta = extract_meta(ds)
    meta.window_used, meta.window_source = used, source
    return RadioImage(pixels=np.ascontiguousarray(out, dtype=np.float32), meta=meta)


def read_dicom(source: Source, *, name: str | None = None, window: Window | None = None,
               frames: Frames = "first") -> RadioImage:
    """A DICOM file or DICOM bytes -> :class:`RadioImage`, through every check of :func:`open_checked_dataset`."""
    name = source_name(source, name)
    return dicom_to_image(open_checked_dataset(source, name=name), name=name, window=window, frames=frames)


def _decode(ds: Dataset, name: str, frames: Frames) -> np.ndarray:
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # index=0 decodes only the first frame: a 120-frame JPEG cine costs one frame, not 120.
            index = 0 if frames == "first" and n_frames > 1 else None
            arr = _decode_pixels(ds, ts, index)
    except NotImplementedError as exc:
        raise UnsupportedTransferSyntaxError(
            f"{name}: transfer syntax {_ts_label(ts)} is not supported (no installed decoder; "
            "radiolens decodes uncompressed, RLE, JPEG, JPEG-LS and JPEG 2000)") from exc
    except (ValueError, EOFError) as exc:
        msg = str(exc).lower()
        if "length" in msg or "truncat" in msg or "not enough" in msg or "insufficient" in msg \
                or "less than expected" in msg or "too short" in msg:
            raise TruncatedFileError(f"{name}: pixel data is truncated") from exc
        raise UnreadableImageError(f"{name}: pixel data could not be decoded ({type(exc).__name__})") from exc
    except RuntimeError as exc:
        if "raised by all available plugins" in str(exc):  # decoders exist and all failed: a corrupt stream
            raise UnreadableImageError(f"{name}: compressed pixel data could not be decoded by any installed "
                                       f"decoder ({_ts_label(ts)}; corrupt stream?)") from exc
        if "no" in str(exc).lower() and ("handler" in str(exc).lower() or "plugin" in str(exc).lower()
                                         or "decoder" in str(exc).lower()):
            raise UnsupportedTransferSyntaxError(
                f"{name}: no decoder available for transfer syntax {_ts_label(ts)}") from exc
        raise UnreadableImageError(f"{name}: pixel data could not be decoded ({type(exc).__name__})") from exc
    except Exception as exc:
        raise UnreadableImageError(f"{name}: pixel data could not be decoded ({type(exc).__name__})") from exc
    if arr.size == 0:
        raise ImageDimensionError(f"{name}: decoded image is empty")
    return arr


# 8-bit JPEG Baseline / Extended: pydicom tries its plugins in name order, so GDCM decodes them first. Pillow's
# libjpeg-turbo gives the same pixels (identical on all 17 8-bit JPEG files of pydicom-data, grey and YBR/RGB
# colour, and on the SIIM CRs) 6x faster (1024^2 SIIM CR: 1.9 ms vs GDCM 12 ms, pylibjpeg 8 ms), which matters
# for batch scoring at 224 px, where decoding competes with the model for the same cores (docs/inference.md).
# Pillow cannot decode 12-bit JPEG: anything it refuses goes through pydicom's normal plugin chain, so
# errors, and files only GDCM or pylibjpeg read, behave exactly as before.
_PILLOW_FIRST = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"}


def _decode_pixels(ds: Dataset, ts: object, index: int | None) -> np.ndarray:
    if ts in _PILLOW_FIRST and int(ds.get("BitsAllocated", 8) or 8) == 8:
        try:
            return pixel_array(ds, index=index, decoding_plugin="pillow")
        except Exception:  # any refusal: fall back to every installed decoder, below
            pass
    return pixel_array(ds, index=index) if index is not None else ds.pixel_array


def _ts_label(ts: object) -> str:
    """A transfer syntax for an error message: its standard name, or its UID when it is a well-formed UID;
    never the raw value otherwise (any text can be written into the element, and messages reach responses)."""
    if ts is None:
        return "unknown"
    if str(ts) in AllTransferSyntaxes:
        return ts.name  # type: ignore[attr-defined]
    return vocab.uid(ts) or "(not a UID)"


def _palette(raw: np.ndarray, ds: Dataset, name: str) -> np.ndarray:
    """Palette -> RGB. pydicom 3.0 reads non-segmented OW LUT data with the machine's byte order, which
    turns big-endian files (OBXXXX1A_expb.dcm) black; hand it byte-swapped copies of the LUTs there."""
    try:
        if ds.original_encoding[1] is False and "RedPaletteColorLookupTableData" in ds:
            lut_ds = Dataset()
            for colour in ("Red", "Green", "Blue"):
                desc = f"{colour}PaletteColorLookupTableDescriptor"
                data = f"{colour}PaletteColorLookupTableData"
                setattr(lut_ds, desc, list(ds[desc].value))
                raw_lut = bytes(ds[data].value)
                bits = int(ds[desc].value[2])
                if bits > 8:
                    raw_lut = np.frombuffer(raw_lut, dtype=">u2").astype("<u2").tobytes()
                lut_ds[data] = pydicom.DataElement(ds[data].tag, "OW", raw_lut)
            return apply_color_lut(raw, lut_ds)
        return apply_color_lut(raw, ds)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise UnreadableImageError(f"{name}: palette colour lookup table is unusable ({type(exc).__name__})") from exc


def _rgb_to_grey(rgb: np.ndarray) -> np.ndarray:
    # ITU-R BT.601 luma, the same weights PIL's convert("L") uses.
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _voi(values: np.ndarray, ds: Dataset, window: Window | None) -> tuple[np.ndarray, Window | None, str]:
    if window is not None:
        return apply_window(values, window, "LINEAR"), window, "override"
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0:
        item = ds.VOILUTSequence[0]
        descriptor = [int(v) for v in item.LUTDescriptor]
        integral = values if not np.array_equal(values, np.round(values)) else values.astype(np.int64)
        out = apply_voi_lut(integral, ds, index=0, prefer_lut=True).astype(np.float64)
        lut_peak = float(2 ** descriptor[2] - 1) if len(descriptor) > 2 and descriptor[2] else float(out.max())
        # Some writers declare 16 bits but fill 12: scale by what the LUT actually holds.
        lut_max = float(np.max(np.asarray(item.LUTData))) if "LUTData" in item else lut_peak
        peak = lut_max if 0 < lut_max < lut_peak else lut_peak
        return np.clip(out / max(peak, 1.0), 0, 1).astype(np.float32), None, "voi_lut"
    centers, widths = _multi(ds.get("WindowCenter")), _multi(ds.get("WindowWidth"))
    if centers and widths and widths[0] > 0:
        win = Window(center=centers[0], width=widths[0])
        fn = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR")
        return apply_window(values, win, fn), win, "header"
    bits = int(ds.get("BitsStored", 16) or 16)
    rescaled = "ModalityLUTSequence" in ds or float(ds.get("RescaleSlope", 1) or 1) != 1 \
        or float(ds.get("RescaleIntercept", 0) or 0) != 0
    if bits <= 8 and not rescaled and int(ds.get("PixelRepresentation", 0) or 0) == 0:
        # 8-bit grey without a window is already display-processed (e.g. SIIM's JPEG CRs): map it like
        # a PNG/JPEG export (/255) so DICOM and raster copies of one image give the model the same input.
        peak = float(2 ** bits - 1)
        win = Window(center=peak / 2.0, width=peak)
        out = values * np.float32(1.0 / peak)  # a new float32 array, clipped in place (3 passes -> 2)
        return np.clip(out, 0.0, 1.0, out=out), win, "full_range"
    win = percentile_window(values)
    return apply_window(values, win, "LINEAR_EXACT"), win, "percentile"


def _multi(value: object) -> list[float]:
    if value is None or value == "":
        return []
    items = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    out = []
    for v in items:
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            continue
    return out


def _age_years(value: object) -> float | None:
    m = re.fullmatch(r"\s*(\d{1,3})\s*([DWMY]?)\s*", str(value or ""))
    if not m:
        return None
    n, unit = float(m.group(1)), (m.group(2) or "Y")
    return round({"D": n / 365.25, "W": n * 7 / 365.25, "M": n / 12.0, "Y": n}[unit], 3)


def _str(ds: Dataset, keyword: str) -> str | None:
    v = ds.get(keyword)
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def extract_meta(ds: Dataset) -> ImageMeta:
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    try:
        pixel_spacing = (float(spacing[0]), float(spacing[1])) if spacing else None
    except (TypeError, ValueError, IndexError):
        pixel_spacing = None
    sex = _str(ds, "PatientSex")
    fm = getattr(ds, "file_meta", None)
    ts = getattr(fm, "TransferSyntaxUID", None) if fm is not None else None
    return ImageMeta(
        source_format="dicom",
        modality=_str(ds, "Modality"),
        body_part=_str(ds, "BodyPartExamined"),
        view_position=_str(ds, "ViewPosition"),
        photometric_interpretation=_str(ds, "PhotometricInterpretation"),
        transfer_syntax_uid=str(ts) if ts else None,
        study_instance_uid=_str(ds, "StudyInstanceUID"),
        series_instance_uid=_str(ds, "SeriesInstanceUID"),
        sop_instance_uid=_str(ds, "SOPInstanceUID"),
        pixel_spacing_mm=pixel_spacing,
        manufacturer=_str(ds, "Manufacturer"),
        patient_age_years=_age_years(ds.get("PatientAge")),
        patient_sex=sex.upper()[:1] if sex and sex.upper()[:1] in "MFO" else None,
        rows=int(ds.get("Rows", 0) or 0),
        columns=int(ds.get("Columns", 0) or 0),
        number_of_frames=int(ds.get("NumberOfFrames", 1) or 1),
        bits_stored=int(ds.BitsStored) if "BitsStored" in ds else None,
        burned_in_annotation=_str(ds, "BurnedInAnnotation"),
        extra={"patient_identity_removed": (_str(ds, "PatientIdentityRemoved") or "").upper() == "YES"},
    )
