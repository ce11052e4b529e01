"""Which PyTorch model may draw heatmaps for a backend's scores.

ONNX graphs have no gradients, so Grad-CAM for an ``.onnx`` backend runs on a ``.pt`` bundle: it must be the
bundle the export was made from, or the heatmaps would explain another model's decisions. Exports record the
source bundle's sha256 (``OnnxBackend.source_sha256``); older files without it get the weaker check of
architecture and class names.
"""

from __future__ import annotations

from torch import nn

from radiolens.errors import ConfigError
from radiolens.models.backends import TorchBackend
from radiolens.models.bundle import ModelBundle


def export_mismatch(backend, bundle: ModelBundle, *, require_source: bool = False) -> str | None:
    """Why ``bundle`` is not the source of ``backend``'s model, or None when it is.

    The one check, worded by each caller (batch scoring names its options, the service its files and the way
    out). ``require_source``: an export that records no source sha256 is refused rather than given the weaker
    check of architecture and class names (the service, whose audit rows name the bundle's sha256).
    """
    exported_from = getattr(backend, "source_sha256", "")
    if exported_from and bundle.sha256 != exported_from:
        return f"its sha256 {bundle.sha256[:12]}... is not the recorded source {exported_from[:12]}..."
    if not exported_from and require_source:
        return "the export records no source sha256"
    # Files exported before the source hash was recorded: the weaker check is all there is.
    if bundle.info.arch != backend.info.arch or bundle.info.class_names != backend.info.class_names:
        return "its architecture or class names differ"
    return None


def check_exported_from(backend, bundle: ModelBundle) -> None:
    """Refuse (``ConfigError``) a ``--cam-model`` bundle that is not the source of ``backend``'s model."""
    reason = export_mismatch(backend, bundle)
    if reason is not None:
        raise ConfigError(f"--cam-model is not the model that --model was exported from ({reason})")


def cam_model_for(backend, cam_bundle: ModelBundle | None = None) -> nn.Module:
    """The PyTorch model that draws heatmaps for ``backend``: ``cam_bundle`` once it is checked to be the
    backend's source (:func:`check_exported_from`), else the backend's own model when it is a PyTorch one.
    An ONNX backend without ``cam_bundle`` is a ``ConfigError``."""
    if cam_bundle is not None:
        check_exported_from(backend, cam_bundle)
        return cam_bundle.model
    if isinstance(backend, TorchBackend):
        return backend.bundle.model
    raise ConfigError("heatmaps need gradients or an export's feature output, and this .onnx --model has none: "
                      "export it again with this version, or also give --cam-model BUNDLE.pt")
