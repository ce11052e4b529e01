"""The pipeline's batched entry point (``Predictor.predict_batch``, what the service's micro-batching runs)
gives every image the record it gets alone, on real chest X-rays (Kermany JPEGs, the SIIM DICOM); heatmaps
come from the forward pass's feature maps where that equals Grad-CAM, and one bad input fails alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tests.kermany_models import HEATMAP_TOLERANCE, kermany_and_siim_images

from radiolens.explain.cam import compute_cam
from radiolens.models.backends import TorchBackend
from radiolens.models.bundle import BundleInfo, ModelBundle
from radiolens.models.registry import create_model
from radiolens.pipeline import InferenceFailedError, PredictionRecord, Predictor, Prepared, prepare

pytestmark = pytest.mark.realdata

@pytest.fixture(scope="module")
def real_images(data_dir: Path) -> list:
    return kermany_and_siim_images(data_dir)


def _predictor(arch: str, size: int, task: str = "binary", classes=("pneumonia",), **kw) -> Predictor:
    torch.manual_seed(0)
    info = BundleInfo(arch=arch, task=task, class_names=list(classes), input_size=(size, size))
    return Predictor(TorchBackend(ModelBundle(info, create_model(arch, len(classes)))), mc_dropout_passes=0, **kw)


@pytest.mark.parametrize("arch, size, task, classes, method", [
    ("small_cnn", 64, "binary", ["pneumonia"], "cam"),  # pooling + linear head: CAM from the forward pass
    ("resnet18", 96, "multilabel", ["a", "b", "c"], "cam"),
    ("lenet5", 32, "binary", ["pneumonia"], "gradcam"),  # MLP head: pytorch-grad-cam's Grad-CAM, per image
])
def test_batched_records_equal_one_by_one(arch, size, task, classes, method, real_images):
    predictor = _predictor(arch, size, task, classes)
    assert predictor.heatmap_method == method
    items = [prepare(predictor.info, im) for im in real_images]
    alone = [predictor.predict(it, heatmap=True) for it in items]
    batched = predictor.predict_batch(items, [True] * len(items))
    assert len(batched) == len(items)
    for a, b, it in zip(alone, batched, items, strict=True):
        assert isinstance(b, PredictionRecord)
        np.testing.assert_allclose(b.raw_probabilities, a.raw_probabilities, atol=1e-6)
        assert (b.status, b.label, b.positive_classes, b.review.flag) == (a.status, a.label, a.positive_classes,
                                                                          a.review.flag)
        assert (a.heatmap is None) == (b.heatmap is None) == (not a.assessed)
        if a.heatmap is not None:
            assert b.heatmap.target == a.heatmap.target
            np.testing.assert_allclose(b.heatmap.array, a.heatmap.array, atol=HEATMAP_TOLERANCE)
            # whichever way it was computed, the map is pytorch-grad-cam's Grad-CAM of the record's target
            ref = compute_cam(predictor.torch_model, torch.from_numpy(it.tensor)[None], a.target_index,
                              method="gradcam", arch=arch)
            np.testing.assert_allclose(b.heatmap.array, ref, atol=HEATMAP_TOLERANCE)


def test_heatmap_flags_are_per_image_and_configured_methods_are_kept(real_images):
    predictor = _predictor("small_cnn", 64)
    items = [prepare(predictor.info, im) for im in real_images[:4]]
    out = predictor.predict_batch(items, [True, False, True, False])
    assert [r.heatmap is not None for r in out] == [True, False, True, False]
    # a method other than Grad-CAM is not what the feature maps give: pytorch-grad-cam draws it
    plus = _predictor("small_cnn", 64, cam_method="gradcam++")
    assert plus.feature_head is None and plus.heatmap_method == "gradcam++"
    got = plus.predict_batch(items[:2], True)
    for rec, it in zip(got, items[:2], strict=True):
        ref = compute_cam(plus.torch_model, torch.from_numpy(it.tensor)[None], 0, method="gradcam++",
                          arch="small_cnn")
        np.testing.assert_allclose(rec.heatmap.array, ref, atol=HEATMAP_TOLERANCE)


def test_one_bad_input_fails_alone(real_images):
    predictor = _predictor("small_cnn", 64)
    items = [prepare(predictor.info, im) for im in real_images[:3]]
    bad = Prepared(np.zeros((1, 16, 16), np.float32), items[0].meta, 16, 16)  # not the model's input size
    out = predictor.predict_batch([items[0], bad, items[1], items[2]], True)
    assert isinstance(out[1], InferenceFailedError) and out[1].code == "inference_failed"
    for got, it in zip([out[0], out[2], out[3]], items, strict=True):
        want = predictor.predict(it, heatmap=True)
        assert isinstance(got, PredictionRecord) and got.heatmap is not None
        np.testing.assert_allclose(got.raw_probabilities, want.raw_probabilities, atol=1e-6)
    with pytest.raises(InferenceFailedError):
        predictor.predict(bad)
