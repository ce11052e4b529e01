"""Reading radiographs (DICOM, PNG, JPEG, TIFF), windowing and de-identification."""

from radiolens.io.image import ImageMeta, RadioImage, Window
from radiolens.io.reader import read_image

__all__ = ["ImageMeta", "RadioImage", "Window", "read_image"]
