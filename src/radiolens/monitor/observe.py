"""What monitoring records about one image: intensity statistics, header categories, probabilities and the
projected model embedding. The same function serves the validation baseline and every production input,
so the two are comparable by construction.

Only categorical acquisition facts are kept from the header (modality, view, manufacturer, body part,
photometric interpretation, file format): nothing that identifies a patient.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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


def _category(value: object) -> str:
    text = str(value).strip().upper() if value is not None else ""
    return text[:64] if text else _NONE


def header_fields(meta: ImageMeta) -> dict[str, str]:
    return {
        "source_format": _category(meta.source_format), "modality": _category(meta.modality),
        "view_position": _category(meta.view_position), "manufacturer": _category(meta.manufacturer),
        "body_part": _category(meta.body_part), "photometric": _category(meta.photometric_interpretation),
    }


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
