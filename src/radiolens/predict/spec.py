"""What a :class:`~radiolens.predict.scoring.Scorer` is built from, as paths and options rather than loaded
objects: the local engine builds its scorer from it once, and every Ray actor of ``predict.ray_engine`` builds
the same scorer from the same spec on its own node (a loaded model is not shipped over the network, the spec
is a few hundred bytes)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from radiolens.models.backends import BackendKind, load_backend
from radiolens.predict.config import PredictConfig
from radiolens.predict.scoring import Scorer


@dataclass(frozen=True)
class ScorerSpec:
    model: Path  #: ModelBundle .pt or exported .onnx
    config: PredictConfig = field(default_factory=PredictConfig)
    backend: BackendKind | None = None  #: None: by file suffix
    threads: int | None = None  #: inference threads (None: the backend's default)
    cam_model: Path | None = None  #: the .pt an .onnx model was exported from (Grad-CAM, MC-dropout)
    heatmap_dir: Path | None = None  #: write heatmap PNGs of positive or flagged cases here
    gate: bool = True
    device: str = "cpu"  #: "cuda" on a GPU actor

    def with_(self, **changes: Any) -> ScorerSpec:
        return replace(self, **changes)

    def build(self) -> Scorer:
        """Load the backend (and, when heatmaps or MC-dropout need it, the PyTorch model) -> a ready Scorer."""
        be = load_backend(self.model, kind=self.backend, threads=self.threads, device=self.device)
        cam = None
        # an .onnx export with feature output draws its heatmaps without PyTorch (models.feature_cam)
        onnx_heatmaps = self.cam_model is None and bool(getattr(be, "has_features", False))
        torch_heatmaps = self.heatmap_dir is not None and not onnx_heatmaps
        if torch_heatmaps or (self.config.mc_dropout_passes > 1 and self.cam_model is not None):
            from radiolens.errors import require_torch

            require_torch("heatmaps and MC-dropout (--heatmaps-for-flagged, --cam-model, --mc-dropout-passes)")
            from radiolens.models.bundle import ModelBundle
            from radiolens.models.provenance import cam_model_for

            cam = cam_model_for(be, ModelBundle.load(self.cam_model) if self.cam_model is not None else None)
        return Scorer(be, self.config, cam_model=cam, heatmap_dir=self.heatmap_dir, gate=self.gate)
