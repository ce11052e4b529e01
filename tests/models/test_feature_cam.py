"""Heatmaps without PyTorch: the export's CAM-layer feature maps turned into a heatmap in numpy
(``models.feature_cam``) equal pytorch-grad-cam's maps on real chest X-rays.

For heads where Grad-CAM's channel weights are the classifier's (global average pooling + linear) the class
activation map must equal Grad-CAM; for other heads the fallback, EigenCAM, must equal pytorch-grad-cam's
EigenCAM. Both within :data:`HEATMAP_TOLERANCE` per pixel (maps in [0, 1]), the bound docs/explain.md states.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from tests.kermany_models import HEATMAP_TOLERANCE, kermany_and_siim_images

from radiolens.explain.cam import compute_cam
from radiolens.models.backends import OnnxBackend
from radiolens.models.bundle import BundleInfo, ModelBundle
from radiolens.models.export import export_onnx
from radiolens.models.feature_cam import CAM, EIGENCAM, CamHead, heatmap_from_features, resize_bilinear
from radiolens.models.registry import create_model

pytestmark = pytest.mark.realdata

@pytest.fixture(scope="module")
def real_images(data_dir: Path) -> list:
    return kermany_and_siim_images(data_dir)


def _export(arch: str, task: str, classes: list[str], size: int, images: list, tmp_path: Path):
    torch.manual_seed(0)
    info = BundleInfo(arch=arch, task=task, class_names=classes, input_size=(size, size))
    bundle = ModelBundle(info, create_model(arch, len(classes)))
    bundle.model.eval()
    x = torch.stack([bundle.preprocess(im) for im in images])
    report = export_onnx(bundle, tmp_path / f"{arch}.onnx", x.numpy())
    return bundle, x, report, OnnxBackend(tmp_path / f"{arch}.onnx")


@pytest.mark.parametrize("arch, size, task, classes", [
    ("small_cnn", 64, "binary", ["pneumonia"]),
    ("resnet18", 224, "multilabel", ["a", "b", "c"]),
    ("efficientnet_lite0", 128, "binary", ["pneumonia"]),
])
def test_cam_from_onnx_features_equals_grad_cam_on_real_images(arch, size, task, classes, real_images, tmp_path):
    bundle, x, report, backend = _export(arch, task, classes, size, real_images, tmp_path)
    assert report.heatmap_method == CAM and backend.has_features and backend.cam_head.method == CAM
    logits, feats = backend.logits_and_features(x.numpy())
    np.testing.assert_allclose(logits, backend.predict_logits(x.numpy()), rtol=1e-6, atol=1e-6)
    worst, informative = 0.0, 0
    for i in range(len(x)):
        for k in range(len(classes)):  # binary: the one (positive) logit, as the PyTorch path explains
            ours = heatmap_from_features(backend.cam_head, feats[i], k, (size, size))
            ref = compute_cam(bundle.model, x[i:i + 1], k, method="gradcam", arch=arch)
            assert ours.shape == ref.shape == (size, size) and ours.dtype == np.float32
            worst = max(worst, float(np.abs(ours - ref).max()))
            informative += bool(ref.max() > 0.5 and ref.std() > 0.05)  # a map with structure, not all zero
    print(f"[{arch}] max |CAM from ONNX features - Grad-CAM| = {worst:.2e}")
    assert worst < HEATMAP_TOLERANCE, worst
    assert informative >= len(x) * len(classes) // 2


def test_other_heads_fall_back_to_eigencam_equal_to_pytorch_grad_cam(real_images, tmp_path):
    """LeNet-5's head is an MLP after its CAM layer: Grad-CAM's weights are not its classifier's, so the export
    records the gradient-free EigenCAM, computed as pytorch-grad-cam computes it."""
    bundle, x, report, backend = _export("lenet5", "binary", ["pneumonia"], 32, real_images, tmp_path)
    assert report.heatmap_method == EIGENCAM and backend.cam_head.method == EIGENCAM
    assert backend.cam_head.weight is None and not backend.cam_head.class_specific
    _, feats = backend.logits_and_features(x.numpy())
    worst = 0.0
    for i in range(len(x)):
        ours = heatmap_from_features(backend.cam_head, feats[i], 0, (32, 32))
        ref = compute_cam(bundle.model, x[i:i + 1], 0, method="eigencam", arch="lenet5")
        worst = max(worst, float(np.abs(ours - ref).max()))
    print(f"[lenet5] max |EigenCAM from ONNX features - pytorch-grad-cam EigenCAM| = {worst:.2e}")
    assert worst < HEATMAP_TOLERANCE, worst


def test_resize_is_opencvs_bilinear():
    rng = np.random.default_rng(0)
    for (h, w), (out_h, out_w) in (((7, 7), (224, 224)), ((8, 8), (64, 64)), ((5, 7), (37, 61)), ((3, 3), (3, 3))):
        img = rng.random((h, w)).astype(np.float32)
        np.testing.assert_allclose(resize_bilinear(img, (out_h, out_w)), cv2.resize(img, (out_w, out_h)), atol=1e-6)


def test_head_record_round_trips_exactly():
    rng = np.random.default_rng(1)
    head = CamHead(CAM, "layer4", rng.normal(size=(3, 16)).astype(np.float32), rng.normal(size=3).astype(np.float32))
    back = CamHead.from_json(head.to_json())
    assert back.method == CAM and back.layer == "layer4"
    np.testing.assert_array_equal(back.weight, head.weight)
    np.testing.assert_array_equal(back.bias, head.bias)


def test_a_file_without_feature_output_loads_without_heatmaps_and_the_predictor_says_what_is_in_force(
        real_images, tmp_path):
    """Files exported before the feature output existed (here: ``cam_features=False``) still load and score;
    they have no heatmaps. Without PyTorch the review flag is the stored rule minus its spread limit."""
    from radiolens.errors import ModelError
    from radiolens.pipeline import PredictionRecord, Predictor, prepare

    rule = {"thresholds": [0.5], "class_names": ["pneumonia"], "margin": 0.1, "max_spread": 0.05}
    info = BundleInfo(arch="small_cnn", task="binary", class_names=["pneumonia"], input_size=(32, 32), triage=rule)
    torch.manual_seed(0)
    bundle = ModelBundle(info, create_model("small_cnn", 1))
    x = torch.stack([bundle.preprocess(im) for im in real_images]).numpy()
    report = export_onnx(bundle, tmp_path / "old.onnx", x, cam_features=False)
    old = OnnxBackend(tmp_path / "old.onnx")
    assert report.heatmap_method is None and report.embedding_output
    assert not old.has_features and old.cam_head is None and old.has_embedding
    lean = Predictor(old)
    assert lean.heatmap_method is None and lean.uncertainty_method == "none"
    assert "spread limit (0.05) is not applied" in lean.review_basis
    item = prepare(info, real_images[0])
    scored = lean.run([item])[0]
    assert isinstance(scored, PredictionRecord) and scored.raw_probabilities.shape == (1,)
    with pytest.raises(ModelError, match="no feature maps"):
        lean.feature_cam(item, 0)
    export_onnx(bundle, tmp_path / "new.onnx", x)
    new = Predictor(OnnxBackend(tmp_path / "new.onnx"))
    assert new.heatmap_method == CAM
    heat = new.feature_cam(item, 0)
    assert heat.shape == (32, 32) and 0.0 <= heat.min() and heat.max() <= 1.0
    torch_predictor = Predictor(OnnxBackend(tmp_path / "new.onnx"), torch_model=bundle.model, mc_dropout_passes=4)
    assert torch_predictor.heatmap_method == CAM and torch_predictor.uncertainty_method == "mc-dropout"
    gradcam = compute_cam(bundle.model, torch.from_numpy(item.tensor)[None], 0, arch="small_cnn")
    np.testing.assert_allclose(heat, gradcam, atol=HEATMAP_TOLERANCE)
    np.testing.assert_allclose(torch_predictor.cam(item, 0), gradcam, atol=HEATMAP_TOLERANCE)
