"""ONNX export: parity on real images, metadata travelling with the file, and loud refusal of divergence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from radiolens.cli import app
from radiolens.models.backends import OnnxBackend
from radiolens.models.bundle import BundleInfo, ModelBundle
from radiolens.models.export import (
    METADATA_KEY,
    ExportParityError,
    check_parity,
    export_onnx,
    info_from_json,
    read_metadata,
)
from radiolens.models.registry import available_models, create_model, get_architecture
from radiolens.predict.sources import discover, load_preprocessed


def _real_items(data_dir: Path):
    kermany = discover(data_dir / "kermany_pediatric_pneumonia" / "manifest.csv", split="val")
    siim = discover(data_dir / "siim_acr_pneumothorax" / "dicom")
    return kermany[:6] + kermany[-6:] + siim  # both classes + the real DICOM (1024 px CR, windowed, resized)


def _bundle(arch: str = "small_cnn", size: int | None = None, seed: int = 0) -> ModelBundle:
    torch.manual_seed(seed)
    size = size or get_architecture(arch).default_input_size
    info = BundleInfo(arch=arch, task="binary", class_names=["pneumonia"], input_size=(size, size),
                      temperature=1.3, thresholds=[0.42])
    return ModelBundle(info, create_model(arch, 1))


class ExportOnlyOffset(torch.nn.Module):
    """A deliberately broken graph: identical in eager PyTorch, shifted logits in the exported ONNX."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        if torch.onnx.is_in_onnx_export():
            y = y + 0.5
        return y


@pytest.fixture(scope="module")
def exported(tmp_path_factory, data_dir):
    bundle = _bundle()
    batch, used = load_preprocessed(_real_items(data_dir), bundle.info)
    out = tmp_path_factory.mktemp("export") / "small.onnx"
    report = export_onnx(bundle, out, batch)
    return bundle, out, report, batch, used


def test_parity_on_real_images_is_reported_and_tight(exported):
    bundle, out, report, batch, used = exported
    assert report.parity.n_images == len(batch) == len(used) == 13
    assert any(it.key.endswith(".dcm") for it in used)  # the real DICOM took part
    assert report.parity.max_abs_diff_prob < 1e-4
    ref = bundle.predict_batch(torch.from_numpy(batch))
    onnx_probs = OnnxBackend(out).predict_proba(batch)
    assert np.max(np.abs(ref - onnx_probs)) == pytest.approx(report.parity.max_abs_diff_prob, abs=1e-7)


def test_bundle_info_travels_inside_the_onnx_file(exported):
    bundle, out, *_ = exported
    info = info_from_json(read_metadata(out)[METADATA_KEY])
    assert info == bundle.info
    backend = OnnxBackend(out)
    assert backend.info.temperature == 1.3 and backend.info.thresholds == [0.42]
    assert backend.precision == "fp32"


def test_batch_axis_is_dynamic(exported):
    bundle, out, _, batch, _ = exported
    backend = OnnxBackend(out)
    full = backend.predict_logits(batch)
    one = backend.predict_logits(batch[:1])
    five = backend.predict_logits(batch[2:7])
    np.testing.assert_allclose(one, full[:1], atol=1e-5)
    np.testing.assert_allclose(five, full[2:7], atol=1e-5)


def test_opset_at_least_17(exported):
    _, out, report, *_ = exported
    model = onnx.load(str(out))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 17 and report.opset == opset


def test_diverging_graph_fails_loudly_and_leaves_no_file(tmp_path, data_dir):
    bundle = _bundle()
    broken = ModelBundle(bundle.info, ExportOnlyOffset(bundle.model))
    batch, _ = load_preprocessed(_real_items(data_dir), bundle.info, limit=4)
    out = tmp_path / "broken.onnx"
    with pytest.raises(ExportParityError) as err:
        export_onnx(broken, out, batch)
    assert err.value.code == "export_parity"
    assert not out.exists() and not list(tmp_path.iterdir())


def test_perturbed_weights_in_the_graph_fail_the_parity_check(exported, tmp_path):
    bundle, out, _, batch, _ = exported
    model = onnx.load(str(out))
    conv_weights = [t for t in model.graph.initializer if len(t.dims) == 4]
    w = onnx.numpy_helper.to_array(conv_weights[0]).copy()
    conv_weights[0].CopyFrom(onnx.numpy_helper.from_array(w * 1.5, conv_weights[0].name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(ExportParityError):
        check_parity(bundle, bad, batch)
    report = check_parity(bundle, bad, batch, raise_on_fail=False)
    assert report.max_abs_diff_prob > 1e-4


def test_cli_export_of_diverging_model_exits_nonzero_with_one_line(tmp_path, data_dir, monkeypatch):
    bundle = _bundle()
    path = tmp_path / "model.pt"
    bundle.save(path)
    real_load = ModelBundle.load

    def load_broken(p):
        b = real_load(p)
        return ModelBundle(b.info, ExportOnlyOffset(b.model), b.sha256)

    monkeypatch.setattr(ModelBundle, "load", classmethod(lambda cls, p: load_broken(p)))
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(app, ["export", "--model", str(path), "--out", str(out), "--check-images",
                                      str(data_dir / "kermany_pediatric_pneumonia" / "manifest.csv"),
                                      "--check-count", "4"])
    assert result.exit_code == 2
    assert "diverge" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_cli_export_ok_on_real_images(tmp_path, data_dir):
    path = tmp_path / "model.pt"
    _bundle().save(path)
    out = tmp_path / "m.onnx"
    report = tmp_path / "export.json"
    result = CliRunner().invoke(app, ["export", "--model", str(path), "--format", "onnx", "--out", str(out),
                                      "--check-images", str(data_dir / "siim_acr_pneumothorax" / "dicom"),
                                      "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "max |dp|" in result.output and out.is_file()
    assert '"passed": true' in report.read_text()
    assert "heatmaps without PyTorch: cam" in result.output and '"heatmap_method": "cam"' in report.read_text()


def test_cli_export_rejects_unknown_format(tmp_path):
    path = tmp_path / "model.pt"
    _bundle().save(path)
    result = CliRunner().invoke(app, ["export", "--model", str(path), "--format", "tflite", "--out",
                                      str(tmp_path / "m.onnx")], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "Invalid value for '--format'" in result.output and "tflite" in result.output


@pytest.mark.slow
@pytest.mark.parametrize("arch", available_models())
def test_every_registry_model_exports_with_parity(arch, tmp_path, data_dir):
    bundle = _bundle(arch)
    batch, _ = load_preprocessed(_real_items(data_dir), bundle.info, limit=4)
    report = export_onnx(bundle, tmp_path / f"{arch}.onnx", batch)
    assert report.parity.passed and report.parity.max_abs_diff_prob < 1e-4
