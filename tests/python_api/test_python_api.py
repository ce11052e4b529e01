"""The Python API (``radiolens.load_model``) on real images: the same records as batch scoring, labelled output,
the input gate applied to every kind of input, heatmaps at the input size, typed errors for bad input, and an
``import radiolens`` that loads neither PyTorch nor the API until it is used."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from tests.kermany_models import NON_CHEST, driver_images

import radiolens
from radiolens.errors import (
    ImageDimensionError,
    InputError,
    ModelError,
    PixelRangeError,
    UnreadableImageError,
    UnsupportedInputError,
)
from radiolens.models.backends import load_backend
from radiolens.predict import PredictConfig, Scorer, discover
from radiolens.python_api import heatmap_at

pytestmark = pytest.mark.realdata

SRC = str(Path(radiolens.__file__).parents[1])


@pytest.fixture(scope="module")
def images(data_dir, pydicom_data_files, tmp_path_factory) -> Path:
    """Real images under plain names: Kermany JPEGs of both classes, the SIIM chest DICOM, CT / MR / US files."""
    return driver_images(tmp_path_factory.mktemp("api-images"), data_dir, pydicom_data_files, reviewed=False)


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = env or {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_import_radiolens_loads_neither_torch_nor_the_api():
    out = _python("import radiolens, sys\n"
                  "assert 'torch' not in sys.modules and 'numpy' not in sys.modules\n"
                  "assert 'radiolens.python_api' not in sys.modules\n"
                  "from radiolens import load_model, PredictionRecord, Explanation\n"
                  "assert 'torch' not in sys.modules, 'the API itself imports torch'\n"
                  "print(load_model.__module__, PredictionRecord.__module__)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["radiolens.python_api", "radiolens.pipeline.record"]


def test_every_public_name_resolves_and_unknown_names_fail():
    assert set(radiolens.__all__) == set(radiolens._EXPORTS) | {"__version__"}
    for name in radiolens._EXPORTS:
        assert getattr(radiolens, name).__name__ == name
    with pytest.raises(AttributeError):
        radiolens.no_such_name  # noqa: B018


@pytest.mark.parametrize("kind", ["torch", "onnx"])
def test_records_equal_batch_scoring(kind, api_model_files, images, tmp_path):
    """Same images, same batches: every status, label, review, gate outcome and probability of the API equals
    the batch row's (probabilities within 1e-9: both are the pipeline's, so they agree exactly)."""
    path = api_model_files[0] if kind == "torch" else api_model_files[1]
    items = discover(images)
    summary = Scorer(load_backend(path, threads=1), PredictConfig(batch_size=4, workers=0, progress=False)).run(
        items, tmp_path / "rows.csv")
    assert summary.errors == 0
    with open(tmp_path / "rows.csv", newline="", encoding="utf-8") as fh:
        rows = {r["path"]: r for r in csv.DictReader(fh)}
    model = radiolens.load_model(path, threads=1)
    records = model.predict_batch([it.path for it in items], batch_size=4)
    assert len(records) == len(rows) == 12
    for item, rec in zip(items, records, strict=True):
        row = rows[item.key]
        assert isinstance(rec, radiolens.PredictionRecord)
        assert (rec.status, rec.label, rec.review.flag, rec.review.reason, rec.review.rule) == \
               (row["status"], row["prediction"], row["flagged"] == "True", row["flag_reason"], row["review_rule"])
        assert rec.provenance.label == row["model"]
        ood = "" if rec.gate.ood_score is None else str(round(rec.gate.ood_score, 4))
        assert ood == row["ood_score"], item.key
        if rec.assessed:
            assert abs(rec.class_probabilities["pneumonia"] - float(row["p_pneumonia"])) <= 1e-9, item.key
            assert rec.decisions["pneumonia"] == (row["decision_pneumonia"] == "True")
            assert json.loads(row["positive_classes"]) == rec.positive_classes
        else:
            assert math.isnan(float(row["p_pneumonia"])) and rec.class_probabilities == {}
    status = {it.key: r.status for it, r in zip(items, records, strict=True)}
    assert all(status[n] == "out_of_distribution" for n in NON_CHEST), status
    assert sum(s == "ok" for k, s in status.items() if k.startswith("kermany")) >= 6, status
    # one image at a time (batches of one) gives the same records up to float32 batching noise
    single = model.predict(items[0].path)
    assert single.status == records[0].status and single.label == records[0].label
    if single.assessed:
        assert single.class_probabilities["pneumonia"] == pytest.approx(
            records[0].class_probabilities["pneumonia"], abs=1e-6)


def _assessed(model, images: Path) -> Path:
    """A Kermany image the gate lets through (the learned score refuses a few of the model's own kind)."""
    return next(p for p in sorted(images.glob("kermany_*.jpeg")) if model.predict(p).assessed)


def test_output_is_labelled_by_class(api_model_files, images):
    model = radiolens.load_model(api_model_files[0])
    assert model.classes == ["pneumonia"] and model.input_size == (32, 32) and model.task == "binary"
    assert model.thresholds == {"pneumonia": pytest.approx(0.5)}
    assert "kermany val" in (model.intended_population or "")  # from the monitoring profile
    rec = model.predict(_assessed(model, images))
    assert rec.assessed and list(rec.class_probabilities) == ["pneumonia"]
    p = rec.class_probabilities["pneumonia"]
    assert 0.0 < p < 1.0 and rec.decisions["pneumonia"] == (p >= 0.5)
    assert rec.label == ("pneumonia" if p >= 0.5 else "normal")
    d = rec.to_dict()
    assert d["probabilities"][0]["name"] == "pneumonia" and d["gate"]["status"] == "ok"
    assert d["gate"]["learned_score"] is True and d["gate"]["ood_score"] is not None
    text = repr(rec)
    assert f"'pneumonia': {p:.4f}" in text and "gate=passed" in text and "api-small-cnn@torch" in text
    assert repr(model).startswith("Model('api-small-cnn@torch'")


def test_gate_refuses_non_chest_datasets(api_model_files, pydicom_data_files):
    """A CT and an MR handed over as pydicom data sets: not assessed, no probability, for review, with reasons."""
    model = radiolens.load_model(api_model_files[1])  # the ONNX export: the gate runs without PyTorch too
    by_name = {p.name: p for p in pydicom_data_files}
    for name, modality in (("693_UNCR.dcm", "CT"), ("MR2_UNCR.dcm", "MR")):
        ds = pydicom.dcmread(by_name[name])
        rec = model.predict(ds)
        assert rec.status == "out_of_distribution" and not rec.gate.passed
        assert rec.class_probabilities == {} and rec.label == "not assessed" and rec.positive_classes == []
        assert rec.review.flag and rec.review.rule == "input_gate"
        assert any(f"modality {modality}" in r for r in rec.gate.reasons), rec.gate.reasons
        assert "refused" in repr(rec) and "probabilities=" not in repr(rec)
        exp = model.explain(ds)
        assert exp.heatmap is None and exp.record.status == "out_of_distribution"
        assert exp.overlay().shape == (*exp.image.shape, 3)


def test_arrays_follow_the_raster_convention_and_are_gated(api_model_files, images):
    model = radiolens.load_model(api_model_files[0])
    path = _assessed(model, images)
    grey = np.asarray(Image.open(path).convert("L"))
    from_file = model.predict(path).class_probabilities["pneumonia"]
    assert grey.dtype == np.uint8
    assert model.predict(grey).class_probabilities["pneumonia"] == from_file  # what the file's pixels give
    assert model.predict(grey[..., None]).class_probabilities["pneumonia"] == from_file
    assert model.predict(np.stack([grey] * 3, axis=-1)).class_probabilities["pneumonia"] == from_file
    assert model.predict(grey / 255.0).class_probabilities["pneumonia"] == pytest.approx(from_file, abs=1e-6)
    sixteen = grey.astype(np.uint16) * 257  # the same image in 16 bits
    assert model.predict(sixteen).class_probabilities["pneumonia"] == pytest.approx(from_file, abs=1e-6)
    # a colour picture is refused by the gate whichever way it arrives
    colour = np.asarray(Image.open(path).convert("RGB")).copy()
    colour[..., 0] = 255 - colour[..., 0]
    rec = model.predict(colour)
    assert rec.status == "out_of_distribution" and "a colour picture, not a radiograph" in rec.gate.reasons


@pytest.mark.parametrize(("bad", "error"), [
    (lambda g: g.astype(np.float64), PixelRangeError),  # 0..255 as float: not scaled to [0, 1]
    (lambda g: g / 255.0 - 0.5, PixelRangeError),  # already normalised
    (lambda g: np.where(g > 100, np.nan, g / 255.0), PixelRangeError),
    (lambda g: g.astype(np.int64), PixelRangeError),  # integers of no stated range
    (lambda g: g > 100, PixelRangeError),
    (lambda g: g[None, None], ImageDimensionError),  # a (1, 1, H, W) batch tensor
    (lambda g: np.stack([g] * 2, axis=-1), ImageDimensionError),
    (lambda g: g[:0], ImageDimensionError),
    (lambda g: g.tolist(), UnsupportedInputError),
    (lambda g: 3, UnsupportedInputError),
    (lambda g: "no-such-file.dcm", UnreadableImageError),
    (lambda g: b"not an image at all", UnreadableImageError),
])
def test_bad_input_gives_typed_errors(bad, error, api_model_files, images):
    model = radiolens.load_model(api_model_files[1])
    grey = np.asarray(Image.open(images / "kermany_0.jpeg").convert("L"))
    with pytest.raises(error) as info:
        model.predict(bad(grey))
    assert isinstance(info.value, InputError) and info.value.code != InputError.code


def test_batch_errors_raise_or_stay_in_place(api_model_files, images):
    model = radiolens.load_model(api_model_files[0])
    good = [_assessed(model, images), images / "siim.dcm"]
    with pytest.raises(UnreadableImageError):
        model.predict_batch([good[0], images / "missing.png", good[1]])
    out = model.predict_batch([good[0], images / "missing.png", 7, good[1]], errors="return", batch_size=2)
    assert [type(o).__name__ for o in out] == ["PredictionRecord", "UnreadableImageError",
                                               "UnsupportedInputError", "PredictionRecord"]
    assert out[3].class_probabilities == model.predict(good[1]).class_probabilities


@pytest.mark.parametrize("kind", ["torch", "onnx"])
def test_explain_gives_the_heatmap_at_the_image_size(kind, api_model_files, images):
    model = radiolens.load_model(api_model_files[0] if kind == "torch" else api_model_files[1])
    assert model.heatmap_method == "cam"  # small_cnn's head is GAP + linear: the CAM from the forward pass, both ways
    jpeg = _assessed(model, images)
    for path in (images / "siim.dcm", jpeg):
        exp = model.explain(path)
        image = radiolens.python_api.read_source(path)
        assert exp.image.shape == exp.heatmap.shape == (image.height, image.width)
        assert exp.record.assessed and exp.target == "pneumonia"
        assert exp.record.class_probabilities == model.predict(path).class_probabilities
        assert 0.0 <= exp.heatmap.min() and exp.heatmap.max() <= 1.0 and exp.heatmap.max() > 0.5
        # the big map is the model-size map stretched: shrunk back, it is the same map
        small = exp.record.heatmap.array
        back = np.asarray(Image.fromarray(exp.heatmap).resize(small.shape[::-1], Image.Resampling.BOX))
        assert np.corrcoef(back.ravel(), small.ravel())[0, 1] > 0.95
        over = exp.overlay()
        assert over.shape == (image.height, image.width, 3) and over.dtype == np.uint8
    batch = model.explain_batch([jpeg, images / "693_UNCR.dcm"])
    assert batch[0].heatmap.shape == (batch[0].image.shape) and batch[1].heatmap is None
    assert np.allclose(batch[0].heatmap, model.explain(jpeg).heatmap, atol=1e-5)


def test_heatmap_at_model_size_is_unchanged():
    heat = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    assert np.array_equal(heatmap_at(heat, 32, 32), heat)
    assert heatmap_at(heat, 64, 48).shape == (64, 48)


def test_model_folders_and_model_cards(api_model_files, tmp_path):
    pt, onnx = api_model_files
    job = tmp_path / "job"  # a training job's output folder
    job.mkdir()
    shutil.copy(pt, job / "model.pt")
    model = radiolens.load_model(job)
    assert model.model_file == job / "model.pt" and model.model_card is None
    sha = model.predictor.provenance.sha256
    card = {"model": {"sha256": sha}, "intended_use": "Adults, PA chest films, for prioritised review."}
    (job / "model_card.json").write_text(json.dumps(card))
    assert radiolens.load_model(job).intended_population == card["intended_use"]
    (job / "model_card.json").write_text(json.dumps({**card, "model": {"sha256": "0" * 64}}))
    other = radiolens.load_model(job)  # a card of another model says nothing about this one
    assert other.model_card is None and "kermany val" in other.intended_population
    only_onnx = tmp_path / "export"
    only_onnx.mkdir()
    shutil.copy(onnx, only_onnx / "chest.onnx")
    assert radiolens.load_model(only_onnx).predictor.provenance.backend == "onnx"
    shutil.copy(onnx, only_onnx / "other.onnx")
    with pytest.raises(ModelError, match="2 model files"):
        radiolens.load_model(only_onnx)
    with pytest.raises(ModelError, match="model not found"):
        radiolens.load_model(tmp_path / "nothing-here")
    from radiolens.errors import ConfigError

    with pytest.raises(ConfigError, match="MC-dropout"):
        radiolens.load_model(onnx, mc_dropout_passes=8)


def test_onnx_model_without_torch(api_model_files, images, tmp_path):
    """In an installation without PyTorch (``radiolens[serve]``), an export predicts and explains."""
    from radiolens.errors import TRAIN_ONLY_MODULES

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import importlib.abc, sys\n"
        f"BLOCKED = {sorted(TRAIN_ONLY_MODULES)!r}\n"
        "class _NotInstalled(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, _NotInstalled())\n")
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": f"{site}{os.pathsep}{SRC}"}
    jpeg, ct = _assessed(radiolens.load_model(api_model_files[1]), images), images / "693_UNCR.dcm"
    out = _python("import json, sys, radiolens\n"
                  f"m = radiolens.load_model({str(api_model_files[1])!r})\n"
                  f"e = m.explain({str(jpeg)!r})\n"
                  f"r = m.predict({str(ct)!r})\n"
                  "assert 'torch' not in sys.modules\n"
                  "print(json.dumps([e.record.class_probabilities, list(e.heatmap.shape), r.status]))", env)
    assert out.returncode == 0, out.stderr
    probs, shape, status = json.loads(out.stdout)
    model = radiolens.load_model(api_model_files[1])
    assert probs["pneumonia"] == pytest.approx(model.predict(jpeg).class_probabilities["pneumonia"], abs=1e-5)
    assert shape == list(np.asarray(Image.open(jpeg)).shape[:2]) and status == "out_of_distribution"
    blocked = _python("import radiolens\n"
                      f"radiolens.load_model({str(api_model_files[0])!r})", env)
    assert blocked.returncode != 0 and "radiolens[train]" in blocked.stderr  # a .pt needs PyTorch, and says so


def test_an_export_without_feature_maps_predicts_but_cannot_explain(api_model_files, images, tmp_path):
    from radiolens.io import read_image
    from radiolens.models.bundle import ModelBundle
    from radiolens.models.export import export_onnx

    bundle = ModelBundle.load(api_model_files[0])
    check = np.stack([bundle.preprocess(read_image(p)).numpy() for p in sorted(images.glob("kermany_*.jpeg"))])
    export_onnx(bundle, tmp_path / "plain.onnx", check, cam_features=False)
    model = radiolens.load_model(tmp_path / "plain.onnx")
    assert model.heatmap_method is None
    assert model.predict(images / "siim.dcm").class_probabilities  # predicting needs no feature maps
    with pytest.raises(ModelError, match="no heatmaps"):
        model.explain(images / "siim.dcm")
    with pytest.raises(ModelError, match="no heatmaps"):
        model.explain_batch([images / "siim.dcm"])
