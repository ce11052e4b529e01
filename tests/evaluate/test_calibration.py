import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_softmax

from radiolens.evaluate import expected_calibration_error, fit_temperature, reliability_bins


def _nll_binary(z, y, t):
    p = np.clip(expit(z / t), 1e-15, 1 - 1e-15)
    return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))


def _nll_multiclass(z, y, t):
    return -np.mean(log_softmax(z / t, axis=1)[np.arange(len(y)), y])


def _scipy_t(f):
    return minimize_scalar(f, bounds=(0.05, 20), method="bounded", options={"xatol": 1e-7}).x


def test_binary_temperature_matches_scipy_and_recovers_overconfidence():
    rng = np.random.default_rng(0)
    true_z = rng.normal(0, 2, 5000)
    y = (rng.random(5000) < expit(true_z)).astype(int)
    z = 3.0 * true_z  # a model 3x over-confident
    t = fit_temperature(z[:, None], y, "binary")
    assert t == pytest.approx(_scipy_t(lambda s: _nll_binary(z, y, s)), rel=1e-4)
    assert t == pytest.approx(3.0, rel=0.1)


def test_multiclass_temperature_matches_scipy():
    rng = np.random.default_rng(1)
    true_z = rng.normal(0, 1.5, (3000, 4))
    y = np.array([rng.choice(4, p=np.exp(r) / np.exp(r).sum()) for r in true_z])
    z = 0.5 * true_z  # under-confident
    t = fit_temperature(z, y, "multiclass")
    assert t == pytest.approx(_scipy_t(lambda s: _nll_multiclass(z, y, s)), rel=1e-4)
    assert t == pytest.approx(0.5, rel=0.1)


def test_multilabel_uses_one_scalar_over_all_outputs():
    rng = np.random.default_rng(2)
    true_z = rng.normal(0, 2, (2000, 3))
    Y = (rng.random(true_z.shape) < expit(true_z)).astype(int)
    z = 2.0 * true_z
    t = fit_temperature(z, Y, "multilabel")
    assert t == pytest.approx(_scipy_t(lambda s: _nll_binary(z.ravel(), Y.ravel(), s)), rel=1e-4)


def _ece_reference(y, p, n_bins=15):
    """Plain-numpy ECE with right-closed equal-width bins (torchmetrics' convention)."""
    edges = np.linspace(0, 1, n_bins + 1)
    ids = np.clip(np.searchsorted(edges, p, side="left") - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = ids == b
        if m.any():
            ece += m.mean() * abs(y[m].mean() - p[m].mean())
    return ece


def test_binary_ece_against_numpy_reference():
    rng = np.random.default_rng(3)
    p = rng.random(4000)
    y = (rng.random(4000) < p ** 2).astype(int)  # miscalibrated on purpose
    assert expected_calibration_error(y, p) == pytest.approx(_ece_reference(y, p), abs=1e-5)


def test_multiclass_ece_is_top_label():
    rng = np.random.default_rng(4)
    z = rng.normal(0, 2, (3000, 3))
    probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = rng.integers(0, 3, 3000)
    conf, correct = probs.max(1), (probs.argmax(1) == y).astype(int)
    assert expected_calibration_error(y, probs, "multiclass") == pytest.approx(_ece_reference(correct, conf),
                                                                               abs=1e-5)


def test_temperature_scaling_lowers_ece_of_an_overconfident_model():
    rng = np.random.default_rng(5)
    true_z = rng.normal(0, 1.5, 6000)
    y = (rng.random(6000) < expit(true_z)).astype(int)
    z = 4 * true_z
    t = fit_temperature(z[:3000, None], y[:3000], "binary")
    before = expected_calibration_error(y[3000:], expit(z[3000:]))
    after = expected_calibration_error(y[3000:], expit(z[3000:] / t))
    assert after < before / 2


def test_reliability_bins_counts_and_points():
    rng = np.random.default_rng(6)
    p = rng.random(1000)
    y = (rng.random(1000) < p).astype(int)
    bins = reliability_bins(y, p, n_bins=10)
    assert sum(bins["bin_counts"]) == 1000
    assert len(bins["mean_predicted"]) == len(bins["observed_fraction"]) == len(bins["bin_counts"])
    first = p < 0.1
    assert bins["mean_predicted"][0] == pytest.approx(p[first].mean())
    assert bins["observed_fraction"][0] == pytest.approx(y[first].mean())


def test_reliability_bins_single_class():
    # bins are right-closed like calibration_curve's: 0.5 falls in (0.4, 0.5], 0.51 in (0.5, 0.6]
    bins = reliability_bins(np.zeros(5, int), np.array([0.05, 0.06, 0.5, 0.51, 0.9]), n_bins=10)
    assert bins["observed_fraction"] == [0.0] * 4 and bins["bin_counts"] == [2, 1, 1, 1]
    assert bins["mean_predicted"][0] == pytest.approx(0.055)
