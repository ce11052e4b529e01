"""The service's predictor: the pipeline's (:mod:`radiolens.pipeline`) on the configured backend.

PyTorch, or ONNX Runtime on an export of exactly the served bundle (its recorded source sha256 must be the
bundle's: the scores and the audit trail must name the same model). MC-dropout and heatmaps always use the
PyTorch model of the bundle.
"""

from __future__ import annotations

import logging

from radiolens.errors import ConfigError
from radiolens.models.backends import OnnxBackend, TorchBackend
from radiolens.models.bundle import ModelBundle
from radiolens.models.provenance import export_mismatch
from radiolens.pipeline import Predictor
from radiolens.serve.config import ServeSettings

log = logging.getLogger("radiolens.serve")


def onnx_backend(settings: ServeSettings, bundle: ModelBundle) -> OnnxBackend:
    """ONNX Runtime on an export of exactly this bundle (refused otherwise: scores and audit must agree)."""
    backend = OnnxBackend(settings.onnx_path, threads=settings.onnx_threads)
    reason = export_mismatch(backend, bundle, require_source=True)
    if reason is not None:
        raise ConfigError(f"{settings.onnx_path.name} was not exported from {settings.model_path.name} ({reason}): "
                          "export the served bundle again, after `radiolens monitor baseline` if you registered one")
    if not backend.has_embedding:
        log.warning("%s has no embedding output: the input gate and drift monitoring read the embedding with "
                    "PyTorch (one extra forward pass); re-export to avoid it", settings.onnx_path.name)
    return backend


def service_predictor(settings: ServeSettings, bundle: ModelBundle) -> Predictor:
    """The pipeline predictor the service answers with (the input gate configured by ``settings.monitor``)."""
    backend = onnx_backend(settings, bundle) if settings.backend == "onnx" else TorchBackend(bundle)
    return Predictor(backend, torch_model=bundle.model, gate_config=settings.monitor.gate,
                     near_threshold_margin=settings.near_threshold_margin,
                     mc_dropout_passes=settings.mc_dropout_passes, cam_method=settings.cam_method,
                     bundle_sha256=bundle.sha256)
