"""The service's predictor: the pipeline's (:mod:`radiolens.pipeline`) on the configured backend.

Three ways to serve a model:

- a ``.pt`` bundle on PyTorch;
- a ``.pt`` bundle with ONNX Runtime running an export of exactly that bundle (its recorded source sha256
  must be the bundle's: the scores and the audit trail must name the same model); MC-dropout and heatmaps
  use the bundle's PyTorch model;
- the ``.onnx`` export alone (:class:`ExportedModel`): everything the service needs of the bundle travels in
  the file's metadata, so it runs without PyTorch (``radiolens[serve]``). Heatmaps come from the export's
  CAM-layer feature maps (a class activation map, equal to Grad-CAM for global-average-pooling + linear
  heads, else EigenCAM; none for files exported without that output). MC-dropout needs dropout layers an
  ONNX graph does not have: the review flag is the bundle's stored rule on the probabilities alone.
  ``GET /v1/models`` says which heatmap and uncertainty methods are in force.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from radiolens.errors import ConfigError
from radiolens.models.backends import OnnxBackend, TorchBackend
from radiolens.models.info import BundleInfo
from radiolens.pipeline import Predictor
from radiolens.serve.config import ServeSettings

if TYPE_CHECKING:
    from radiolens.models.bundle import ModelBundle

log = logging.getLogger("radiolens.serve")


@dataclass
class ExportedModel:
    """An ONNX export served on its own: what the service reads of a bundle, without PyTorch.

    ``sha256`` names the model in audit rows and monitoring: the ``.pt`` bundle it was exported from (as a
    service of that bundle would name it), or the ``.onnx`` file's own hash for an export that records no
    source.
    """

    info: BundleInfo
    sha256: str
    backend: OnnxBackend
    model: Any = None  # no PyTorch model: no Grad-CAM, no MC-dropout (heatmaps from the feature output)


def load_served_model(settings: ServeSettings) -> ModelBundle | ExportedModel:
    """The model ``settings.model_path`` names: a ``.pt`` bundle (PyTorch), or an ``.onnx`` export alone."""
    if settings.onnx_only:
        backend = OnnxBackend(settings.model_path, threads=settings.onnx_threads)
        return ExportedModel(backend.info, backend.source_sha256 or backend.sha256, backend)
    from radiolens.models.bundle import ModelBundle

    return ModelBundle.load(settings.model_path)


def onnx_backend(settings: ServeSettings, bundle: ModelBundle) -> OnnxBackend:
    """ONNX Runtime on an export of exactly this bundle (refused otherwise: scores and audit must agree)."""
    from radiolens.models.provenance import export_mismatch

    backend = OnnxBackend(settings.onnx_path, threads=settings.onnx_threads)
    reason = export_mismatch(backend, bundle, require_source=True)
    if reason is not None:
        raise ConfigError(f"{settings.onnx_path.name} was not exported from {settings.model_path.name} ({reason}): "
                          "export the served bundle again, after `radiolens monitor baseline` if you registered one")
    if not backend.has_embedding:
        log.warning("%s has no embedding output: the input gate and drift monitoring read the embedding with "
                    "PyTorch (one extra forward pass); re-export to avoid it", settings.onnx_path.name)
    return backend


def service_predictor(settings: ServeSettings, bundle: ModelBundle | ExportedModel) -> Predictor:
    """The pipeline predictor the service answers with (the input gate configured by ``settings.monitor``)."""
    if isinstance(bundle, ExportedModel):
        if settings.heatmaps and not bundle.backend.has_features:
            log.warning("serving the ONNX export %s alone: it has no feature output, so no heatmaps (export "
                        "it again with this version)", settings.model_path.name)
        elif settings.heatmaps and settings.cam_method != "gradcam":
            log.warning("serving the ONNX export %s alone: heatmaps are %s from its feature maps, not %s",
                        settings.model_path.name, bundle.backend.cam_head.method, settings.cam_method)
        if settings.mc_dropout_passes > 1:
            log.warning("serving the ONNX export %s alone: MC-dropout is unavailable (it needs the PyTorch "
                        "bundle); the review flag uses the probabilities only", settings.model_path.name)
        return Predictor(bundle.backend, gate_config=settings.monitor.gate,
                         near_threshold_margin=settings.near_threshold_margin, mc_dropout_passes=0,
                         cam_method=settings.cam_method, bundle_sha256=bundle.sha256)
    backend = onnx_backend(settings, bundle) if settings.backend == "onnx" else TorchBackend(bundle)
    return Predictor(backend, torch_model=bundle.model, gate_config=settings.monitor.gate,
                     near_threshold_margin=settings.near_threshold_margin,
                     mc_dropout_passes=settings.mc_dropout_passes, cam_method=settings.cam_method,
                     bundle_sha256=bundle.sha256)
