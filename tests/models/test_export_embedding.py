"""The ONNX export carries the model embedding as a second output (for the service's input gate and drift
monitoring on ONNX Runtime), equal to what the PyTorch tap reads, also after INT8 quantization."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radiolens.models.backends import OnnxBackend
from radiolens.models.bundle import BundleInfo, ModelBundle
from radiolens.models.embedding import EmbeddingTap
from radiolens.models.export import export_onnx
from radiolens.models.registry import create_model


@pytest.mark.parametrize("arch, size", [("small_cnn", 48), ("lenet5", 32), ("resnet18", 64), ("densenet121", 64)])
def test_embedding_output_matches_the_torch_tap(arch, size, tmp_path):
    torch.manual_seed(0)
    bundle = ModelBundle(BundleInfo(arch=arch, task="binary", class_names=["x"], input_size=(size, size)),
                         create_model(arch, 1))
    x = np.random.default_rng(0).normal(size=(6, 1, size, size)).astype(np.float32)
    report = export_onnx(bundle, tmp_path / "m.onnx", x)
    assert report.embedding_output and report.parity.passed
    backend = OnnxBackend(tmp_path / "m.onnx")
    logits, emb = backend.logits_and_embedding(x)
    ref_logits, ref_emb = EmbeddingTap(bundle.model, 1)(torch.from_numpy(x))
    np.testing.assert_allclose(logits, ref_logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(emb, ref_emb.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(backend.predict_logits(x), logits)


def test_export_without_embedding_and_int8_keeps_it(tmp_path):
    from radiolens.models.quantize import quantize_onnx

    torch.manual_seed(0)
    bundle = ModelBundle(BundleInfo(arch="small_cnn", task="binary", class_names=["x"], input_size=(48, 48)),
                         create_model("small_cnn", 1))
    x = np.random.default_rng(1).normal(size=(16, 1, 48, 48)).astype(np.float32)
    plain = export_onnx(bundle, tmp_path / "plain.onnx", x, embedding=False)
    assert not plain.embedding_output and not OnnxBackend(tmp_path / "plain.onnx").has_embedding
    export_onnx(bundle, tmp_path / "fp32.onnx", x)
    quantize_onnx(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", x)
    int8 = OnnxBackend(tmp_path / "int8.onnx")
    assert int8.has_embedding
    # the heatmap output and record survive quantization too (the record's weights stay the fp32 classifier's)
    fp32 = OnnxBackend(tmp_path / "fp32.onnx")
    assert int8.has_features and int8.cam_head.method == fp32.cam_head.method == "cam"
    np.testing.assert_array_equal(int8.cam_head.weight, fp32.cam_head.weight)
    _, emb = int8.logits_and_embedding(x)
    _, ref = OnnxBackend(tmp_path / "fp32.onnx").logits_and_embedding(x)
    assert emb.shape == ref.shape and np.corrcoef(emb.ravel(), ref.ravel())[0, 1] > 0.95
