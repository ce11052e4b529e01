import numpy as np
import pytest

from radiolens.evaluate import OperatingPointError, binary_rates, choose_threshold, threshold_choice


def _val(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(0, 1.2, n))))
    return y, p


def test_youden_matches_brute_force_over_all_cut_points():
    y, p = _val()
    chosen = threshold_choice(y, p, "youden")
    assert choose_threshold(y, p, "youden") == chosen["threshold"]
    best = max(np.unique(p), key=lambda t: np.mean(p[y == 1] >= t) + np.mean(p[y == 0] < t) - 1)
    j = lambda t: np.mean(p[y == 1] >= t) + np.mean(p[y == 0] < t) - 1  # noqa: E731
    assert j(chosen["threshold"]) == pytest.approx(j(best))
    r = binary_rates(y, p, chosen["threshold"])
    assert (r["sensitivity"], r["specificity"]) == pytest.approx((chosen["val_sensitivity"],
                                                                   chosen["val_specificity"]))


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95])
def test_target_sensitivity_is_met_with_the_highest_possible_threshold(target):
    y, p = _val(seed=1)
    thr = choose_threshold(y, p, f"sensitivity:{target}")
    assert np.mean(p[y == 1] >= thr) >= target
    higher = np.unique(p[p > thr])
    if higher.size:  # the next cut point up would miss the target
        assert np.mean(p[y == 1] >= higher[0]) < target


def test_target_specificity():
    y, p = _val(seed=2)
    thr = choose_threshold(y, p, "specificity:0.9")
    assert np.mean(p[y == 0] < thr) >= 0.9
    lower = np.unique(p[p < thr])
    if lower.size:
        assert np.mean(p[y == 0] < lower[-1]) < 0.9


def test_single_class_validation_falls_back_to_half_and_says_so():
    out = threshold_choice(np.zeros(20, int), np.linspace(0, 1, 20), "youden")
    assert out["threshold"] == 0.5 and "no positive" in out["fallback"]


def test_unknown_rule():
    y, p = _val()
    with pytest.raises(OperatingPointError):
        choose_threshold(y, p, "max_f1")
