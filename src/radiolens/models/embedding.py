"""The model's own feature embedding (the input of its final classifier layer), for every registry model.

Monitoring needs it twice: the out-of-distribution score of the input gate and the embedding-level drift
test. It is read from the layer that feeds the logits: the architecture record's ``classifier`` when the
architecture is known, else the last linear layer of the logits' width, so no architecture needs its own code.

The tap is a permanent forward pre-hook that stores the captured tensor in thread-local storage: the service
runs forward passes on one shared model from several worker threads, and a hook registered per call would
see the other threads' passes. Deep copies of the model (the per-thread copies Grad-CAM uses) share the tap.
"""

from __future__ import annotations

import threading

import torch
from torch import nn

from radiolens.errors import ModelError
from radiolens.models.registry import available_models, get_architecture


def classifier_layer(model: nn.Module, num_outputs: int, arch: str | None = None) -> nn.Linear:
    """The layer that produces the logits: ``arch``'s record's classifier, else the last ``nn.Linear`` with
    ``num_outputs`` outputs (models outside the registry, or a record that does not fit a modified model)."""
    if arch is not None and arch in available_models():
        try:
            layer = get_architecture(arch).classifier_layer(model)
        except ModelError:
            layer = None
        if layer is not None and layer.out_features == num_outputs:
            return layer
    found = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_outputs]
    if not found:
        raise ModelError(f"no final linear layer with {num_outputs} outputs: cannot read the model's embedding")
    return found[-1]


class EmbeddingTap:
    """``tap(x) -> (logits, embedding)`` in one forward pass; the hook stays on the model until ``close``."""

    def __init__(self, model: nn.Module, num_outputs: int, arch: str | None = None):
        self.model = model
        self.layer = classifier_layer(model, num_outputs, arch)
        self.dim = int(self.layer.in_features)
        self._local = threading.local()
        self._handle = self.layer.register_forward_pre_hook(self._capture)

    def _capture(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if getattr(self._local, "armed", False):
            self._local.value = inputs[0].detach().flatten(1)

    def __deepcopy__(self, memo):  # a copied model keeps feeding this (thread-local) tap
        return self

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, model: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self._local.armed, self._local.value = True, None
        try:
            logits = (model or self.model)(x)
        finally:
            self._local.armed = False
        emb = self._local.value
        self._local.value = None
        if emb is None or emb.shape[-1] != self.dim:
            raise ModelError("the model's forward pass did not go through its classifier layer")
        return logits, emb.float()

    def close(self) -> None:
        self._handle.remove()
