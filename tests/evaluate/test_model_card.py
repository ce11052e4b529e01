from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from radiolens.errors import InputError
from radiolens.evaluate.model_card import ADVISORY, build_card, write_card
from radiolens.evaluate.subgroups import audit_subgroups
from radiolens.models.bundle import BundleInfo, ModelBundle
from radiolens.models.registry import create_model


def test_card_json_and_html(tmp_path, data_dir):
    torch.manual_seed(0)
    info = BundleInfo(arch="small_cnn", task="binary", class_names=["abnormal"], input_size=(32, 32),
                      triage={"margin": 0.05, "budget": 0.2})
    bundle = ModelBundle(info=info, model=create_model("small_cnn", 1))
    bundle.save(tmp_path / "m.pt")
    bundle = ModelBundle.load(tmp_path / "m.pt")
    manifest = data_dir / "nih_chestxray14" / "manifest.csv"
    m = pd.read_csv(manifest)
    y = m.label_abnormal.to_numpy()
    p = np.random.default_rng(0).random(len(y))
    (tmp_path / "sub.json").write_text(json.dumps(audit_subgroups(y, p, m, ["sex", "age_band"], n_bootstrap=50),
                                                  default=float))
    png = tmp_path / "ex.png"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(png, np.random.default_rng(1).random((8, 8)))
    card = build_card(bundle, subgroups_json=tmp_path / "sub.json", manifest=manifest, images=[png])
    jp, hp = write_card(card, tmp_path / "card", [png])
    data = json.loads(jp.read_text())
    assert data["model"]["sha256"] == bundle.sha256 and len(data["training_data"]["manifest_sha256"]) == 64
    assert data["triage"]["budget"] == 0.2
    html = hp.read_text()
    assert ADVISORY in html and "data:image/png;base64," in html and "equalized-odds" in html
    assert "paediatric (&lt;18)</td><td>0</td>" in html and "0 cases" in html  # NIH has no children: listed
    assert "No risk-coverage curve attached" in html  # the bundle's stored rule has no curve
    # the intended population is stated from the training rows of the manifest, counted independently here
    train = m[m["split"] == "train"]
    pop = data["scope"]["population"]
    assert pop["images"] == len(train) and pop["patients"] == train["patient_id"].nunique()
    assert pop["age_bands"]["paediatric (<18)"] == int((train["age"] < 18).sum()) == 0
    assert sum(pop["age_bands"].values()) == pop["age_known"] == int(train["age"].notna().sum())
    assert pop["sex"] == {k: int(v) for k, v in train["sex"].value_counts().sort_index().items()}
    lo, hi = pop["age_5th_to_95th"]
    assert lo == round(train["age"].quantile(0.05)) and hi == round(train["age"].quantile(0.95))
    assert "Patients in the age band(s) paediatric (<18): none in the training data." in data["scope"]["out_of_scope"]
    assert data["scope"]["stated_population"] is None and "states no intended population" in html
    assert any(s.startswith("Lateral views: trained on AP, PA only") for s in data["scope"]["out_of_scope"])
    assert "Input: 32 x 32 px" in html and "<h2>Out of scope</h2>" in html and "<h2>Limitations</h2>" in html
    with pytest.raises(InputError):
        build_card(bundle, eval_json=tmp_path / "missing.json")


def test_stated_population_reaches_the_card(tmp_path):
    info = BundleInfo(arch="small_cnn", task="binary", class_names=["pneumonia"], input_size=(48, 48),
                      population={"description": "Children aged 1-5 years, AP films", "age_min_years": 1,
                                  "age_max_years": 5, "views": ["AP"]})
    bundle = ModelBundle(info=info, model=create_model("small_cnn", 1))
    card = build_card(bundle)
    assert "Patients outside the stated age range (1 to 5 years)." in card["scope"]["out_of_scope"]
    assert "Views other than AP (the stated population)." in card["scope"]["out_of_scope"]
    html = write_card(card, tmp_path / "card")[1].read_text()
    assert "Children aged 1-5 years, AP films" in html and "Population not stated" in html  # no manifest given


def test_training_record_renders_as_rounded_rows():
    from radiolens.evaluate.model_card import display_rows

    rows = dict(display_rows({"lr": 0.000312345678, "epochs_run": 12, "history": [{"epoch": 0}] * 12,
                              "label": {"task": "binary", "columns": ["label"]}, "timings_s": {"fit": 123.456789},
                              "thresholds": [0.123456789, 0.5]}))
    assert rows == {"lr": "0.0003123", "epochs_run": "12",
                    "history": "12 epochs recorded (see the evaluation report's training curves)",
                    "label.task": "binary", "label.columns": "label", "timings_s.fit": "123.5",
                    "thresholds": "0.1235, 0.5"}


def test_card_draws_risk_coverage_from_a_triage_file(tmp_path):
    from radiolens.explain.triage import fit_triage_rule, risk_coverage

    torch.manual_seed(0)
    info = BundleInfo(arch="small_cnn", task="binary", class_names=["abnormal"], input_size=(32, 32))
    bundle = ModelBundle(info=info, model=create_model("small_cnn", 1))
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.clip(y * 0.3 + 0.35 + rng.normal(0, 0.15, 300), 0, 1)
    rule = fit_triage_rule(p[:150], y[:150], [0.5], ["abnormal"], budget=0.2)
    refer = rule.refer_mask(p[150:])
    triage = {"rule": rule.model_dump(), "test": {"n": 150, "referral_rate": float(refer.mean())},
              "risk_coverage_test": risk_coverage(p[150:], y[150:], [0.5])}
    (tmp_path / "triage.json").write_text(json.dumps(triage))
    card = build_card(bundle, triage_json=tmp_path / "triage.json")
    assert card["calibration"] is None  # nothing evaluated: no invented calibration
    html = write_card(card, tmp_path / "card")[1].read_text()
    assert 'alt="Risk-coverage curve"' in html and "No evaluation attached" in html
    assert html.count("data:image/png;base64,") == 1
