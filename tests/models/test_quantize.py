"""Static INT8 quantization of a model fitted on real Kermany images: the AUROC change stays small, the
metadata is carried over, and the comparison lands in the file's metrics for the model card."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from radiolens.cli import app
from radiolens.models.backends import OnnxBackend
from radiolens.models.bundle import BundleInfo, ModelBundle, file_sha256
from radiolens.models.export import export_onnx
from radiolens.models.quantize import calibration_reader, compare_int8, quantize_onnx
from radiolens.models.registry import create_model
from radiolens.predict.sources import discover, group_half, load_preprocessed


def fit_lenet(data_dir, size: int = 32, n: int = 600, epochs: int = 8) -> ModelBundle:
    """A few epochs of LeNet-5 on real Kermany training images: seconds of CPU, yet enough signal that AUROC
    means something."""
    torch.manual_seed(0)
    info = BundleInfo(arch="lenet5", task="binary", class_names=["pneumonia"], input_size=(size, size))
    items = discover(data_dir / "kermany_pediatric_pneumonia" / "manifest.csv", split="train",
                     label_column="label_int")
    rng = np.random.default_rng(0)
    items = [items[i] for i in rng.choice(len(items), n, replace=False)]
    x, used = load_preprocessed(items, info)
    y = torch.tensor([[it.label] for it in used], dtype=torch.float32)
    model = create_model("lenet5", 1)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    xt = torch.from_numpy(x)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread is ~10x faster than two on a shared, busy CPU
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xt)).split(32):
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(model(xt[idx]), y[idx]).backward()
            opt.step()
    torch.set_num_threads(threads)
    return ModelBundle(info, model.eval())


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, data_dir):
    bundle = fit_lenet(data_dir)
    root = tmp_path_factory.mktemp("quant")
    val = discover(data_dir / "kermany_pediatric_pneumonia" / "manifest.csv", split="val", label_column="label_int")
    cal, _ = load_preprocessed([it for it in val if group_half(it) == 0], bundle.info, limit=64)
    test_x, test_items = load_preprocessed([it for it in val if group_half(it) == 1], bundle.info, limit=200)
    fp32 = root / "m.onnx"
    # the label definition a training run records: the word column, so quantize needs no 0/1 column
    bundle.info.training["label"] = {"task": "binary", "columns": ["label"], "positive": "PNEUMONIA",
                                     "negative": "NORMAL"}
    bundle.save(root / "m.pt")  # first, so the export records the .pt's sha256 as its source
    export_onnx(bundle, fp32, cal[:16])
    return bundle, root, fp32, cal, test_x, np.array([it.label for it in test_items])


def test_calibration_reader_yields_every_image_once():
    images = np.zeros((37, 1, 8, 8), np.float32)
    reader = calibration_reader(images, batch_size=16)
    sizes = []
    while (batch := reader.get_next()) is not None:
        sizes.append(len(batch["input"]))
    assert sizes == [16, 16, 5]
    reader.rewind()
    assert reader.get_next() is not None


def test_calibration_reader_ranges_cover_every_image_once():
    """ONNX Runtime's strided calibration walks the reader by set_range(start, end) in batches."""
    images = np.arange(37, dtype=np.float32).reshape(37, 1, 1, 1)
    reader = calibration_reader(images, batch_size=16)
    assert len(reader) == 3
    seen = []
    for start in range(len(reader)):
        reader.set_range(start, start + 1)
        while (batch := reader.get_next()) is not None:
            seen.extend(batch["input"].ravel().tolist())
    assert seen == list(range(37))
    reader.rewind()
    assert len(reader.get_next()["input"]) == 16


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_calibration_is_fed_one_batch_at_a_time(fitted, tmp_path, method, monkeypatch):
    """The histogram calibrators hold every activation of one collect_data call (200 densenet121 images at
    224 px were killed for memory): radiolens feeds them a batch per call, and the result still keeps AUROC."""
    from onnxruntime.quantization import calibrate

    _, _, fp32, cal, test_x, labels = fitted
    calls = []
    real = calibrate.HistogramCalibrater.collect_data

    def counting(self, reader):
        calls.append(len(self.intermediate_outputs))
        return real(self, reader)

    monkeypatch.setattr(calibrate.HistogramCalibrater, "collect_data", counting)
    int8 = tmp_path / f"{method}.onnx"
    report = quantize_onnx(fp32, int8, cal, method=method)
    assert report.method == method
    assert len(calls) == len(calibration_reader(cal)) == 4  # 64 images, 16 per batch: one call per batch
    assert set(calls) == {0}  # each call starts empty: nothing of the previous batch is still held
    cmp = compare_int8(fp32, int8, test_x, labels, threads=1, repeats=1)
    assert abs(cmp["auroc_change"]) < 0.03 and cmp["decision_agreement"] > 0.9


def test_int8_keeps_auroc_on_real_test_images(fitted):
    bundle, root, fp32, cal, test_x, labels = fitted
    int8 = root / "m.int8.onnx"
    report = quantize_onnx(fp32, int8, cal)
    assert report.n_calibration == len(cal) and report.size_mb_int8 < report.size_mb_fp32
    be = OnnxBackend(int8)
    assert be.precision == "int8" and be.info.class_names == bundle.info.class_names
    cmp = compare_int8(fp32, int8, test_x, labels, threads=1, repeats=1)
    assert 0 < labels.mean() < 1 and cmp["n_eval_images"] == len(labels)
    assert cmp["auroc_fp32"] > 0.75, "the fitted model should have learned something on real data"
    assert abs(cmp["auroc_change"]) < 0.03
    assert cmp["decision_agreement"] > 0.9
    assert cmp["model_images_per_s_int8"] > 0 and cmp["speedup_int8"] > 0


def test_cli_quantize_writes_json_and_metadata(fitted, tmp_path, data_dir):
    _, _, fp32, *_ = fitted
    manifest = str(data_dir / "kermany_pediatric_pneumonia" / "manifest.csv")
    out, report = tmp_path / "q.onnx", tmp_path / "q.json"
    result = CliRunner().invoke(app, ["quantize", "--model", str(fp32), "--out", str(out),
                                      "--calibration", manifest, "--calibration-split", "val",
                                      "--calibration-count", "32", "--eval", manifest, "--eval-split", "val",
                                      "--eval-count", "120", "--threads", "1", "--report", str(report)])
    assert result.exit_code == 0, result.output
    payload = json.loads(report.read_text())
    assert {"auroc_fp32", "auroc_int8", "auroc_change", "speedup_int8"} <= set(payload["comparison"])
    assert OnnxBackend(out).info.metrics["int8_vs_fp32"]["auroc_int8"] == payload["comparison"]["auroc_int8"]
    # labels came from the model's own definition (PNEUMONIA/NORMAL words); the 0/1 column gives the same
    again = CliRunner().invoke(app, ["quantize", "-m", str(fp32), "-o", str(tmp_path / "q2.onnx"),
                                     "--calibration", manifest, "--calibration-split", "val",
                                     "--calibration-count", "32", "--eval", manifest, "--eval-split", "val",
                                     "--eval-count", "120", "--threads", "1", "-l", "label_int",
                                     "--report", str(tmp_path / "q2.json")])
    assert again.exit_code == 0, again.output
    explicit = json.loads((tmp_path / "q2.json").read_text())["comparison"]
    assert explicit["auroc_fp32"] == payload["comparison"]["auroc_fp32"]
    assert explicit["n_eval_images"] == payload["comparison"]["n_eval_images"]


def test_cli_quantize_rejects_a_non_onnx_model(fitted, tmp_path, data_dir):
    _, root, *_ = fitted
    result = CliRunner().invoke(app, ["quantize", "--model", str(root / "m.pt"), "--out", str(tmp_path / "q.onnx"),
                                      "--calibration", str(data_dir / "siim_acr_pneumothorax" / "dicom")])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_model_card_shows_the_measured_int8_result(fitted, tmp_path, data_dir):
    """quantize (real calibration + evaluation images) -> model-card --quantization: the card carries the
    numbers that run measured and the hashes of the files, from the JSON report and from the .onnx alone."""
    bundle, root, fp32, *_ = fitted
    manifest = str(data_dir / "kermany_pediatric_pneumonia" / "manifest.csv")
    out, report = tmp_path / "q.onnx", tmp_path / "q.json"
    runner = CliRunner()
    result = runner.invoke(app, ["quantize", "-m", str(fp32), "-o", str(out), "--calibration", manifest,
                                 "-l", "label_int",  # an explicit 0/1 column instead of the model's definition
                                 "--calibration-split", "val", "--calibration-count", "40", "--eval", manifest,
                                 "--eval-split", "val", "--eval-count", "150", "--threads", "1",
                                 "--report", str(report)])
    assert result.exit_code == 0, result.output
    measured = json.loads(report.read_text())["comparison"]
    assert measured["int8_onnx_sha256"] == file_sha256(out) and measured["fp32_onnx_sha256"] == file_sha256(fp32)
    assert measured["source_sha256"] == file_sha256(root / "m.pt") and measured["calibration_images"] == 40
    for source in (report, out):
        card_dir = tmp_path / f"card_{source.suffix[1:]}"
        r = runner.invoke(app, ["model-card", "--model", str(root / "m.pt"), "--out", str(card_dir),
                                "--quantization", str(source)])
        assert r.exit_code == 0, r.output
        q = json.loads((card_dir / "model_card.json").read_text())["quantization"]
        for key in ("auroc_fp32", "auroc_int8", "auroc_change", "speedup_int8", "n_eval_images",
                    "calibration_images", "fp32_onnx_sha256", "int8_onnx_sha256", "source_sha256"):
            assert q[key] == measured[key], key
        html = (card_dir / "model_card.html").read_text()
        assert f"{measured['auroc_fp32']:.4f} / {measured['auroc_int8']:.4f} ({measured['auroc_change']:+.4f})" in html
        assert f"x{measured['speedup_int8']:.2f}" in html and measured["int8_onnx_sha256"] in html
        assert "40 images (minmax)" in html


def test_model_card_refuses_int8_results_of_another_model(fitted, tmp_path, data_dir):
    _, root, fp32, cal, *_ = fitted
    out = tmp_path / "q.onnx"
    quantize_onnx(fp32, out, cal[:8])
    other = ModelBundle(BundleInfo(arch="lenet5", task="binary", class_names=["pneumonia"], input_size=(32, 32)),
                        create_model("lenet5", 1))
    other.save(tmp_path / "other.pt")
    runner = CliRunner()
    no_cmp = runner.invoke(app, ["model-card", "--model", str(root / "m.pt"), "--out", str(tmp_path / "c"),
                                 "--quantization", str(out)])
    assert no_cmp.exit_code == 2 and "no fp32-vs-int8 comparison" in no_cmp.output
    report = tmp_path / "q.json"
    report.write_text(json.dumps({"comparison": {"auroc_int8": 0.9, "source_sha256": file_sha256(root / "m.pt")}}))
    wrong = runner.invoke(app, ["model-card", "--model", str(tmp_path / "other.pt"), "--out", str(tmp_path / "c"),
                                "--quantization", str(report)])
    assert wrong.exit_code == 2 and "another model" in wrong.output and "Traceback" not in wrong.output
