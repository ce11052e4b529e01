"""The drift statistics themselves: against scipy/hand-computed values, calibrated under the null,
powerful under a shift, and 'insufficient data' when a window is too small."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from radiolens.monitor.drift import (
    mmd_permutation_test,
    psi_categorical,
    psi_continuous,
    psi_distributions,
    psi_from_counts,
)


def test_psi_matches_its_definition():
    ref, cur = np.array([50, 30, 20]), np.array([20, 30, 50])
    p, q = ref / ref.sum(), cur / cur.sum()
    assert psi_from_counts(ref, cur, smoothing=0) == pytest.approx(float(np.sum((q - p) * np.log(q / p))))
    assert psi_from_counts(ref, ref) == pytest.approx(0.0)
    assert psi_from_counts(ref, cur) == pytest.approx(psi_from_counts(cur, ref))  # symmetric
    # smoothing keeps an empty bin finite instead of infinite
    assert np.isfinite(psi_from_counts(np.array([10, 0]), np.array([5, 5])))


def test_psi_categorical_new_category_and_rare_absence():
    ref = ["PA"] * 60 + ["AP"] * 40
    assert psi_categorical(ref, ["PA"] * 60 + ["AP"] * 40) == pytest.approx(0.0)
    assert psi_categorical(ref, ["LL"] * 100) > 1.0  # a view never seen in validation
    rare = ["PA"] * 98 + ["AP"] * 2
    assert psi_categorical(rare, ["PA"] * 100) < 0.1  # a rare value missing from a window is not drift


def test_psi_continuous_and_histograms():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=2000)
    assert psi_continuous(ref, rng.normal(size=500)) < 0.05
    assert psi_continuous(ref, rng.normal(1.0, 1.0, size=500)) > 0.25
    h = np.histogram(rng.beta(2, 5, 5000), bins=32, range=(0, 1))[0] / 5000
    assert psi_distributions(h, h) == pytest.approx(0.0)
    assert psi_distributions(h, h[::-1]) > 1.0


def test_mmd_permutation_test_is_calibrated_and_powerful():
    rng = np.random.default_rng(1)
    null_p = [mmd_permutation_test(rng.normal(size=(150, 8)), rng.normal(size=(50, 8)), 100, seed=i)[1]
              for i in range(40)]
    assert np.mean(np.array(null_p) < 0.05) <= 0.15  # ~5% expected under the null
    assert 0.2 < np.median(null_p) < 0.8
    shifted = rng.normal(size=(50, 8))
    shifted[:, 0] += 1.0
    stat, p = mmd_permutation_test(rng.normal(size=(150, 8)), shifted, 200, seed=0)
    assert stat > 0 and p < 0.01


def test_ks_is_scipy():
    # the window test uses scipy's two-sample KS directly; pin the convention we rely on (p small = differ)
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=300), rng.normal(0.5, 1, size=100)
    r = sps.ks_2samp(a, b)
    assert r.pvalue < 0.01 and 0 < r.statistic < 1
