"""What monitoring records about one image: intensity statistics, header categories, probabilities and the
projected model embedding. The same function serves the validation baseline and every production input,
so the two are comparable by construction.

Only categorical acquisition facts are kept from the header (modality, view, manufacturer, body part,
photometric interpretation, file format), each as a code of its closed vocabulary (:mod:`radiolens.io.vocab`;
anything else is ``OTHER``): free text typed into a header never reaches a monitoring record.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from radiolens.io import vocab
from radiolens.io.image import ImageMeta, RadioImage

#: Per-image scalar statistics compared by the Kolmogorov-Smirnov test.
IMAGE_STATS = ("mean", "std", "p05", "p50", "p95", "dark_fraction", "bright_fraction", "entropy",
               "rows", "columns", "aspect", "pixel_spacing_mm")
#: Header fields compared as categorical distributions (PSI).
HEADER_FIELDS = ("source_format", "modality", "view_position", "manufacturer", "body_part", "photometric")
#: Bins of the pooled intensity histogram (compared by PSI).
HIST_BINS = 32
_NONE = "(none)"


def image_statistics(image: RadioImage) -> dict[str, float | None]:
    px = image.first_frame()
    flat = px.ravel()
    if flat.size > 65536:  # statistics of a regular subsample: same numbers to ~1e-3, 10-50x cheaper
        flat = flat[:: int(np.ceil(flat.size / 65536))]
    p05, p50, p95 = (float(v) for v in np.percentile(flat, [5, 50, 95]))
    hist = np.histogram(flat, bins=HIST_BINS, range=(0.0, 1.0))[0].astype(np.float64)
    prob = hist / max(hist.sum(), 1.0)
    nz = prob[prob > 0]
    meta = image.meta
    spacing = meta.pixel_spacing_mm
    return {
        "mean": float(flat.mean()), "std": float(flat.std()), "p05": p05, "p50": p50, "p95": p95,
        "dark_fraction": float((flat < 0.05).mean()), "bright_fraction": float((flat > 0.95).mean()),
        "entropy": float(-(nz * np.log2(nz)).sum()),
        "rows": float(image.height), "columns": float(image.width),
        "aspect": float(image.width / max(image.height, 1)),
        "pixel_spacing_mm": float(np.mean(spacing)) if spacing else None,
    }


def intensity_histogram(image: RadioImage) -> list[float]:
    """Normalised histogram of the display pixels (sums to 1)."""
    flat = image.first_frame().ravel()
    hist = np.histogram(flat, bins=HIST_BINS, range=(0.0, 1.0))[0].astype(np.float64)
    return (hist / max(hist.sum(), 1.0)).round(6).tolist()


_SOURCE_FORMATS = frozenset({"DICOM", "PNG", "JPEG", "TIFF"})


def _category(value: str | None) -> str:
    return value if value else _NONE


_HEADER_CODERS = {"source_format": lambda v: vocab.coded(v, _SOURCE_FORMATS), "modality": vocab.modality,
                  "view_position": vocab.view_position, "manufacturer": vocab.manufacturer,
                  "body_part": vocab.body_part, "photometric": vocab.photometric}


def header_code(field_name: str, value: object) -> str:
    """A stored header category as its code: records and baselines written before header values were coded
    may hold free text, which must not be compared, shown or alerted on as it is."""
    if value is None or value == _NONE:
        return _NONE
    return _category(_HEADER_CODERS[field_name](value))


def header_fields(meta: ImageMeta) -> dict[str, str]:
    # Coded again here (ImageMeta codes on construction, but its fields can be reassigned afterwards).
    values = {"source_format": meta.source_format, "modality": meta.modality, "view_position": meta.view_position,
              "manufacturer": meta.manufacturer, "body_part": meta.body_part,
              "photometric": meta.photometric_interpretation}
    return {name: header_code(name, value) for name, value in values.items()}


def observation(image: RadioImage, probabilities: np.ndarray, projection: np.ndarray | None,
                ood_score: float | None, status: str) -> dict[str, Any]:
    """The JSON-able record of one image (stored per prediction, and per validation image in the baseline)."""
    return {
        "status": status,
        "ood_score": None if ood_score is None else round(float(ood_score), 4),
        "probabilities": [round(float(p), 6) for p in np.asarray(probabilities, dtype=float).ravel()],
        "stats": {k: (None if v is None else round(v, 6)) for k, v in image_statistics(image).items()},
        "histogram": intensity_histogram(image),
        "header": header_fields(image.meta),
        "embedding": None if projection is None else [round(float(v), 5) for v in np.ravel(projection)],
    }
