"""The CAM target layer of a model, and what its head does with that layer's feature maps.

One definition for both heatmap paths: Grad-CAM on PyTorch (:mod:`radiolens.explain.cam`) hooks this layer,
and the ONNX export emits its output so a service without PyTorch computes the heatmap from it
(:mod:`radiolens.models.feature_cam`). Which torch-free method applies is read from the model itself, not
from a list of architecture names: :func:`feature_heatmap_head` checks on real images that Grad-CAM's channel
weights are the classifier's weights (up to one factor), which is exactly when a class activation map from
the feature maps equals Grad-CAM (global average pooling + linear heads).
"""

from __future__ import annotations

import torch
from torch import nn

from radiolens.errors import ModelError
from radiolens.models.embedding import classifier_layer
from radiolens.models.feature_cam import CAM, EIGENCAM, CamHead
from radiolens.models.registry import available_models, get_architecture


def cam_target_layer(model: nn.Module, arch: str | None = None) -> nn.Module:
    """The layer whose activations a CAM weighs: ``arch``'s record's CAM layer, else the last conv.

    Falls back to the last ``Conv2d`` for models outside the registry (or when the named module is missing,
    e.g. a modified architecture), which is the textbook choice.
    """
    if arch is not None and arch in available_models():
        try:
            return get_architecture(arch).cam_target_layer(model)
        except ModelError:
            pass
    last = None
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            last = module
    if last is None:
        raise ModelError("model has no convolutional layer: class activation maps need one")
    return last


def layer_name(model: nn.Module, layer: nn.Module) -> str:
    """The dotted ``named_modules`` name of ``layer`` in ``model``."""
    for name, module in model.named_modules():
        if module is layer:
            return name
    raise ModelError("the CAM layer is not a module of this model")


def gradcam_weights_are_classifier_weights(model: nn.Module, layer: nn.Module, head: nn.Linear,
                                            probe: torch.Tensor, rtol: float = 1e-3) -> bool:
    """Whether, on the ``probe`` batch, Grad-CAM's channel weights for every output are the classifier's.

    Grad-CAM weighs channel k of ``layer``'s output A for output c by the spatial mean of dy_c/dA_k. When that
    gradient sums over space to ``w_ck`` for every image, c and k, the weights are ``w_ck / (h*w)`` and the
    Grad-CAM map is the class activation map ``ReLU(sum_k w_ck A_k)`` up to a positive factor, which the
    min-max normalisation removes. That holds for global average pooling + linear (dropout and flatten are
    identities in eval mode), and also with a non-overlapping max pooling before the average (each window
    passes its gradient to exactly one position, so the sum is kept); it fails for MLP heads and for anything
    non-linear between the layer and the classifier, which then get the gradient-free fallback.
    """
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            x = probe.detach().clone().float().requires_grad_(True)
            logits = model(x)
            if len(captured) != 1 or not isinstance(captured[0], torch.Tensor) or captured[0].ndim != 4:
                return False
            a = captured[0]
            if logits.ndim != 2 or logits.shape[1] != head.out_features or a.shape[1] != head.in_features:
                return False
            w = head.weight.detach().float()
            for c in range(logits.shape[1]):
                (grad,) = torch.autograd.grad(logits[:, c].sum(), a, retain_graph=True)
                summed = grad.float().sum(dim=(2, 3))  # (N, C): must be w_c for every image
                tol = rtol * (float(w[c].abs().max()) + 1e-12)
                if not torch.allclose(summed, w[c].expand_as(summed), rtol=rtol, atol=tol):
                    return False
    except RuntimeError:  # e.g. an in-place op after the layer: Grad-CAM could not run on it either
        return False
    finally:
        handle.remove()
        model.train(was_training)
    return True


def feature_heatmap_head(model: nn.Module, num_outputs: int, arch: str | None, probe: torch.Tensor) -> CamHead:
    """The torch-free heatmap of this model: ``"cam"`` with the classifier's weights when that equals Grad-CAM
    (:func:`gradcam_weights_are_classifier_weights` on ``probe``, a few real preprocessed images), else
    ``"eigencam"``."""
    layer = cam_target_layer(model, arch)
    name = layer_name(model, layer)
    try:
        head = classifier_layer(model, num_outputs, arch)
    except ModelError:
        return CamHead(EIGENCAM, name)
    if not gradcam_weights_are_classifier_weights(model, layer, head, probe):
        return CamHead(EIGENCAM, name)
    weight = head.weight.detach().float().cpu().numpy()
    bias = None if head.bias is None else head.bias.detach().float().cpu().numpy()
    return CamHead(CAM, name, weight, bias)


class FeatureTap:
    """The CAM layer's output, captured during forward passes this thread runs inside :meth:`capture`.

    A forward hook that stays on the model and records only when armed on the calling thread, so one model can
    serve several threads (and a ``copy.deepcopy`` of it, e.g. a per-thread Grad-CAM copy, keeps a disarmed
    hook). This is what lets the PyTorch backend draw a class activation map from the very forward pass that
    gives the probabilities, as an ONNX export does with its ``cam_features`` output.
    """

    def __init__(self, layer: nn.Module):
        import threading

        self._local = threading.local()
        self._handle = layer.register_forward_hook(self._hook)

    def _hook(self, _module: nn.Module, _inputs: tuple, out: torch.Tensor) -> None:
        slot = getattr(self._local, "slot", None)
        if slot is not None and isinstance(out, torch.Tensor):
            slot.append(out.detach())

    def __deepcopy__(self, memo):  # a copied model keeps a hook that feeds this (thread-local) tap
        return self

    def run(self, forward, x: torch.Tensor):
        """``(forward(x), features)``: whatever ``forward`` returns, and the (N, C, h, w) CAM-layer output it
        produced (exactly one call of the layer is required)."""
        self._local.slot = []
        try:
            out = forward(x)
            got = self._local.slot
        finally:
            self._local.slot = None
        if len(got) != 1 or got[0].ndim != 4:
            raise ModelError("the CAM layer did not run exactly once in the forward pass")
        return out, got[0].float()

    def close(self) -> None:
        self._handle.remove()
