"""`radiolens model-card` and `radiolens evaluate --triage-json` on a small model trained on real labels."""

from __future__ import annotations

import json
import re

import pandas as pd
from typer.testing import CliRunner

from radiolens.cli import app
from radiolens.evaluate.model_card import ADVISORY
from radiolens.models.bundle import ModelBundle


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _triage(model, manifest, out):
    r = _run("triage-fit", "--model", model, "--manifest", manifest, "--mc-passes", 4, "--out", out)
    assert r.exit_code == 0, r.output
    return out / "triage.json"


def test_model_card_cli_with_reliability_and_risk_coverage(pneumonia_models, pneumonia_manifest, tmp_path):
    model = pneumonia_models[0]
    triage = _triage(model, pneumonia_manifest, tmp_path / "t")
    img = pneumonia_manifest.parent / pd.read_csv(pneumonia_manifest).path.iloc[0]
    r = _run("explain", img, "--model", model, "--out", tmp_path / "x")
    assert r.exit_code == 0, r.output
    overlay = next((tmp_path / "x").glob("image000_*.png"))
    metrics = model.parent / "report" / "metrics.json"
    r = _run("model-card", "--model", model, "--eval-json", metrics, "--triage-json", triage,
             "--manifest", pneumonia_manifest, "--image", overlay, "--out", tmp_path / "card")
    assert r.exit_code == 0, r.output
    card = json.loads((tmp_path / "card" / "model_card.json").read_text())
    ev = json.loads(metrics.read_text())
    cal = card["calibration"]
    assert cal["ece_after"] == ev["calibration"]["test"]["ece_after"]
    assert cal["brier_before"] == ev["calibration"]["test"]["brier_before"]
    assert cal["reliability_after"]["bin_counts"] == ev["calibration"]["reliability_after"]["bin_counts"]
    assert sum(cal["reliability_after"]["bin_counts"]) == ev["n_test"] == 150
    assert card["triage"]["uncertainty"]["method"] == "mc_dropout"
    assert len(card["triage"]["risk_coverage_test"]["risk"]) == 150
    html = (tmp_path / "card" / "model_card.html").read_text()
    assert ADVISORY in html
    for alt in ("Reliability diagram", "Risk-coverage curve"):
        assert re.search(rf'<img src="data:image/png;base64,[A-Za-z0-9+/=]{{1000,}}" alt="{alt}"', html), alt
    assert html.count("data:image/png;base64,") == 3  # reliability, risk-coverage, the CAM overlay

    r = _run("model-card", "--model", pneumonia_models[1], "--triage-json", triage, "--out", tmp_path / "c3")
    assert r.exit_code == 2 and "another model" in r.output  # a rule fitted on the other member

    # the bundle alone (no metrics.json, no triage.json) still carries the reliability bins
    r = _run("model-card", "--model", model, "--out", tmp_path / "card2")
    assert r.exit_code == 0, r.output
    html2 = (tmp_path / "card2" / "model_card.html").read_text()
    assert 'alt="Reliability diagram"' in html2 and "No triage rule fitted" in html2
    card2 = json.loads((tmp_path / "card2" / "model_card.json").read_text())
    assert card2["calibration"]["reliability_after"] == cal["reliability_after"]


def test_evaluate_report_shows_triage_of_the_same_model_only(pneumonia_models, pneumonia_manifest, tmp_path):
    a, b = pneumonia_models
    triage = _triage(a, pneumonia_manifest, tmp_path / "t")
    r = _run("evaluate", "--model", a, "--manifest", pneumonia_manifest, "--out", tmp_path / "ev",
             "--n-bootstrap", 50, "--triage-json", triage)
    assert r.exit_code == 0, r.output
    html = (tmp_path / "ev" / "report.html").read_text()
    assert "Human-review triage" in html and 'alt="Risk-coverage curve"' in html
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["triage"]["rule"] == json.loads(triage.read_text())["rule"]
    r = _run("evaluate", "--model", a, "--manifest", pneumonia_manifest, "--out", tmp_path / "ev0",
             "--n-bootstrap", 50)
    assert r.exit_code == 0 and "Human-review triage" not in (tmp_path / "ev0" / "report.html").read_text()
    r = _run("evaluate", "--model", b, "--manifest", pneumonia_manifest, "--out", tmp_path / "ev2",
             "--n-bootstrap", 50, "--triage-json", triage)
    assert r.exit_code == 2 and "another model" in r.output and "Traceback" not in r.output
    assert json.loads(triage.read_text())["model_sha256"] == ModelBundle.load(a).sha256
