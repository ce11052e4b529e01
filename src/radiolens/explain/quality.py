"""Explanation quality against ground-truth boxes (pointing game, energy inside the box) and faithfulness.

Pointing game and box energy are a few lines of array maths on the map (no library computes them for a
plain (H, W) map and box list); faithfulness uses the grad-cam package's ROAD metric.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def pointing_hit(heat: np.ndarray, mask: np.ndarray) -> bool:
    """Does the map's maximum fall inside a box?"""
    if heat.shape != mask.shape:
        raise InputError("heatmap and box mask differ in size")
    return bool(mask.flat[int(np.argmax(heat))])


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
