"""Backends: PyTorch, TorchScript and ONNX Runtime give the same probabilities on real images; the
selection rules (by file, by kind) and bad-input errors are typed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from radiolens.errors import ModelError
from radiolens.io import read_image
from radiolens.models.backends import Backend, OnnxBackend, TorchBackend, load_backend, probabilities
from radiolens.models.bundle import BundleInfo, ModelBundle
from radiolens.models.export import export_onnx
from radiolens.models.registry import create_model
from radiolens.predict.sources import discover, load_preprocessed


@pytest.fixture(scope="module")
def files(tmp_path_factory, data_dir):
    torch.manual_seed(1)
    info = BundleInfo(arch="small_cnn", task="multilabel", class_names=["a", "b", "c"], input_size=(48, 48),
                      temperature=0.8)
    bundle = ModelBundle(info, create_model("small_cnn", 3))
    root = tmp_path_factory.mktemp("backends")
    pt = root / "m.pt"
    bundle.save(pt)
    items = discover(data_dir / "nih_chestxray14" / "manifest.csv")[:10]
    batch, _ = load_preprocessed(items, info)
    onnx_path = root / "m.onnx"
    export_onnx(ModelBundle.load(pt), onnx_path, batch)
    return pt, onnx_path, batch


def test_backends_agree_on_real_images(files):
    pt, onnx_path, batch = files
    torch_be, ts_be, onnx_be = load_backend(pt), load_backend(pt, kind="torchscript"), load_backend(onnx_path)
    assert (torch_be.kind, ts_be.kind, onnx_be.kind) == ("torch", "torchscript", "onnx")
    ref = torch_be.predict_proba(batch)
    assert ref.shape == (len(batch), 3)
    np.testing.assert_allclose(ts_be.predict_proba(batch), ref, atol=1e-5)
    np.testing.assert_allclose(onnx_be.predict_proba(batch), ref, atol=1e-5)
    for be in (torch_be, ts_be, onnx_be):
        assert isinstance(be, Backend) and be.info.class_names == ["a", "b", "c"]


def test_probabilities_match_bundle_maths():
    logits = np.array([[2.0, -1.0, 0.3], [-0.5, 0.1, 4.0]], dtype=np.float32)
    for task in ("multilabel", "multiclass"):
        info = BundleInfo(arch="small_cnn", task=task, class_names=["a", "b", "c"], input_size=(32, 32),
                          temperature=1.7)
        bundle = ModelBundle(info, create_model("small_cnn", 3))
        np.testing.assert_allclose(probabilities(info, logits), bundle.probabilities_from_logits(logits), atol=1e-6)


def test_preprocess_follows_bundle_on_a_real_dicom(files, data_dir):
    pt, _, _ = files
    be = load_backend(pt)
    image = read_image(next((data_dir / "siim_acr_pneumothorax" / "dicom").glob("*.dcm")))
    x = be.preprocess(image)
    ref = be.bundle.preprocess(image).numpy()
    assert x.shape == (1, 48, 48)
    np.testing.assert_array_equal(x, ref)


def test_kind_must_match_the_file(files):
    pt, onnx_path, _ = files
    with pytest.raises(ModelError, match="exported .onnx"):
        load_backend(pt, kind="onnx")
    with pytest.raises(ModelError, match="only on the onnx backend"):
        load_backend(onnx_path, kind="torch")
    with pytest.raises(ModelError, match="unknown backend"):
        load_backend(pt, kind="tensorrt")  # type: ignore[arg-type]
    assert isinstance(load_backend(ModelBundle.load(pt)), TorchBackend)


def test_wrong_batch_shape_is_a_typed_error(files):
    pt, onnx_path, _ = files
    for be in (load_backend(pt), load_backend(onnx_path)):
        with pytest.raises(ModelError, match="expected"):
            be.predict_logits(np.zeros((2, 1, 64, 64), np.float32))
        with pytest.raises(ModelError, match="expected"):
            be.predict_logits(np.zeros((1, 48, 48), np.float32))


def test_onnx_without_radiolens_metadata_or_garbage_is_refused(files, tmp_path):
    _, onnx_path, _ = files
    model = onnx.load(str(onnx_path))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(ModelError, match="no radiolens metadata"):
        OnnxBackend(bare)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelError, match="not a loadable ONNX"):
        load_backend(junk)
    with pytest.raises(ModelError, match="not found"):
        load_backend(tmp_path / "missing.onnx")
