"""``models.provenance.cam_model_for``: which PyTorch model may draw heatmaps for a backend's scores, checked
on a real export (the ONNX file records its source bundle's sha256)."""

from __future__ import annotations

import pytest
import torch

from radiolens.errors import ConfigError
from radiolens.models.backends import load_backend
from radiolens.models.bundle import ModelBundle
from radiolens.models.export import export_onnx
from radiolens.models.provenance import cam_model_for
from radiolens.models.registry import create_model
from radiolens.predict.sources import discover, load_preprocessed


def test_cam_model_is_the_exports_source_and_nothing_else(real_tree, fitted_pt, tmp_path):
    bundle = ModelBundle.load(fitted_pt)
    batch, _ = load_preprocessed(discover(real_tree), bundle.info, limit=4)
    onnx_path = tmp_path / "m.onnx"
    export_onnx(bundle, onnx_path, batch)
    onnx = load_backend(onnx_path)
    assert cam_model_for(onnx, bundle) is bundle.model
    torch_backend = load_backend(fitted_pt)
    assert cam_model_for(torch_backend) is torch_backend.bundle.model  # a .pt backend explains itself
    with pytest.raises(ConfigError, match="heatmaps need gradients"):
        cam_model_for(onnx)
    torch.manual_seed(1)  # same architecture and classes, other weights: only the recorded hash differs
    other_path = tmp_path / "other.pt"
    ModelBundle(bundle.info, create_model(bundle.info.arch, 1).eval()).save(other_path)
    with pytest.raises(ConfigError, match="not the model that --model was exported from"):
        cam_model_for(onnx, ModelBundle.load(other_path))
