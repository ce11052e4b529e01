"""Explain one image with a bundle: per-class CAMs upsampled to the original image size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radiolens.errors import InputError
from radiolens.explain.cam import cam_target, compute_cams, upsample_map
from radiolens.models.bundle import ModelBundle


@dataclass
class Explanation:
    class_name: str
    probability: float
    heatmap: np.ndarray  # (H, W) at the ORIGINAL image size, [0, 1]
    method: str
    output_index: int = 0  # the model output the map explains
    negative: bool = False  # binary only: the negative class, through the negated logit of output 0


def explain_pixels(bundle: ModelBundle, pixels: np.ndarray, method: str = "gradcam",
                   classes: list[str] | None = None) -> list[Explanation]:
    """``pixels``: (H, W) windowed [0, 1]. ``classes``: names to explain (default: binary -> the positive class,
    multi-label -> every class, multi-class -> the predicted class). For a binary model the negative name
    (e.g. "normal") explains the negative class through a negated logit."""
    info = bundle.info
    x = bundle.preprocess(pixels)[None]
    probs = bundle.predict_batch(x)[0]
    if classes is None:
        if info.task == "multiclass":
            classes = [info.class_names[int(np.argmax(probs))]]
        else:
            classes = list(info.class_names)
    targets, names, ps, where = [], [], [], []
    for name in classes:
        if info.task == "binary" and name == info.negative_name:
            targets.append(cam_target(0, negative=True))
            names.append(name)
            ps.append(1.0 - float(probs[0]))
            where.append((0, True))
        elif name in info.class_names:
            k = info.class_names.index(name)
            targets.append(cam_target(k))
            names.append(name)
            ps.append(float(probs[k]))
            where.append((k, False))
        else:
            valid = info.class_names + ([info.negative_name] if info.task == "binary" else [])
            raise InputError(f"unknown class '{name}'; this model has: {', '.join(valid)}")
    maps = compute_cams(bundle.model, x, targets, method, arch=info.arch)
    size = pixels.shape[-2:]
    return [Explanation(n, p, upsample_map(m, size), method, k, neg)
            for n, p, m, (k, neg) in zip(names, ps, maps, where, strict=True)]
