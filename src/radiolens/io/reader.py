"""One entry point: any supported radiograph file -> :class:`RadioImage`."""

from __future__ import annotations

from pathlib import Path

from radiolens.errors import NotDicomError, UnreadableImageError
from radiolens.io.dicom import Frames, read_dicom
from radiolens.io.image import RadioImage, Window
from radiolens.io.raster import RASTER_SUFFIXES, read_raster

_DICOM_MAGIC_OFFSET = 128


def looks_like_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom", ".dic"):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(_DICOM_MAGIC_OFFSET + 4)
    except OSError:
        return False
    return head[_DICOM_MAGIC_OFFSET:_DICOM_MAGIC_OFFSET + 4] == b"DICM"


def read_image(path: str | Path, *, window: Window | None = None, frames: Frames = "first") -> RadioImage:
    """Read a DICOM, PNG, JPEG or TIFF radiograph into grey float32 pixels in [0, 1] plus metadata.

    Raises a subclass of :class:`radiolens.errors.InputError` for anything unusable.
    """
    path = Path(path)
    if not path.exists():
        raise UnreadableImageError(f"{path.name}: file not found")
    if path.is_dir():
        raise UnreadableImageError(f"{path.name}: is a directory, not an image file")
    if looks_like_dicom(path):
        return read_dicom(path, window=window, frames=frames)
    if path.suffix.lower() in RASTER_SUFFIXES:
        return read_raster(path, window=window)
    # Unknown suffix: DICOM without preamble or extension is common in PACS exports; try it, then PIL.
    try:
        return read_dicom(path, window=window, frames=frames)
    except NotDicomError:  # only "not DICOM" falls through; a truncated DICOM must say so, not "bad PNG"
        return read_raster(path, window=window)
