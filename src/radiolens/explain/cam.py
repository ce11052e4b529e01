"""Class activation maps through the ``grad-cam`` package (pytorch-grad-cam).

The package does the CAM maths; the layer to hook comes from the architecture's record
(:attr:`radiolens.models.architecture.Architecture.cam_layer`). This module knows which target to
back-propagate for binary / multi-label / multi-class heads, and how to always release the hooks (the
package's own context manager silently swallows ``IndexError``, so it is not used here).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from radiolens.errors import InputError
from radiolens.models.cam_layer import cam_target_layer

#: CAM method name (CLI spelling) -> pytorch_grad_cam class name.
METHODS: dict[str, str] = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "scorecam": "ScoreCAM",
    "eigencam": "EigenCAM",
    "layercam": "LayerCAM",
    "xgradcam": "XGradCAM",
    "random": "RandomCAM",  # a baseline for the quality benchmark, not for users
}


def find_target_layer(model: nn.Module, arch: str | None = None) -> nn.Module:
    """The layer whose activations the CAM weighs: ``arch``'s record's CAM layer, else the last conv.

    Defined once in :func:`radiolens.models.cam_layer.cam_target_layer`, so an ONNX export emits the feature
    maps of the very layer Grad-CAM hooks here.
    """
    return cam_target_layer(model, arch)


class _SigmoidTarget:
    """Probability of one sigmoid output (used where a score in [0, 1] reads better, e.g. ROAD)."""

    def __init__(self, index: int, negate: bool = False):
        self.index, self.negate = index, negate

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        z = output[..., self.index]
        return torch.sigmoid(-z if self.negate else z)


class _SoftmaxTarget:
    def __init__(self, index: int):
        self.index = index

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return torch.softmax(output, dim=-1)[..., self.index]


def cam_target(target_index: int, negative: bool = False, probability: bool = False,
               task: str = "binary") -> Callable[[torch.Tensor], torch.Tensor]:
    """The scalar to explain for one output.

    The positive logit (``ClassifierOutputTarget``) is right even when the logit is negative: the gradient
    sign is what matters. To explain the *negative* class of a single-logit head the logit must be negated
    (``BinaryClassifierOutputTarget(0)``), otherwise the map shows evidence *for* the positive class.
    """
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget, ClassifierOutputTarget

    if probability:
        if task == "multiclass":
            return _SoftmaxTarget(target_index)
        return _SigmoidTarget(target_index, negate=negative)
    if negative:
        if target_index != 0:
            raise InputError("the negative class can only be explained for a single-output (binary) head")
        return BinaryClassifierOutputTarget(0)
    return ClassifierOutputTarget(int(target_index))


def _cam_class(method: str):
    import pytorch_grad_cam

    name = METHODS.get(method.lower())
    if name is None:
        choices = ", ".join(m for m in METHODS if m != "random")
        raise InputError(f"unknown CAM method '{method}'; choose one of: {choices}")
    return getattr(pytorch_grad_cam, name)


def compute_cams(model: nn.Module, x: torch.Tensor, targets: Sequence[Callable], method: str = "gradcam",
                 target_layer: nn.Module | None = None, arch: str | None = None) -> np.ndarray:
    """One CAM per target. ``x`` is (1, C, H, W) (repeated per target) or (N, C, H, W) with N == len(targets).

    Returns (len(targets), H, W) float32 in [0, 1]. Hooks are released even on error.
    """
    if x.ndim != 4:
        raise InputError(f"expected a (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    if not targets:
        raise InputError("no CAM target given")
    if x.shape[0] == 1 and len(targets) > 1:
        x = x.expand(len(targets), *x.shape[1:]).contiguous()
    if x.shape[0] != len(targets):
        raise InputError("one target per image is needed")
    cls = _cam_class(method)
    layer = target_layer or find_target_layer(model, arch)
    was_training = model.training
    model.eval()
    cam = cls(model=model, target_layers=[layer])
    if method.lower() == "scorecam":
        cam.batch_size = 32
    try:
        # ScoreCAM draws a tqdm progress bar on stderr; keep CLI/service output clean.
        with contextlib.redirect_stderr(io.StringIO()):
            heat = cam(input_tensor=x, targets=list(targets))
    finally:
        cam.activations_and_grads.release()
        model.train(was_training)
    return np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float32)), 0.0, 1.0)


def compute_cam(model: nn.Module, x: torch.Tensor, target_index: int, method: str = "gradcam",
                target_layer: nn.Module | None = None, *, negative: bool = False,
                arch: str | None = None) -> np.ndarray:
    """(1, 1, H, W) normalised input -> (H, W) heatmap in [0, 1] for output ``target_index``.

    ``negative=True`` explains the negative class of a binary (single-logit) head.
    """
    return compute_cams(model, x, [cam_target(target_index, negative=negative)], method, target_layer, arch)[0]


def upsample_map(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) map -> (H, W) at the original image size (bilinear), kept in [0, 1].

    The model saw the whole image resized (no crop), so a plain resize maps model pixels back exactly.
    """
    t = torch.as_tensor(heat, dtype=torch.float32)[None, None]
    if tuple(t.shape[-2:]) != tuple(size):
        t = torch.nn.functional.interpolate(t, size=tuple(int(s) for s in size), mode="bilinear",
                                            align_corners=False)
    return t[0, 0].clamp_(0.0, 1.0).numpy()
