"""Explanation quality against ground-truth boxes (pointing game, energy inside the box) and faithfulness.

Pointing game and box energy are a few lines of array maths on the map (no library computes them for a
plain (H, W) map and box list); faithfulness uses the grad-cam package's ROAD metric. ``plant_marker`` makes
known-location data (a marker pasted at a random place on a real radiograph) so the metric code and the CAM
target layer can be checked end to end on a model whose evidence location is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from radiolens.errors import InputError


@dataclass(frozen=True)
class Box:
    label: str
    x: float
    y: float
    w: float
    h: float

    def scaled(self, s: float) -> Box:
        return Box(self.label, self.x * s, self.y * s, self.w * s, self.h * s)


def parse_boxes(text: str, scale: float = 1.0) -> list[Box]:
    """``'Finding:x,y,w,h;Finding:x,y,w,h'`` (NIH bbox_orig_coords / TBX11K bbox_xywh) -> boxes times ``scale``."""
    boxes = []
    for part in str(text).split(";"):
        part = part.strip()
        if not part:
            continue
        label, _, coords = part.rpartition(":")
        try:
            x, y, w, h = (float(v) for v in coords.split(","))
        except ValueError as exc:
            raise InputError(f"bad box '{part}': expected label:x,y,w,h") from exc
        if w <= 0 or h <= 0:
            raise InputError(f"box '{part}' has no area")
        boxes.append(Box(label or "box", x, y, w, h).scaled(scale))
    if not boxes:
        raise InputError("no box given")
    return boxes


def box_mask(boxes: list[Box], shape: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) mask; a box reaching outside the image is an error, not silently clipped."""
    height, width = shape
    mask = np.zeros(shape, dtype=bool)
    tol = 0.5
    for b in boxes:
        if b.x < -tol or b.y < -tol or b.x + b.w > width + tol or b.y + b.h > height + tol:
            raise InputError(f"box {b.label} ({b.x:.1f},{b.y:.1f},{b.w:.1f},{b.h:.1f}) lies outside the "
                             f"{width}x{height} image")
        x0, y0 = int(np.floor(max(b.x, 0))), int(np.floor(max(b.y, 0)))
        x1, y1 = int(np.ceil(min(b.x + b.w, width))), int(np.ceil(min(b.y + b.h, height)))
        mask[y0:y1, x0:x1] = True
    return mask


#: The pointing game's usual tolerance (Zhang et al. 2016: 15 px at 224 px input), as a share of the shorter side.
POINTING_TOLERANCE = 15 / 224


def pointing_hit(heat: np.ndarray, mask: np.ndarray, tolerance: float = 0.0) -> bool:
    """Does the map's maximum fall inside a box, or within ``tolerance`` pixels of one?

    The strict game (tolerance 0) punishes a maximum one pixel outside a small box; the literature's tolerance
    is ``POINTING_TOLERANCE * min(H, W)``. Both are worth reporting: a CAM whose evidence sits on the edge of
    the object hits only with the tolerance.
    """
    if heat.shape != mask.shape:
        raise InputError("heatmap and box mask differ in size")
    i = int(np.argmax(heat))
    if mask.flat[i] or tolerance <= 0 or not mask.any():
        return bool(mask.flat[i])
    y, x = np.unravel_index(i, heat.shape)
    pts = np.argwhere(mask)
    return bool(np.min((pts[:, 0] - y) ** 2 + (pts[:, 1] - x) ** 2) <= tolerance ** 2)


def energy_in_box(heat: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's total mass inside the boxes (the box area fraction is what a flat map scores)."""
    total = float(heat.sum())
    return float(heat[mask].sum() / total) if total > 0 else 0.0


def road_score(model: torch.nn.Module, x: torch.Tensor, cams: np.ndarray, targets: list,
               percentiles: tuple[int, ...] = (20, 40, 60, 80)) -> np.ndarray:
    """ROAD combined (grad-cam package): (LeRF - MoRF) / 2 of the target score; higher = more faithful."""
    from pytorch_grad_cam.metrics.road import ROADCombined

    model.eval()
    return np.asarray(ROADCombined(percentiles=list(percentiles))(x, cams, targets, model), dtype=float).reshape(-1)


MARKER_PATTERNS = ("checker", "stripes")


def plant_marker(pixels: np.ndarray, rng: np.random.Generator, size: int | None = None, pattern: str = "checker",
                 avoid: list[Box] | None = None) -> tuple[np.ndarray, Box]:
    """A copy of ``pixels`` ((H, W) in [0, 1]) with a marker patch at a random place, and its box.

    Why a checkerboard (or horizontal stripes, for a second class): such high-frequency texture occurs nowhere in
    a radiograph, so a model trained on "marker present" can only find its evidence inside the box. That makes
    the box a ground truth a CAM must hit, which radiologists' boxes are not for a weak model. ``size`` defaults
    to 1/8 of the shorter side; ``avoid`` keeps the new patch off earlier ones (two classes on one image).
    """
    img = np.array(pixels, dtype=np.float32, copy=True)
    if img.ndim != 2:
        raise InputError(f"expected an (H, W) image, got shape {img.shape}")
    if pattern not in MARKER_PATTERNS:
        raise InputError(f"unknown marker pattern '{pattern}'; choose one of: {', '.join(MARKER_PATTERNS)}")
    height, width = img.shape
    size = int(size or max(4, min(height, width) // 8))
    if size > min(height, width):
        raise InputError(f"a {size} px marker does not fit a {width}x{height} image")
    cell = max(1, size // 4)
    for _ in range(1000):
        y0 = int(rng.integers(0, height - size + 1))
        x0 = int(rng.integers(0, width - size + 1))
        if not any(x0 < b.x + b.w and b.x < x0 + size and y0 < b.y + b.h and b.y < y0 + size for b in avoid or []):
            break
    else:
        raise InputError("no free place left for another marker")
    yy, xx = np.mgrid[0:size, 0:size]
    patch = ((yy // cell) + (xx // cell)) % 2 if pattern == "checker" else (yy // cell) % 2
    img[y0:y0 + size, x0:x0 + size] = patch.astype(np.float32)
    return img, Box(pattern, float(x0), float(y0), float(size), float(size))


def write_marker_set(source_manifest: str | Path, out_dir: str | Path, patterns: tuple[str, ...] = ("checker",),
                     size: int = 48, per_split: dict[str, int] | None = None, seed: int = 0,
                     rate: float = 0.5) -> Path:
    """Known-location data from real radiographs: each image gets each pattern with probability ``rate``.

    Writes ``size`` px PNGs and ``manifest.csv`` (``path``, ``patient_id``, ``split``, a 0/1 column per pattern
    and a ``<pattern>_box`` column in the same ``label:x,y,w,h`` form as NIH / TBX11K boxes). The source
    manifest's split and patient id are kept, so training sees its usual patient-disjoint splits. Output
    names are running numbers: source file names may carry identifiers.
    """
    import pandas as pd
    from PIL import Image

    from radiolens.data.transforms import resize_unit
    from radiolens.io import read_image

    source_manifest, out_dir = Path(source_manifest), Path(out_dir)
    frame = pd.read_csv(source_manifest, dtype={"patient_id": str, "split": str})
    if "split" not in frame.columns:
        raise InputError(f"{source_manifest.name} has no 'split' column")
    if per_split:
        frame = pd.concat([frame[frame["split"] == s].head(n) for s, n in per_split.items()])
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, r in enumerate(frame.itertuples(index=False)):
        pixels = resize_unit(read_image(source_manifest.parent / r.path).first_frame(), (size, size))[0].numpy()
        row: dict = {"path": f"img{i:05d}.png", "patient_id": r.patient_id, "split": r.split}
        boxes: list[Box] = []
        for pattern in patterns:
            row[pattern], row[f"{pattern}_box"] = 0, ""
            if rng.random() < rate:
                pixels, box = plant_marker(pixels, rng, pattern=pattern, avoid=boxes)
                boxes.append(box)
                row[pattern], row[f"{pattern}_box"] = 1, f"{pattern}:{box.x:g},{box.y:g},{box.w:g},{box.h:g}"
        Image.fromarray(np.round(pixels * 255).astype(np.uint8)).save(out_dir / row["path"])
        rows.append(row)
    path = out_dir / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path
