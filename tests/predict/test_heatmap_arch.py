"""Heatmaps use the registry's target layer for the bundle's architecture: without it vgg16 (a 1x1 head conv)
and resnet18 (the last conv before its residual add) give flat, all-zero maps on a real radiograph."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from radiolens.io.formats import read_image
from radiolens.models.backends import load_backend
from radiolens.models.bundle import BundleInfo, ModelBundle
from radiolens.models.registry import create_model
from radiolens.pipeline import Predictor, prepare
from radiolens.predict import PredictConfig, Scorer, discover

SIZE = 128  # 4x4 cells in vgg16's last block: enough spatial detail, seconds of CPU


@pytest.fixture(scope="module", params=["vgg16", "resnet18"])
def arch_bundle(request, tmp_path_factory) -> ModelBundle:
    torch.manual_seed(0)
    info = BundleInfo(arch=request.param, task="binary", class_names=["pneumonia"], input_size=(SIZE, SIZE))
    path = tmp_path_factory.mktemp(request.param) / "m.pt"
    ModelBundle(info, create_model(request.param, 1).eval()).save(path)
    return ModelBundle.load(path)


@pytest.fixture(scope="module")
def real_image(data_dir):
    return discover(data_dir / "kermany_pediatric_pneumonia" / "manifest.csv", split="val")[:1]


def test_predict_heatmap_is_not_flat_and_has_the_model_input_shape(arch_bundle, real_image, tmp_path):
    backend = load_backend(arch_bundle)
    heat = Predictor(backend).cam(prepare(arch_bundle.info, read_image(real_image[0].path)), 0)
    assert heat.shape == (SIZE, SIZE) and float(heat.std()) > 0.01

    # end to end: flag everything (margin 1) and check the written overlay carries a non-flat map
    cfg = PredictConfig(batch_size=1, workers=0, progress=False, near_threshold_margin=1.0)
    summary = Scorer(backend, cfg, cam_model=arch_bundle.model, heatmap_dir=tmp_path / "heat").run(
        real_image, tmp_path / "r.csv")
    assert summary.heatmaps == 1
    png = np.asarray(Image.open(next((tmp_path / "heat").glob("*.png"))).convert("RGB")).astype(float)
    assert png.shape == (SIZE, SIZE, 3)
    # a zero map leaves the grey image (R == B everywhere); the jet overlay makes R - B vary with the map
    assert float((png[..., 0] - png[..., 2]).std()) > 1.0


def test_serve_heatmap_is_not_flat_and_has_the_model_input_shape(arch_bundle, real_image):
    record = Predictor(load_backend(arch_bundle), gate=False).predict(
        prepare(arch_bundle.info, read_image(real_image[0].path)), heatmap=True)
    assert record.heatmap is not None and record.heatmap.array.shape == (SIZE, SIZE)
    assert float(record.heatmap.array.std()) > 0.01 and record.heatmap.target == "pneumonia"
