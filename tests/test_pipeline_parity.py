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
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from tests.kermany_models import NON_CHEST, driver_images, registered_small_cnn

from radiolens.models.backends import load_backend
from radiolens.predict import PredictConfig, Scorer, discover

pytestmark = pytest.mark.realdata

SECRET = "test-deid-secret-not-for-production"


@pytest.fixture(scope="module")
def model_files(data_dir, quick_fit, tmp_path_factory) -> tuple[Path, Path]:
    """(registered .pt, its fp32 ONNX export with the embedding output)."""
    return registered_small_cnn(data_dir, quick_fit, tmp_path_factory.mktemp("parity-model"), "parity-small-cnn")


@pytest.fixture(scope="module")
def images(data_dir, pydicom_data_files, tmp_path_factory) -> Path:
    """A folder of the real images under plain names (the batch input); the service gets the same bytes."""
    return driver_images(tmp_path_factory.mktemp("parity-images"), data_dir, pydicom_data_files, reviewed=True)


def _service_answers(model_pt: Path, onnx: Path | None, root: Path, tmp: Path) -> dict[str, dict]:
    from radiolens.serve import create_app
    from radiolens.serve.config import ServeSettings
    from radiolens.serve.store.auth import create_key

    backend = {"backend": "onnx", "onnx_path": onnx} if onnx else {}
    # OCR off: the images include pydicom-data's ultrasound US1_UNCR, whose pixels carry the scanner's text
    # (the service's default policy refuses it; batch scoring reads pixels as they are). The policy itself is
    # tested in tests/serve/test_burned_in_upload.py and tests/io/test_deid_benchmark.py.
    settings = ServeSettings(model_path=model_pt, state_dir=tmp / "state", deid_secret=SECRET, inference_workers=1,
                             pixel_text={"policy": "off"},
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
