"""The de-identified image at its full bit depth, for a reading viewer.

:class:`~radiolens.io.image.RadioImage` holds display-ready pixels in [0, 1] (VOI already applied): right for a
model, wrong for a reader, who must be able to window a 12- or 16-bit film differently from the default. This
module keeps what the reader needs instead: the stored values of the first frame as unsigned 16-bit integers and
the linear rescale that maps them back to modality values (``value = pixel * slope + intercept``), the photometric
interpretation, and the default VOI window in modality values.

It is built from the *de-identified* dataset only, and the PNG it writes carries pixels alone (no text chunk), so
nothing of the header reaches it. Colour DICOM and raster uploads (PNG/JPEG) have no stored grey values to keep:
their display pixels are kept at the source's depth (8 or 16 bits) in the same 16-bit container.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from radiolens.errors import UnreadableImageError
from radiolens.io.image import RadioImage, Window
from radiolens.io.windowing import percentile_window

U16_MAX = 65535


@dataclass(frozen=True)
class FullDepth:
    pixels: np.ndarray  # (H, W) uint16
    slope: float
    intercept: float
    bits_stored: int
    photometric: str  # "MONOCHROME1" (white is low) | "MONOCHROME2"
    window: Window  # default VOI, in modality values
    modality: str | None = None  # as coded by ImageMeta (CT: values are Hounsfield units, HU presets apply)

    def describe(self) -> dict[str, object]:
        """The metadata a viewer needs beside the PNG (rows, columns, rescale, photometric, default window)."""
        return {"rows": int(self.pixels.shape[0]), "columns": int(self.pixels.shape[1]),
                "bits_stored": self.bits_stored, "photometric": self.photometric, "modality": self.modality,
                "rescale_slope": self.slope, "rescale_intercept": self.intercept,
                "window_center": float(self.window.center), "window_width": float(self.window.width)}

    def png(self) -> bytes:
        """16-bit grey PNG, lossless, no metadata chunks."""
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(self.pixels, dtype=np.uint16)).save(buf, format="PNG")
        return buf.getvalue()


def from_dataset(ds: Dataset, image: RadioImage, name: str) -> FullDepth:
    """Full-depth pixels of a de-identified grey DICOM (first frame); colour files fall back to the display
    pixels (:func:`from_display`). ``image`` is what :func:`radiolens.io.dicom.dicom_to_image` built from the same
    dataset: its window is the default offered to the reader."""
    from radiolens.io.dicom import _decode  # the io layer's checked decoder (typed errors, first frame only)

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return from_display(image)
    raw = _decode(ds, name, "first")
    if raw.ndim == 3:
        raw = raw[0]
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    if "ModalityLUTSequence" in ds:  # a LUT, not a line: store its output and describe it as the identity
        raw, slope, intercept = np.rint(apply_modality_lut(raw, ds)), 1.0, 0.0
    raw = np.asarray(raw)
    lo, hi = int(raw.min()), int(raw.max())
    shift = -lo if lo < 0 else 0  # signed stored values: shift into uint16, folded into the intercept
    if hi + shift > U16_MAX:
        raise UnreadableImageError(f"{name}: stored pixel values span more than 16 bits")
    pixels = (raw.astype(np.int64) + shift).astype(np.uint16)
    values_window = image.meta.window_used
    if values_window is None:  # a VOI LUT sequence was applied: offer a robust window on the values instead
        values_window = percentile_window(pixels.astype(np.float32) * slope + (intercept - slope * shift))
    bits = int(ds.get("BitsStored", 16) or 16)
    return FullDepth(pixels=pixels, slope=slope, intercept=intercept - slope * shift, bits_stored=bits,
                     photometric=photometric, window=values_window, modality=image.meta.modality)


def from_display(image: RadioImage) -> FullDepth:
    """Raster or colour sources: the display pixels at the source's depth (0-255 or 0-65535), full-range window."""
    bits = image.meta.bits_stored if image.meta.bits_stored in (8, 16) else 8
    peak = float(2 ** bits - 1)
    grey = np.clip(image.first_frame(), 0.0, 1.0)
    pixels = np.rint(grey.astype(np.float64) * peak).astype(np.uint16)
    return FullDepth(pixels=pixels, slope=1.0, intercept=0.0, bits_stored=bits, photometric="MONOCHROME2",
                     window=Window(center=peak / 2.0, width=peak), modality=image.meta.modality)
