"""Human-review triage for a multi-class model: refer when the two most likely classes are close.

A small_cnn trained (``run_training_job``, as ``radiolens train``) on Kermany's real normal / bacterial /
viral labels; the rule is fitted on validation by ``radiolens triage-fit`` and applied unchanged on test, in
batch scoring and in the service's review call."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from radiolens.cli import app
from radiolens.errors import InputError
from radiolens.explain.triage import TriageRule, decision_errors, fit_triage_rule, risk_coverage
from radiolens.io import read_image
from radiolens.models.bundle import ModelBundle
from radiolens.train.config import config_from_dict
from radiolens.train.job import run_training_job

CLASSES = ["normal", "bacterial", "viral"]


@pytest.fixture(scope="module")
def three_class_model(kermany_3class_small: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kermany3_model")
    cfg = {"name": "triage-3class", "data": {"manifest": str(kermany_3class_small), "label": {
               "task": "multiclass", "columns": ["pneumonia_type"], "classes": CLASSES,
               "aliases": {"none": "normal", "bacteria": "bacterial", "virus": "viral"}}},
           "model": {"arch": "small_cnn", "input_size": 32},
           "optim": {"epochs": 3, "batch_size": 32, "lr": 0.003}, "augment": {"enabled": False},
           "eval": {"n_bootstrap": 50}, "seed": 0, "mlflow": False, "progress_bar": False, "num_threads": 2}
    run_training_job(config_from_dict(cfg), out, echo=lambda *a: None)
    return out / "model.pt"


def test_top2_rule_flags_and_round_trips():
    rule = TriageRule(thresholds=[], class_names=CLASSES, kind="top2_margin", margin=0.15, max_spread=0.2)
    refer, reason = rule.flag(np.array([0.10, 0.48, 0.42]))
    assert refer and "top two classes bacterial 0.48 and viral 0.42 within 0.15" in reason
    assert rule.flag(np.array([0.05, 0.80, 0.15]))[0] is False
    refer, reason = rule.flag(np.array([0.05, 0.80, 0.15]), np.array([0.01, 0.30, 0.02]))
    assert refer and "bacterial: model uncertain (spread 0.30" in reason
    assert TriageRule(**rule.model_dump()) == rule and rule.n_outputs == 3
    with pytest.raises(InputError, match="expected 3 probabilities"):
        rule.flag(np.array([0.5, 0.5]))
    probs = np.array([[0.1, 0.48, 0.42], [0.05, 0.8, 0.15], [0.34, 0.33, 0.33]])
    assert rule.refer_mask(probs).tolist() == [True, False, True]
    # labels as class indices or one-hot give the same errors
    y = np.array([2, 1, 0])
    assert (decision_errors(probs, y, [], "top2_margin") == decision_errors(probs, np.eye(3)[y], [],
                                                                            "top2_margin")).all()


def test_triage_fit_cli_on_a_real_three_class_model(three_class_model, kermany_3class_small, tmp_path):
    model = tmp_path / "model.pt"
    model.write_bytes(three_class_model.read_bytes())
    out = tmp_path / "triage"
    r = CliRunner().invoke(app, ["triage-fit", "--model", str(model), "--manifest", str(kermany_3class_small),
                                 "--out", str(out), "--budget", "0.2", "--write-bundle"])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "triage.json").read_text())
    rule = TriageRule(**report["rule"])
    assert rule.kind == "top2_margin" and rule.class_names == CLASSES and 0 < rule.margin < 1
    assert rule.validation_referral_rate <= 0.2 and rule.validation_n == 150

    # Recompute the test numbers from the stored bundle, independently of the CLI's scoring path.
    bundle = ModelBundle.load(model)
    assert TriageRule(**bundle.info.triage) == rule and report["model_sha256"] == bundle.sha256
    with open(kermany_3class_small, newline="") as fh:
        test = [row for row in csv.DictReader(fh) if row["split"] == "test"]
    import torch

    x = torch.stack([bundle.preprocess(read_image(row["path"])) for row in test])
    probs = bundle.predict_batch(x)
    y = np.array([{"none": 0, "bacteria": 1, "virus": 2}[row["pneumonia_type"]] for row in test])
    refer = rule.refer_mask(probs)
    wrong = decision_errors(probs, y, [], "top2_margin")
    t = report["test"]
    assert t["n"] == len(test) and t["referral_rate"] == pytest.approx(refer.mean(), abs=1e-9)
    assert t["error_rate_all"] == pytest.approx(wrong.mean(), abs=1e-9)
    # The rule refers the cases the model gets wrong more often than those it keeps: it is informative.
    assert t["error_rate_referred"] > t["error_rate_kept"]
    rc = risk_coverage(probs, y, [], kind="top2_margin")
    assert rc["risk"][-1] == pytest.approx(wrong.mean()) and rc["aurc"] < wrong.mean()

    # Batch scoring and the service apply the stored rule to predicted-normal cases.
    from radiolens.models.backends import load_backend
    from radiolens.pipeline import Predictor
    from radiolens.predict import PredictConfig, Scorer

    scorer = Scorer(load_backend(model), PredictConfig(workers=0, progress=False))
    predictor = Predictor(load_backend(model))
    assert scorer.flag_rule == "bundle_triage_rule"
    for p in probs[:40]:  # one triage for both drivers: the stored rule, whatever the decided class
        refer_p, why = rule.flag(p)
        r = predictor.triage.review(p)
        assert r.rule == "bundle_triage_rule" and (r.flag, r.reason) == (refer_p, why)


def test_fit_keeps_the_budget_on_synthetic_scores():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    logits = rng.normal(0, 1, (600, 3))
    logits[np.arange(600), y] += rng.uniform(0, 3, 600)  # some cases clearly right, some ambiguous
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    rule = fit_triage_rule(probs, y, [], CLASSES, budget=0.25, kind="top2_margin")
    assert rule.validation_referral_rate <= 0.25
    assert rule.validation_kept_error_rate < decision_errors(probs, y, [], "top2_margin").mean()
