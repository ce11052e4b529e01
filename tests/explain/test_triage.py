from __future__ import annotations

import numpy as np
import pytest
import torch

from radiolens.errors import InputError, ModelError
from radiolens.explain.triage import TriageRule, fit_triage_rule, risk_coverage
from radiolens.explain.uncertainty import ensemble_predict, mc_dropout_predict, predictive_entropy
from radiolens.models.bundle import BundleInfo, ModelBundle
from radiolens.models.registry import create_model


def _bundle(seed: int, dropout: float = 0.5) -> ModelBundle:
    torch.manual_seed(seed)
    info = BundleInfo(arch="small_cnn", task="binary", class_names=["abnormal"], input_size=(32, 32))
    return ModelBundle(info=info, model=create_model("small_cnn", 1, dropout=dropout))


def test_flag_reason_near_threshold_and_uncertain():
    rule = TriageRule(thresholds=[0.52], class_names=["abnormal"], margin=0.07, max_spread=0.1)
    flagged, reason = rule.flag(np.array([0.48]), None)
    assert flagged and "0.48 within 0.07 of the operating threshold 0.52" in reason
    flagged, reason = rule.flag(np.array([0.95]), np.array([0.3]))
    assert flagged and "uncertain" in reason
    assert rule.flag(np.array([0.95]), np.array([0.01]))[0] is False
    assert TriageRule(**rule.model_dump()) == rule  # round-trips through bundle.info.triage as a dict
    with pytest.raises(InputError):
        rule.flag(np.array([0.1, 0.2]))


def test_fit_respects_budget_and_lowers_kept_error():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    p = np.clip(y * 0.3 + 0.35 + rng.normal(0, 0.15, 400), 0, 1)
    rule = fit_triage_rule(p, y, [0.5], ["abnormal"], budget=0.2)
    assert rule.validation_referral_rate <= 0.2
    base_err = float(((p >= 0.5) != y).mean())
    assert rule.validation_kept_error_rate < base_err
    rc = risk_coverage(p, y, [0.5])
    assert rc["coverage"][-1] == 1.0 and abs(rc["risk"][-1] - base_err) < 1e-9
    assert rc["risk"][len(p) // 2] < base_err  # keeping the most certain half lowers the error


def test_mc_dropout_and_ensemble():
    b = _bundle(0)
    x = torch.randn(4, 1, 32, 32)
    r = mc_dropout_predict(b, x, passes=8)
    assert r.samples.shape == (8, 4, 1) and (r.std > 0).all()
    assert not b.model.training
    assert np.allclose(predictive_entropy(np.array([0.5])), 1.0)
    with pytest.raises(ModelError):
        mc_dropout_predict(_bundle(0, dropout=0.0), x)
    imgs = [np.random.default_rng(i).random((40, 40)).astype(np.float32) for i in range(3)]
    e = ensemble_predict([_bundle(1), _bundle(2), _bundle(3)], imgs)
    assert e.mean.shape == (3, 1) and (e.std > 0).all()
