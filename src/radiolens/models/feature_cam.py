"""Heatmaps from a model's CAM-layer feature maps in plain numpy: what an ONNX export serves without PyTorch.

An export (:func:`radiolens.models.export.export_onnx`) emits the feature maps ``A`` (C, h, w) of the layer
radiolens' Grad-CAM hooks, and records in its metadata how to turn them into a heatmap (:class:`CamHead`):

- ``"cam"`` (class activation map, Zhou et al. 2016) for a head that is global average pooling plus one
  linear layer (dropout / flatten in between), checked numerically on the model at export time. Then
  ``logit_c = sum_k w_ck mean(A_k) + b_c``, so the gradient Grad-CAM averages is ``w_ck / (h*w)`` at every
  position: Grad-CAM's map is ``ReLU(sum_k w_ck A_k) / (h*w)``, and after the min-max normalisation below
  it equals the CAM. A binary head explains its one (positive) logit, as the PyTorch path does.
- ``"eigencam"`` (Muhammad & Yeasin 2020) for any other head: the projection of the feature maps on their
  first principal component. It needs no gradient and no classifier weights, and it does not depend on the
  class (one map per image); it is pytorch-grad-cam's ``EigenCAM`` computed from the same features.

Normalisation and resizing follow pytorch-grad-cam (what :func:`radiolens.explain.cam.compute_cams` returns):
ReLU, min-max to [0, 1] at feature resolution, bilinear resize to the model input size (OpenCV's
``INTER_LINEAR``: half-pixel centres, edge pixels repeated), ReLU and min-max again. OpenCV is not needed:
the resize is written out here, because a ``radiolens[serve]`` installation has neither PyTorch nor OpenCV.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import numpy as np

from radiolens.errors import InputError, ModelError

CAM = "cam"
EIGENCAM = "eigencam"
METHODS = (CAM, EIGENCAM)
#: pytorch-grad-cam's ``scale_cam_image`` divides by ``max + 1e-7``; kept so the maps agree to float rounding.
_EPS = 1e-7


@dataclass(frozen=True)
class CamHead:
    """How an export's feature output becomes a heatmap: the method, the layer the features come from, and
    (method ``"cam"``) the classifier's weight (K, C) and bias (K,) in float32."""

    method: str
    layer: str
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ModelError(f"unknown feature heatmap method '{self.method}' ({', '.join(METHODS)})")
        if self.method == CAM and (self.weight is None or np.asarray(self.weight).ndim != 2):
            raise ModelError("a class activation map needs the classifier weight matrix (outputs, channels)")

    @property
    def class_specific(self) -> bool:
        return self.method == CAM

    def to_json(self) -> str:
        """Weights as base64 of little-endian float32: exact, and a third of the size of decimal text."""
        d: dict = {"method": self.method, "layer": self.layer}
        for key, arr in (("weight", self.weight), ("bias", self.bias)):
            if arr is not None:
                a = np.ascontiguousarray(arr, dtype="<f4")
                d[key] = {"shape": list(a.shape), "float32_b64": base64.b64encode(a.tobytes()).decode("ascii")}
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CamHead:
        try:
            d = json.loads(text)
            arrays = {}
            for key in ("weight", "bias"):
                if key in d:
                    raw = base64.b64decode(d[key]["float32_b64"])
                    arrays[key] = np.frombuffer(raw, dtype="<f4").reshape(d[key]["shape"]).astype(np.float32)
            return cls(str(d["method"]), str(d["layer"]), arrays.get("weight"), arrays.get("bias"))
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"the model's heatmap record is unreadable ({type(exc).__name__})") from exc


def resize_bilinear(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) -> (H, W) bilinear with half-pixel centres and repeated edges (OpenCV ``INTER_LINEAR``)."""
    img = np.asarray(img, dtype=np.float32)
    h, w = img.shape
    out_h, out_w = int(size[0]), int(size[1])
    if (h, w) == (out_h, out_w):
        return img.copy()

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0.0, n_in - 1)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo).astype(np.float32)

    y0, y1, fy = axis(h, out_h)
    x0, x1, fx = axis(w, out_w)
    rows = img[y0] * (1 - fy)[:, None] + img[y1] * fy[:, None]
    return (rows[:, x0] * (1 - fx)[None] + rows[:, x1] * fx[None]).astype(np.float32)


def _minmax(img: np.ndarray) -> np.ndarray:
    img = img - np.min(img)
    return img / (_EPS + np.max(img))


def scale_map(raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Raw (h, w) map -> (H, W) heatmap in [0, 1], normalised and resized as pytorch-grad-cam does."""
    cam = _minmax(np.maximum(np.nan_to_num(np.asarray(raw, dtype=np.float32)), 0.0))
    cam = _minmax(np.maximum(resize_bilinear(cam, size), 0.0))
    return np.clip(cam, 0.0, 1.0).astype(np.float32)


def class_activation_map(features: np.ndarray, weight: np.ndarray, target_index: int,
                         size: tuple[int, int]) -> np.ndarray:
    """CAM of output ``target_index``: ``ReLU(sum_k w_ck A_k)``, normalised and resized (see :func:`scale_map`).

    ``features``: one image's (C, h, w) maps; ``weight``: the classifier's (K, C) matrix.
    """
    a = _check_features(features)
    w = np.asarray(weight, dtype=np.float32)
    if w.ndim != 2 or w.shape[1] != a.shape[0]:
        raise ModelError(f"classifier weight {tuple(w.shape)} does not fit {a.shape[0]} feature channels")
    if not 0 <= int(target_index) < w.shape[0]:
        raise InputError(f"output {target_index} does not exist (the model has {w.shape[0]})")
    raw = np.tensordot(w[int(target_index)].astype(np.float64), a.astype(np.float64), axes=(0, 0))
    return scale_map(raw, size)


def eigen_cam(features: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """EigenCAM: the (C, h, w) maps projected on their first principal component over positions, normalised
    and resized (see :func:`scale_map`). Same arithmetic as pytorch-grad-cam's ``get_2d_projection``."""
    a = _check_features(features).copy()
    a[np.isnan(a)] = 0
    flat = a.reshape(a.shape[0], -1).T
    flat = flat - flat.mean(axis=0)
    _, _, vt = np.linalg.svd(flat, full_matrices=True)
    projection = (flat @ vt[0, :]).reshape(a.shape[1:])
    return scale_map(np.float32(projection), size)


def heatmap_from_features(head: CamHead, features: np.ndarray, target_index: int,
                          size: tuple[int, int]) -> np.ndarray:
    """One image's heatmap at the model input ``size`` from its feature maps, by ``head.method``."""
    if head.method == CAM:
        return class_activation_map(features, head.weight, target_index, size)  # type: ignore[arg-type]
    return eigen_cam(features, size)


def _check_features(features: np.ndarray) -> np.ndarray:
    a = np.asarray(features, dtype=np.float32)
    if a.ndim != 3:
        raise ModelError(f"expected one image's (channels, height, width) feature maps, got shape {a.shape}")
    return a
