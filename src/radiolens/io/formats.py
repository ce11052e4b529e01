"""The one table of image file formats radiolens reads: magic bytes, suffixes, media types and reader.

Every decision "what is this file?" is made here, from the same rows, whether the bytes come from a folder
walk, a command-line argument or an HTTP upload:

* :func:`sniff` names the format from the first :data:`HEAD_BYTES` bytes (magic first: real data sets hold PNG
  files named ``.jpg``, and PACS exports write DICOM without any suffix).
* :func:`format_of` is the same for a file, with its suffix as the documented fallback where the magic cannot
  decide (a file too short to carry its signature; DICOM without preamble that the heuristic misses).
* :func:`is_candidate` is the test a folder walk applies (sidecars, manifests and radiolens's own outputs
  never count; extension-less files count when their bytes say DICOM or an image).
* :func:`read_image` reads a path or bytes in memory through the format's reader; DICOM from bytes runs the
  very checks DICOM from a path runs (:func:`radiolens.io.dicom.read_dicom_dataset`).

Readers are imported when first used, so :mod:`radiolens.io.dicom` and the pixel stream code can take their
signatures from this module without an import cycle.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from radiolens.errors import InputError, NotDicomError, UnreadableImageError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from radiolens.io.image import RadioImage, Window

Frames = Literal["first", "all"]
#: A file (path) or its bytes in memory (an upload): what :func:`read_image` accepts.
Source = str | os.PathLike | bytes | bytearray | memoryview

#: Bytes :func:`sniff` needs: DICOM's "DICM" ends at byte 132 (after the 128-byte preamble).
HEAD_BYTES = 132
#: The name error messages give bytes in memory: an upload's own file name can be PHI and is never used.
UPLOAD_NAME = "upload"

DICOM_PREAMBLE = 128
DICOM_MAGIC = b"DICM"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: JPEG start-of-image marker; a JPEG file (and a JPEG frame inside DICOM) starts with it, then another marker.
JPEG_SOI = b"\xff\xd8"
JPEG_MAGIC = JPEG_SOI + b"\xff"
TIFF_MAGIC = (b"II*\x00", b"MM\x00*")

# Two-letter value representations an explicit-VR data element carries at bytes 4-5 (PS3.5 6.2).
_VRS = frozenset(b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN "
                 b"UR US UT UV".split())


def _dicom_without_preamble(head: bytes) -> bool:
    """DICOM written without the 128-byte preamble (old ACR-NEMA style, some PACS exports) starts directly with
    an element of the file meta group (0002) or the identifying group (0008): explicit VR (a VR follows the
    tag) or implicit VR little endian (a short length follows). A heuristic: the reader's forced parse then
    requires a plausible image data set (:func:`radiolens.io.dicom.read_dicom_dataset`)."""
    if len(head) < 8:
        return False
    if head[:2] in (b"\x02\x00", b"\x08\x00"):
        return head[4:6] in _VRS or int.from_bytes(head[4:8], "little") < 0x10000
    return head[:2] == b"\x00\x08" and head[4:6] in _VRS  # explicit VR big endian


def _signed(head: bytes, offset: int, magics: tuple[bytes, ...]) -> bool:
    return any(head[offset:offset + len(m)] == m for m in magics)


@dataclass(frozen=True)
class ImageFormat:
    """One row of the table. ``suffixes[0]`` is what radiolens writes; ``media_types`` are accepted as a hint
    for bytes whose magic cannot decide (``application/dicom`` for DICOM without preamble)."""

    name: str  # also ImageMeta.source_format
    suffixes: tuple[str, ...]
    media_types: tuple[str, ...]
    magic: tuple[bytes, ...]
    offset: int = 0
    also: Callable[[bytes], bool] | None = None  # a second signature test (DICOM without preamble)

    def matches(self, head: bytes) -> bool:
        return _signed(head, self.offset, self.magic) or (self.also is not None and self.also(head))

    @property
    def suffix(self) -> str:
        return self.suffixes[0]


DICOM = ImageFormat("dicom", (".dcm", ".dicom", ".dic"), ("application/dicom", "application/dicom+octet-stream"),
                    (DICOM_MAGIC,), DICOM_PREAMBLE, also=_dicom_without_preamble)
PNG = ImageFormat("png", (".png",), ("image/png",), (PNG_MAGIC,))
JPEG = ImageFormat("jpeg", (".jpg", ".jpeg"), ("image/jpeg",), (JPEG_MAGIC,))
TIFF = ImageFormat("tiff", (".tif", ".tiff"), ("image/tiff",), TIFF_MAGIC)

#: The table, in sniffing order (DICOM's preamble may hold anything, so its "DICM" is checked first).
FORMATS: tuple[ImageFormat, ...] = (DICOM, PNG, JPEG, TIFF)
BY_NAME = {f.name: f for f in FORMATS}
RASTER = frozenset({"png", "jpeg", "tiff"})
#: Every suffix radiolens reads (the only such set in the package).
IMAGE_SUFFIXES = frozenset(s for f in FORMATS for s in f.suffixes)
#: Files a folder walk never tries, whatever their bytes: sidecars, manifests, reports, models and radiolens's
#: own partial or temporary outputs.
NEVER_SUFFIXES = frozenset({".csv", ".parquet", ".md", ".txt", ".json", ".yaml", ".yml", ".onnx", ".pt", ".npz",
                            ".npy", ".zip", ".py", ".html", ".log", ".partial", ".part", ".tmp"})


def is_part10(head: bytes | bytearray | memoryview) -> bool:
    """A DICOM Part-10 file: the 128-byte preamble then "DICM" (what DICOMweb's ``application/dicom`` requires;
    :func:`sniff` also recognises DICOM written without the preamble)."""
    return _signed(bytes(head[:HEAD_BYTES]), DICOM_PREAMBLE, (DICOM_MAGIC,))


def sniff(head: bytes | bytearray | memoryview) -> str | None:
    """The format name ("dicom", "png", "jpeg", "tiff") whose magic the first bytes carry, or None."""
    head = bytes(head[:HEAD_BYTES])
    for fmt in FORMATS:
        if fmt.matches(head):
            return fmt.name
    return None


def suffix_format(path: str | os.PathLike) -> str | None:
    """The format a file's suffix names (case-insensitive), or None."""
    suffix = Path(path).suffix.lower()
    return next((f.name for f in FORMATS if suffix in f.suffixes), None)


def media_type_format(content_type: str | None) -> str | None:
    """The format a media type names (parameters such as ``; charset`` ignored), or None."""
    if not content_type:
        return None
    base = content_type.split(";", 1)[0].strip().lower()
    return next((f.name for f in FORMATS if base in f.media_types), None)


def read_head(path: str | os.PathLike) -> bytes:
    """The first :data:`HEAD_BYTES` of a file (empty when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(HEAD_BYTES)
    except OSError:
        return b""


def format_of(path: str | os.PathLike) -> str | None:
    """A file's format: its magic bytes first, its suffix where the magic cannot decide, else None."""
    return sniff(read_head(path)) or suffix_format(path)


def format_of_bytes(data: bytes | bytearray | memoryview, content_type: str | None = None) -> str | None:
    """Bytes' format: magic first, the media type hint where the magic cannot decide, else None."""
    return sniff(data) or media_type_format(content_type)


def is_candidate(path: str | os.PathLike, formats: Iterable[str] | None = None, *,
                 keep_unrecognised: bool = False) -> bool:
    """Whether a folder walk should read this file (as one of ``formats``; all of the table by default).

    Hidden files and :data:`NEVER_SUFFIXES` never count. Otherwise the file's format (:func:`format_of`: magic
    first, then suffix) decides, so extension-less DICOM and UID-named files ("1.2.840....123") count.
    ``keep_unrecognised`` also keeps extension-less files nothing recognises: de-identification and previews
    report such a file as an error rather than silently skipping a DICOM the sniffing cannot recognise.
    """
    path = Path(path)
    if path.name.startswith(".") or path.suffix.lower() in NEVER_SUFFIXES:
        return False
    wanted = set(formats) if formats is not None else set(BY_NAME)
    fmt = format_of(path)
    if fmt is None:
        return keep_unrecognised and path.suffix == ""
    return fmt in wanted


def iter_input_files(src: str | os.PathLike, *, keep: Callable[[Path], bool] | None = None) -> list[Path]:
    """A file, or the regular files under a folder for which ``keep(path)`` holds, in a stable order (hidden
    files never). A path that is neither is an ``InputError``: a batch names what it cannot find."""
    src = Path(src)
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise InputError(f"{src.name}: no such file or folder")
    return sorted(p for p in src.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and (keep is None or keep(p)))


# -- reading -------------------------------------------------------------------------------------------------
def _is_bytes(source: Source) -> bool:
    return isinstance(source, (bytes, bytearray, memoryview))


def open_dicom(source: Source, *, name: str | None = None) -> Dataset:
    """A DICOM file or bytes -> its pydicom data set, after every check reading it runs (deflate-bomb guard,
    size precheck, truncation checks, padding check); typed errors. What callers use when they must work on
    the data set before the image is built (the service de-identifies it first)."""
    from radiolens.io.dicom import open_checked_dataset

    return open_checked_dataset(source, name=name)


def _read_dicom(source: Source, name: str, window: Window | None, frames: Frames) -> RadioImage:
    from radiolens.io.dicom import read_dicom

    return read_dicom(source, name=name, window=window, frames=frames)


def _read_raster(source: Source, name: str, fmt: str | None, window: Window | None) -> RadioImage:
    from radiolens.io.raster import decode_raster

    return decode_raster(source, name=name, fmt=fmt, window=window)


def read_image(source: Source, *, content_type: str | None = None, name: str | None = None,
               window: Window | None = None, frames: Frames = "first") -> RadioImage:
    """Read a DICOM, PNG, JPEG or TIFF radiograph, from a path or from bytes, into a :class:`RadioImage`.

    The format comes from :func:`format_of` (path) or :func:`format_of_bytes` (bytes, with ``content_type``
    as the hint); when nothing decides, a forced DICOM parse is tried (it accepts only a plausible image data
    set). Formats outside the table are refused, never handed to another decoder. Bytes are never written to
    disk. ``name`` is what error messages call the source: the file name for a path, and
    :data:`UPLOAD_NAME` for bytes (an upload's own name can be PHI). Raises a subclass of
    :class:`radiolens.errors.InputError` for anything unusable.
    """
    if _is_bytes(source):
        data = bytes(source)
        label = name or UPLOAD_NAME
        if not data:
            raise UnreadableImageError(f"{label}: empty file")
        fmt = format_of_bytes(data, content_type)
        src: Source = data
    else:
        path = Path(source)
        label = name or path.name
        if not path.exists():
            raise UnreadableImageError(f"{label}: file not found")
        if path.is_dir():
            raise UnreadableImageError(f"{label}: is a directory, not an image file")
        fmt = format_of(path) or media_type_format(content_type)
        src = path
    if fmt == DICOM.name:
        return _read_dicom(src, label, window, frames)
    if fmt in RASTER:
        return _read_raster(src, label, fmt, window)
    try:  # DICOM without preamble or suffix that the heuristic missed (a forced parse decides)
        return _read_dicom(src, label, window, frames)
    except NotDicomError:  # only "not DICOM" is replaced; a truncated DICOM must say so
        raise UnreadableImageError(f"{label}: not a DICOM, PNG, JPEG or TIFF image") from None
