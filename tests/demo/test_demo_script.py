"""scripts/demo.sh (the README's `make demo`) run for real on RADIOLENS_DATA_DIR, in a quick mode (1 epoch).

It checks what a user is promised: de-identified DICOM + report, previews, a trained model, and an HTML +
JSON report whose numbers are computed on the manifest's test split and agree between `train` and
`evaluate`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.realdata

REPO = Path(__file__).resolve().parents[2]


def _run_demo(out: Path, data_dir: Path, epochs: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "RADIOLENS_DATA_DIR": str(data_dir), "RADIOLENS_DEMO_OUT": str(out),
           "RADIOLENS_DEMO_EPOCHS": str(epochs), "RADIOLENS_DEMO_BOOTSTRAP": "100",
           "RADIOLENS_CMD": str(Path(sys.executable).parent / "radiolens")}
    return subprocess.run(["bash", str(REPO / "scripts" / "demo.sh")], env=env, capture_output=True, text=True,
                          timeout=1800)


def test_demo_script_end_to_end(tmp_path, data_dir):
    out = tmp_path / "demo"
    res = _run_demo(out, data_dir, epochs=1)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stderr

    # 1. de-identification: every input processed, outputs named by remapped UIDs, PHI-free report; the SIIM
    # Secondary Capture is refused by default and passed on only with --allow-burned-in
    report = json.loads((out / "deid" / "deid_report.json").read_text())["files"]
    reviewed = json.loads((out / "deid-reviewed" / "deid_report.json").read_text())["files"]
    dicoms = sorted((out / "deid").glob("*.dcm")) + sorted((out / "deid-reviewed").glob("*.dcm"))
    assert len(report) == 4 and all(r["status"] == "ok" for r in report)
    assert len(reviewed) == 1 and reviewed[0]["status"] == "ok" and reviewed[0]["burned_in_annotation"] == "absent"
    assert "refused: the image is a Secondary Capture" in res.stderr
    assert len(dicoms) == 5 and all(p.name.startswith("2.25.") for p in dicoms)
    # 2. one preview per de-identified file plus the 4 NIH full-resolution PNGs, all non-empty PNGs
    previews = sorted((out / "previews").glob("*.png"))
    n_nih = len(list((data_dir / "nih_chestxray14" / "images_fullres").glob("*.png")))
    assert len(previews) == len(dicoms) + n_nih
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in previews)
    # 3. the manifest is patient-disjoint with train/val/test
    manifest = pd.read_csv(out / "pneumoniamnist" / "data" / "manifest.csv", dtype={"patient_id": str})
    assert set(manifest.split) == {"train", "val", "test"}
    assert (manifest.groupby("patient_id").split.nunique() == 1).all()
    n_test = int((manifest.split == "test").sum())
    # 4./5. model + reports with sane numbers on the test split
    run = out / "pneumoniamnist"
    assert (run / "model.pt").stat().st_size > 10_000
    for folder in (run / "report", run / "eval"):
        html = (folder / "report.html").read_text()
        assert "data:image/png;base64," in html  # self-contained: plots embedded
    trained = json.loads((run / "report" / "metrics.json").read_text())
    evaluated = json.loads((run / "eval" / "metrics.json").read_text())
    for m in (trained, evaluated):
        assert m["n_test"] == n_test and m["task"] == "binary" and m["class_names"] == ["pneumonia"]
        auroc = m["summary"]["headline"]["auroc"]
        assert auroc["lower"] <= auroc["estimate"] <= auroc["upper"]
        assert 0.75 < auroc["estimate"] <= 1.0, auroc  # one epoch on real images: well above chance (0.5)
        at = m["per_class"][0]["at_threshold"]
        assert at["tp"] + at["fn"] == m["per_class"][0]["n_positive"]
        assert at["tp"] + at["fp"] + at["tn"] + at["fn"] == n_test
        assert 0 <= at["sensitivity"] <= 1 and 0 <= at["specificity"] <= 1 and m["temperature"] > 0
    # the same model on the same split with the same val-fitted threshold: identical numbers
    assert abs(trained["summary"]["headline"]["auroc"]["estimate"]
               - evaluated["summary"]["headline"]["auroc"]["estimate"]) < 1e-9
    assert trained["per_class"][0]["at_threshold"]["tp"] == evaluated["per_class"][0]["at_threshold"]["tp"]
    # 6./7. the demo model is accepted by its own input gate: the baseline registered, and the test split
    # (patients the model and the gate never saw) is assessed, not refused wholesale
    assert "far above" not in res.stdout + res.stderr
    preds = pd.read_csv(run / "predictions.csv")
    assert len(preds) == n_test
    assert (preds.status == "out_of_distribution").mean() <= 0.08, preds.flag_reason.value_counts().head()
    # the script says where everything is
    for path in (out / "deid", run / "model.pt", run / "eval" / "report.html", run / "predictions.csv"):
        assert str(path) in res.stdout


def test_demo_refuses_a_missing_data_dir(tmp_path):
    res = _run_demo(tmp_path / "o", tmp_path / "no-such-data", epochs=1)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "RADIOLENS_DATA_DIR" in res.stderr
    assert not (tmp_path / "o").exists()


def test_demo_refuses_a_missing_radiolens_command(tmp_path, data_dir):
    env = {**os.environ, "RADIOLENS_DATA_DIR": str(data_dir), "RADIOLENS_DEMO_OUT": str(tmp_path / "o"),
           "RADIOLENS_CMD": str(tmp_path / "no-such-radiolens")}
    res = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh")], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2 and "is not installed" in res.stderr and not (tmp_path / "o").exists()
