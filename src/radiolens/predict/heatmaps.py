"""Heatmap files of batch scoring, for positive or review-flagged cases only: Grad-CAM (computed by the
pipeline, ``Predictor.cam``) costs a backward pass per image, so computing it for every negative in an
archive would multiply the run time for pictures nobody looks at.

Files are named by a hash of the item key, never by the input file name (names in DICOM trees often
carry patient identifiers).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from radiolens.models.info import BundleInfo


def heatmap_name(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:20] + ".png"


def write_heatmap(heat: np.ndarray, info: BundleInfo, tensor: np.ndarray, out_dir: Path, key: str) -> str:
    """A CAM (``heat``, (H, W) in [0, 1], from the pipeline) over one preprocessed (1, H, W) image -> PNG
    (model input size) in ``out_dir``; returns the file name."""
    from matplotlib import colormaps
    from PIL import Image

    grey = np.clip(tensor[0] * info.std + info.mean, 0.0, 1.0)
    colour = colormaps["jet"](heat)[..., :3]
    alpha = 0.4 * heat[..., None]
    blend = (1 - alpha) * grey[..., None] + alpha * colour
    out_dir.mkdir(parents=True, exist_ok=True)
    name = heatmap_name(key)
    tmp = out_dir / (name + ".tmp")
    Image.fromarray(np.clip(np.rint(blend * 255), 0, 255).astype(np.uint8)).save(tmp, format="PNG")
    tmp.replace(out_dir / name)
    return name
