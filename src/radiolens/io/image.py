"""The one image type every later stage consumes, whatever file it came from."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from radiolens.io.vocab import CODERS


@dataclass(frozen=True)
class Window:
    """A VOI window in the stored/rescaled value domain (Hounsfield units for CT, raw values otherwise)."""

    center: float
    width: float

    def __post_init__(self) -> None:
        if not (self.width > 0 and np.isfinite(self.width) and np.isfinite(self.center)):
            from radiolens.errors import InputError

            raise InputError(f"window width must be a positive finite number (got {self.width})")


@dataclass
class ImageMeta:
    """Header facts later stages need. No patient identity is kept here except age and sex (for audits).

    Header values are coded on construction (:mod:`radiolens.io.vocab`): a value outside its closed
    vocabulary reads as ``OTHER``, a malformed UID as ``None``, so no free text typed into a header reaches
    a stored record, a response or a log through this type.
    """

    source_format: str  # "dicom" | "png" | "jpeg" | "tiff"
    modality: str | None = None
    body_part: str | None = None
    view_position: str | None = None
    photometric_interpretation: str | None = None
    transfer_syntax_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    manufacturer: str | None = None
    patient_age_years: float | None = None
    patient_sex: str | None = None  # "M" | "F" | "O" | None
    rows: int = 0
    columns: int = 0
    number_of_frames: int = 1
    bits_stored: int | None = None
    burned_in_annotation: str | None = None
    window_used: Window | None = None
    window_source: str | None = None  # "header" | "voi_lut" | "percentile" | "override" | "full_range"
    extra: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, code in CODERS.items():
            setattr(self, name, code(getattr(self, name)))


@dataclass
class RadioImage:
    """Grey pixels in [0, 1] (float32), display-ready: Modality LUT, VOI and MONOCHROME1 already applied.

    ``pixels`` is (H, W) for one frame, (F, H, W) when all frames of a multi-frame file were asked for.
    """

    pixels: np.ndarray
    meta: ImageMeta

    def __post_init__(self) -> None:
        if self.pixels.dtype != np.float32:
            raise TypeError("RadioImage.pixels must be float32")
        if self.pixels.ndim not in (2, 3):
            raise ValueError("RadioImage.pixels must be (H, W) or (F, H, W)")

    @property
    def height(self) -> int:
        return int(self.pixels.shape[-2])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[-1])

    def first_frame(self) -> np.ndarray:
        return self.pixels if self.pixels.ndim == 2 else self.pixels[0]

    def to_uint8(self) -> np.ndarray:
        return np.clip(np.rint(self.first_frame() * 255.0), 0, 255).astype(np.uint8)
