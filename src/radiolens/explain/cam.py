"""Class activation maps through the ``grad-cam`` package (pytorch-grad-cam)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from radiolens.errors import ModelError


def find_target_layer(model: nn.Module) -> nn.Module:
    """The last convolutional layer: the deepest spatial map that still has a gradient path to the head."""
    last = None
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            last = module
    if last is None:
        raise ModelError("model has no convolutional layer: class activation maps need one")
    return last


def compute_cam(model: nn.Module, x: torch.Tensor, target_index: int, method: str = "gradcam",
                target_layer: nn.Module | None = None) -> np.ndarray:
    """(1, 1, H, W) normalised input -> (H, W) heatmap in [0, 1] for output ``target_index``.

    For single-logit (binary) heads ``ClassifierOutputTarget(0)`` explains the positive logit, which
    is right even when that logit is negative (the gradient sign is what matters).
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = target_layer or find_target_layer(model)
    model.eval()
    with GradCAM(model=model, target_layers=[layer]) as cam:  # context manager frees the hooks
        heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(target_index))])[0]
    return np.clip(np.nan_to_num(heat.astype(np.float32)), 0.0, 1.0)
