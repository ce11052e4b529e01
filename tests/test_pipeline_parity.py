"""One prediction path: for every real image, the service's JSON and the batch-scoring row carry the same
probabilities, decisions, label, review flag, reason and rule, and the same status (assessed or not), on
PyTorch and on ONNX Runtime.

Images: Kermany chest JPEGs (normal and pneumonia), the SIIM chest DICOM (the copy stating BurnedInAnnotation
NO, as a site uploads it after review), and pydicom-data CT, MR and ultrasound files, which the input gate
refuses. The model is small_cnn trained for seconds on real Kermany images, with a monitoring baseline
registered (so the learned out-of-distribution score takes part) and exported to ONNX with its embedding.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from radiolens.io import read_image
from radiolens.models.backends import load_backend
from radiolens.models.bundle import BundleInfo, ModelBundle
from radiolens.models.export import export_onnx
from radiolens.models.registry import create_model
from radiolens.monitor import build_profile, register
from radiolens.predict import PredictConfig, Scorer, discover

pytestmark = pytest.mark.realdata

SECRET = "test-deid-secret-not-for-production"
NON_CHEST = ("693_UNCR.dcm", "MR2_UNCR.dcm", "US1_UNCR.dcm")  # CT, MR, ultrasound


def _kermany(data_dir: Path, split: str, per_class: int) -> list[tuple[Path, int]]:
    root = data_dir / "kermany_pediatric_pneumonia"
    rows: dict[int, list[tuple[Path, int]]] = {0: [], 1: []}
    with open(root / "manifest.csv") as fh:
        for r in csv.DictReader(fh):
            lab = int(r["label_int"])
            if r["split"] == split and len(rows[lab]) < per_class:
                rows[lab].append((root / r["path"], lab))
    return rows[0] + rows[1]


@pytest.fixture(scope="module")
def model_files(data_dir, quick_fit, tmp_path_factory) -> tuple[Path, Path]:
    """(registered .pt, its fp32 ONNX export with the embedding output)."""
    torch.manual_seed(0)
    info = BundleInfo(arch="small_cnn", task="binary", class_names=["pneumonia"], input_size=(32, 32),
                      name="parity-small-cnn", version="0.test")
    bundle = ModelBundle(info=info, model=create_model("small_cnn", 1))
    train = _kermany(data_dir, "train", 100)
    x = torch.stack([bundle.preprocess(read_image(p)) for p, _ in train])
    quick_fit(bundle, x, torch.tensor([[float(lab)] for _, lab in train]), epochs=3)
    root = data_dir / "kermany_pediatric_pneumonia"
    with open(root / "manifest.csv") as fh:  # enough validation patients for the gate's calibration half
        val = [root / r["path"] for r in csv.DictReader(fh) if r["split"] == "val"][::5]
    register(bundle, build_profile(bundle, (read_image(p) for p in val), None, source="kermany val"))
    out = tmp_path_factory.mktemp("parity-model")
    bundle.save(out / "m.pt")
    bundle = ModelBundle.load(out / "m.pt")
    export_onnx(bundle, out / "m.onnx", torch.stack([bundle.preprocess(read_image(p)) for p in val[:16]]).numpy())
    return out / "m.pt", out / "m.onnx"


@pytest.fixture(scope="module")
def images(data_dir, pydicom_data_files, tmp_path_factory) -> Path:
    """A folder of the real images under plain names (the batch input); the service gets the same bytes."""
    root = tmp_path_factory.mktemp("parity-images")
    for i, (path, _) in enumerate(_kermany(data_dir, "val", 4)):
        shutil.copy(path, root / f"kermany_{i}.jpeg")
    siim = sorted((data_dir / "siim_acr_pneumothorax" / "dicom").glob("*.dcm"))[0]
    ds = pydicom.dcmread(str(siim))
    ds.BurnedInAnnotation = "NO"  # reviewed by the site: the image has no burned-in text
    ds.save_as(root / "siim.dcm", enforce_file_format=True)
    by_name = {p.name: p for p in pydicom_data_files}
    for name in NON_CHEST:  # as a site sends them after review (the service refuses undeclared burned-in text)
        ds = pydicom.dcmread(str(by_name[name]))
        ds.BurnedInAnnotation = "NO"
        ds.save_as(root / name, enforce_file_format=True)
    return root


def _service_answers(model_pt: Path, onnx: Path | None, root: Path, tmp: Path) -> dict[str, dict]:
    from radiolens.serve import create_app
    from radiolens.serve.config import ServeSettings
    from radiolens.serve.store.auth import create_key

    backend = {"backend": "onnx", "onnx_path": onnx} if onnx else {}
    settings = ServeSettings(model_path=model_pt, state_dir=tmp / "state", deid_secret=SECRET, inference_workers=1,
                             mc_dropout_passes=0, heatmaps=False, **backend)
    app = create_app(settings)
    with Session(app.state.service.engine) as s, s.begin():
        key = create_key(s, "clinician", label="parity")[1]
    out = {}
    try:
        with TestClient(app) as c:
            for path in sorted(root.iterdir()):
                ctype = "application/dicom" if path.suffix == ".dcm" else "image/jpeg"
                r = c.post("/v1/predictions", headers={"Authorization": f"Bearer {key}"}, params={"heatmap": "false"},
                           files={"file": ("upload", path.read_bytes(), ctype)})
                assert r.status_code == 201, (path.name, r.text)
                out[path.name] = r.json()
    finally:
        app.state.service.close()
    return out


def _batch_rows(model: Path, root: Path, out: Path) -> dict[str, dict]:
    summary = Scorer(load_backend(model, threads=1), PredictConfig(batch_size=4, workers=0, progress=False)).run(
        discover(root), out)
    assert summary.errors == 0
    with open(out, newline="", encoding="utf-8") as fh:
        return {r["path"]: r for r in csv.DictReader(fh)}


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_service_json_and_batch_row_agree(backend, model_files, images, tmp_path):
    model_pt, model_onnx = model_files
    answers = _service_answers(model_pt, model_onnx if backend == "onnx" else None, images, tmp_path)
    rows = _batch_rows(model_onnx if backend == "onnx" else model_pt, images, tmp_path / "r.csv")
    assert set(rows) == set(answers)
    for name, body in answers.items():
        row = rows[name]
        assert row["status"] == body["status"], (name, row["flag_reason"], body["review"])
        assert row["prediction"] == body["decision"]["label"], name
        review = body["review"]
        assert (row["flagged"] == "True", row["flag_reason"], row["review_rule"]) == \
               (review["flag"], review["reason"], review["rule"]), name
        assert row["review_spread"] == "" and review["spread"] is None  # no MC-dropout on either side
        gate = body["monitoring"]["gate"]
        assert (row["ood_score"] == "") == (gate["ood_score"] is None), name
        if gate["ood_score"] is not None:
            assert float(row["ood_score"]) == pytest.approx(gate["ood_score"], abs=1e-3), name
        if body["status"] == "ok":
            for p in body["probabilities"]:
                assert float(row[f"p_{p['name']}"]) == pytest.approx(p["probability"], abs=1e-6), name
                assert (row[f"decision_{p['name']}"] == "True") == p["positive"], name
            assert json.loads(row["positive_classes"]) == body["decision"]["positive_classes"], name
        else:  # not assessed: no probability, no decision, for a human, on both sides
            assert body["probabilities"] == [] and math.isnan(float(row["p_pneumonia"])), name
            assert row["decision_pneumonia"] == "" and row["positive_classes"] == "", name
            assert review["flag"] and review["rule"] == "input_gate", name

    # The set covers both outcomes: chest images assessed (positive and negative), non-chest ones refused.
    status = {n: b["status"] for n, b in answers.items()}
    assert all(status[n] == "out_of_distribution" for n in NON_CHEST), status
    assert sum(status[n] == "ok" for n in status if n.startswith("kermany")) >= 6, status
    assessed = [b for b in answers.values() if b["status"] == "ok"]
    assert {b["decision"]["label"] for b in assessed} == {"pneumonia", "normal"}
    assert len({round(b["probabilities"][0]["probability"], 4) for b in assessed}) == len(assessed)
    assert np.ptp([b["probabilities"][0]["probability"] for b in assessed]) > 0.05
