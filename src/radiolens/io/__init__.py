"""Reading radiographs (DICOM, PNG, JPEG, TIFF), windowing and de-identification."""

from radiolens.io.formats import read_image
from radiolens.io.image import ImageMeta, RadioImage, Window

__all__ = ["ImageMeta", "RadioImage", "Window", "read_image"]
