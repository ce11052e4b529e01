import numpy as np
import pytest

from radiolens.evaluate import binary_rates, brier, probabilities
from radiolens.evaluate.metrics import argmax_summary, multiclass_brier, one_vs_rest, per_class_confusion


def test_binary_rates_against_direct_counts():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.clip(y * 0.3 + rng.random(300) * 0.7, 0, 1)
    thr = 0.45
    r = binary_rates(y, p, thr)
    pred = p >= thr
    tp, fp = np.sum(pred & (y == 1)), np.sum(pred & (y == 0))
    tn, fn = np.sum(~pred & (y == 0)), np.sum(~pred & (y == 1))
    assert (r["tp"], r["fp"], r["tn"], r["fn"]) == (tp, fp, tn, fn)
    assert r["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert r["specificity"] == pytest.approx(tn / (tn + fp))
    assert r["ppv"] == pytest.approx(tp / (tp + fp))
    assert r["npv"] == pytest.approx(tn / (tn + fn))
    assert r["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))


def test_zero_denominators_are_none_not_zero():
    y = np.array([0, 0, 1, 1])
    r = binary_rates(y, np.array([0.1, 0.2, 0.3, 0.4]), threshold=0.9)  # nothing called positive
    assert r["ppv"] is None and r["sensitivity"] == 0.0 and r["specificity"] == 1.0
    r = binary_rates(np.zeros(4, int), np.array([0.1, 0.2, 0.3, 0.4]), threshold=0.25)
    assert r["sensitivity"] is None and r["ppv"] == 0.0


def test_threshold_is_inclusive():
    r = binary_rates(np.array([1, 0]), np.array([0.5, 0.49]), 0.5)
    assert r["tp"] == 1 and r["tn"] == 1


def test_brier_scores_against_numpy():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 50)
    p = rng.random(50)
    assert brier(y, p) == pytest.approx(np.mean((p - y) ** 2))
    t = rng.integers(0, 3, 50)
    probs = probabilities(rng.normal(size=(50, 3)), "multiclass")
    assert multiclass_brier(t, probs) == pytest.approx(np.mean(np.sum((probs - np.eye(3)[t]) ** 2, axis=1)))


def test_probabilities_sigmoid_softmax_and_temperature():
    z = np.array([[0.0, 2.0, -1.0]])
    soft = probabilities(z, "multiclass")
    assert soft.sum() == pytest.approx(1.0)
    assert probabilities(z, "multilabel")[0, 1] == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert probabilities(z, "multilabel", temperature=2.0)[0, 1] == pytest.approx(1 / (1 + np.exp(-1.0)))


def test_per_class_confusion_and_argmax_summary():
    t = np.array([0, 1, 2, 2, 1, 0])
    probs = one_vs_rest(np.array([0, 1, 1, 2, 1, 2]), 3).astype(float)
    summary = argmax_summary(t, probs)
    assert summary["confusion_matrix"] == [[1, 0, 1], [0, 2, 0], [0, 1, 1]]
    assert summary["accuracy"] == pytest.approx(4 / 6)
    assert summary["balanced_accuracy"] == pytest.approx(np.mean([1 / 2, 2 / 2, 1 / 2]))
    mats = per_class_confusion(one_vs_rest(t, 3), probs.astype(int))
    assert mats[2] == {"tn": 3, "fp": 1, "fn": 1, "tp": 1}


def test_wilson_intervals_for_rates():
    from scipy.stats import norm

    r = binary_rates(np.array([1] * 20 + [0] * 30), np.array([0.9] * 18 + [0.1] * 2 + [0.1] * 27 + [0.9] * 3), 0.5)
    lo, hi = r["sensitivity_ci"]
    # Wilson score interval written out independently for 18 / 20
    n, phat, zq = 20, 18 / 20, norm.ppf(0.975)
    centre = (phat + zq**2 / (2 * n)) / (1 + zq**2 / n)
    half = zq * np.sqrt(phat * (1 - phat) / n + zq**2 / (4 * n**2)) / (1 + zq**2 / n)
    assert (lo, hi) == pytest.approx((centre - half, centre + half), abs=1e-9)
    assert binary_rates(np.zeros(3, int), np.zeros(3), 0.5)["sensitivity_ci"] == [None, None]
