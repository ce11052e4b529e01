import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from radiolens.evaluate import auroc_with_ci, average_precision_with_ci, bootstrap_auroc, macro_micro_auroc_ci
from radiolens.evaluate.bootstrap import (
    bootstrap_average_precision,
    case_indices,
    resampled_auroc,
    resampled_average_precision,
    stratified_indices,
)


def _data(n=120, seed=0, ties=True):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-(y * 1.2 + rng.normal(0, 1, n))))
    if ties:
        p = np.round(p, 1)  # heavy ties: the rank identity must count them 1/2 like roc_auc_score
    return y, p


def test_vectorised_auroc_matches_sklearn_on_resamples_with_ties():
    y, p = _data()
    idx = case_indices(len(y), 50, np.random.default_rng(1))
    ours = resampled_auroc(y, p, idx)
    ref = [roc_auc_score(y[i], p[i]) for i in idx]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_vectorised_auroc_is_nan_for_single_class_resamples():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4])
    rows = resampled_auroc(y, p, np.array([[0, 1, 1, 0], [0, 1, 2, 3], [3, 3, 0, 0]]))
    assert np.isnan(rows[0]) and rows[1] == pytest.approx(1.0) and rows[2] == pytest.approx(1.0)


def test_batched_average_precision_matches_sklearn():
    y, p = _data(ties=True)
    idx = stratified_indices(y, 30, np.random.default_rng(2))
    ours = resampled_average_precision(y, p, idx)
    ref = [average_precision_score(y[i], p[i]) for i in idx]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_stratified_resamples_keep_class_counts():
    y, _ = _data()
    idx = stratified_indices(y, 20, np.random.default_rng(0))
    assert (y[idx].sum(axis=1) == y.sum()).all()
    assert idx.shape == (20, len(y))


def test_auroc_ci_equals_an_independent_sklearn_bootstrap():
    """Same resample indices, AUROC by roc_auc_score in a plain loop, np.percentile: identical interval."""
    y, p = _data(ties=False)
    est, lo, hi = auroc_with_ci(y, p, n_bootstrap=300, seed=7)
    idx = stratified_indices(y, 300, np.random.default_rng(7))
    ref = np.percentile([roc_auc_score(y[i], p[i]) for i in idx], [2.5, 97.5])
    assert est == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert (lo, hi) == pytest.approx(tuple(ref), abs=1e-12)
    assert lo < est < hi


def test_ap_ci_estimate_is_sklearn_and_brackets():
    y, p = _data(ties=False)
    est, lo, hi = average_precision_with_ci(y, p, n_bootstrap=200, seed=0)
    assert est == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert lo <= est <= hi


def test_ci_is_reproducible_and_seed_dependent():
    y, p = _data()
    assert auroc_with_ci(y, p, 200, seed=3) == auroc_with_ci(y, p, 200, seed=3)
    assert auroc_with_ci(y, p, 200, seed=3) != auroc_with_ci(y, p, 200, seed=4)


def test_single_class_is_undefined_not_an_error():
    interval = bootstrap_auroc(np.zeros(30, int), np.linspace(0, 1, 30), n_bootstrap=50)
    assert interval.estimate is None and "no positive" in interval.reason
    assert auroc_with_ci(np.ones(10, int), np.linspace(0, 1, 10), 50) == (None, None, None)


def test_tiny_positive_count_withholds_the_interval():
    y = np.zeros(40, int)
    y[[3, 9]] = 1
    p = np.linspace(0, 1, 40)
    interval = bootstrap_auroc(y, p, n_bootstrap=50)
    assert interval.estimate == pytest.approx(roc_auc_score(y, p))  # the point estimate is still reported
    assert interval.lower is None and interval.upper is None and "only 2 positive case(s)" in interval.reason
    ap = bootstrap_average_precision(1 - y, p, n_bootstrap=50)  # two negatives: same rule for the other class
    assert ap.lower is None and "only 2 negative case(s)" in ap.reason
    y[[5, 20, 30]] = 1  # five positives: an interval again
    assert bootstrap_auroc(y, p, n_bootstrap=50).lower is not None


def test_more_data_gives_a_narrower_interval():
    y1, p1 = _data(n=80, seed=5, ties=False)
    y2, p2 = _data(n=2000, seed=5, ties=False)
    _, lo1, hi1 = auroc_with_ci(y1, p1, 300)
    _, lo2, hi2 = auroc_with_ci(y2, p2, 300)
    assert hi2 - lo2 < hi1 - lo1


def test_macro_micro_match_sklearn():
    rng = np.random.default_rng(0)
    Y = (rng.random((200, 4)) < [0.5, 0.3, 0.2, 0.1]).astype(int)
    P = 1 / (1 + np.exp(-(Y * 1.0 + rng.normal(0, 1, Y.shape))))
    out = macro_micro_auroc_ci(Y, P, n_bootstrap=200, seed=0)
    assert out["macro"].estimate == pytest.approx(roc_auc_score(Y, P, average="macro"), abs=1e-12)
    assert out["micro"].estimate == pytest.approx(roc_auc_score(Y, P, average="micro"), abs=1e-12)
    for key in ("macro", "micro"):
        assert out[key].lower < out[key].estimate < out[key].upper
        assert out[key].n_valid == 200


def test_macro_skips_a_class_without_positives_and_says_so():
    rng = np.random.default_rng(1)
    Y = (rng.random((150, 3)) < 0.4).astype(int)
    Y[:, 2] = 0
    P = rng.random(Y.shape)
    out = macro_micro_auroc_ci(Y, P, n_bootstrap=100)
    expected = np.mean([roc_auc_score(Y[:, c], P[:, c]) for c in (0, 1)])
    assert out["macro"].estimate == pytest.approx(expected, abs=1e-12)
    assert "2 of 3" in out["macro"].reason


def test_macro_ci_redraws_resamples_that_lose_a_rare_class():
    rng = np.random.default_rng(3)
    n = 150
    Y = (rng.random((n, 3)) < [0.4, 0.3, 0.0]).astype(int)
    Y[5, 2] = 1  # a finding with a single positive case...
    P = 1 / (1 + np.exp(-(Y * 1.0 + rng.normal(0, 1, Y.shape))))
    P[5, 2] = 0.0  # ...scored as the least likely case (AUROC 0 for that class)
    out = macro_micro_auroc_ci(Y, P, n_bootstrap=300, seed=0)["macro"]
    assert out.n_valid == 300 and "redrawn" in out.reason
    # every accepted resample contains the rare positive, so its AUROC (0) is always in the mean: the interval
    # is centred on the estimate rather than pushed up by resamples that silently dropped the class
    assert out.lower < out.estimate < out.upper
    assert out.upper - out.estimate < 0.1  # dropping the class would put resamples near 0.75 (estimate ~0.5)
    assert out.estimate == pytest.approx(np.mean([roc_auc_score(Y[:, c], P[:, c]) for c in range(3)]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_metrics_with_heavy_ties_and_degenerate_resamples(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 30)
    p = rng.integers(0, 4, 30) / 3.0  # only 4 distinct scores: many ties
    idx = case_indices(30, 60, rng)
    idx[0] = np.flatnonzero(y == 0)[0]  # a resample of one negative case only
    idx[1] = np.flatnonzero(y == 1)[0]  # one positive case only
    auc = resampled_auroc(y, p, idx)
    ap = resampled_average_precision(y, p, idx)
    assert np.isnan(auc[0]) and np.isnan(auc[1]) and np.isnan(ap[0]) and ap[1] == pytest.approx(1.0)
    np.testing.assert_allclose(auc[2:], [roc_auc_score(y[i], p[i]) for i in idx[2:]], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ap[2:], [average_precision_score(y[i], p[i]) for i in idx[2:]], rtol=0, atol=1e-12)


def test_micro_resampling_pools_cells_of_drawn_cases():
    rng = np.random.default_rng(4)
    Y = (rng.random((50, 3)) < 0.3).astype(int)
    P = np.round(rng.random((50, 3)), 1)
    idx = case_indices(50, 20, rng)
    ours = resampled_auroc(Y.reshape(-1), P.reshape(-1), idx, cells_per_case=3)
    ref = [roc_auc_score(Y[i].reshape(-1), P[i].reshape(-1)) for i in idx]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_chunked_bootstrap_equals_one_shot(monkeypatch):
    import radiolens.evaluate.bootstrap as bs

    y, p = _data(n=300, ties=False)
    whole = bs.bootstrap_average_precision(y, p, n_bootstrap=100, seed=1)
    monkeypatch.setattr(bs, "_CHUNK_ELEMENTS", 1000)  # forces chunks of 3 resamples
    assert bs.bootstrap_average_precision(y, p, n_bootstrap=100, seed=1) == whole
    Y = (np.random.default_rng(0).random((300, 3)) < 0.3).astype(int)
    P = np.random.default_rng(1).random((300, 3))
    monkeypatch.setattr(bs, "_CHUNK_ELEMENTS", 2_000_000)
    one = bs.macro_micro_auroc_ci(Y, P, n_bootstrap=50)
    monkeypatch.setattr(bs, "_CHUNK_ELEMENTS", 1000)
    assert bs.macro_micro_auroc_ci(Y, P, n_bootstrap=50) == one


def test_interval_coverage_on_a_known_auroc():
    """Binormal scores with unit variances and means 0 / d have AUROC = Phi(d / sqrt(2)); about 95 % of the
    stratified-bootstrap intervals from independent samples should contain it."""
    from scipy.stats import norm

    d = 1.0
    true_auc = norm.cdf(d / np.sqrt(2))
    rng = np.random.default_rng(123)
    hits, sims = 0, 300
    for s in range(sims):
        y = np.r_[np.zeros(120, int), np.ones(80, int)]
        p = rng.normal(0, 1, 200) + d * y
        _, lo, hi = auroc_with_ci(y, p, n_bootstrap=300, seed=s)
        hits += lo <= true_auc <= hi
    coverage = hits / sims
    assert 0.89 <= coverage <= 0.99, coverage  # binomial SE at 95 % over 300 runs is ~1.3 %


def test_paired_auroc_difference_matches_a_resample_loop_and_is_paired():
    from radiolens.evaluate.bootstrap import paired_auroc_difference, stratified_indices

    rng = np.random.default_rng(3)
    y = (rng.random(300) < 0.3).astype(int)
    p_a = y * 0.8 + rng.normal(0, 0.6, 300)
    p_b = p_a + y * 0.3 + rng.normal(0, 0.1, 300)  # b = a plus a little more signal: strongly correlated
    d = paired_auroc_difference(y, p_a, p_b, n_bootstrap=400, seed=5)
    idx = stratified_indices(y, 400, np.random.default_rng(5))
    loop = np.array([roc_auc_score(y[i], p_b[i]) - roc_auc_score(y[i], p_a[i]) for i in idx])
    lo, hi = np.percentile(loop, [2.5, 97.5])
    assert d.difference == pytest.approx(roc_auc_score(y, p_b) - roc_auc_score(y, p_a))
    assert (d.lower, d.upper) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    assert d.share_b_better == pytest.approx(np.mean(loop > 0))
    assert d.lower > 0  # the paired interval excludes 0 ...
    from radiolens.evaluate.bootstrap import bootstrap_auroc

    ia, ib = bootstrap_auroc(y, p_a, 400, 5), bootstrap_auroc(y, p_b, 400, 5)
    assert ia.upper > ib.lower  # ... although the two separate intervals overlap


def test_paired_auroc_difference_of_a_model_with_itself_is_exactly_zero():
    from radiolens.evaluate.bootstrap import paired_auroc_difference

    y = np.array([0, 1] * 20)
    p = np.linspace(0, 1, 40)
    d = paired_auroc_difference(y, p, p, n_bootstrap=100)
    assert (d.difference, d.lower, d.upper, d.share_b_better) == (0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="one entry per case"):
        paired_auroc_difference(y, p, p[:-1])
    with pytest.raises(ValueError, match="no positive"):
        paired_auroc_difference(np.zeros(40), p, p)


def test_paired_macro_auroc_difference_matches_a_resample_loop():
    from radiolens.evaluate.bootstrap import case_indices, paired_macro_auroc_difference

    rng = np.random.default_rng(0)
    Y = (rng.random((120, 3)) < [0.5, 0.2, 0.025]).astype(int)
    Pa = Y * 0.5 + rng.normal(0, 0.5, Y.shape)
    Pb = Y * 1.5 + rng.normal(0, 0.5, Y.shape)
    d = paired_macro_auroc_difference(Y, Pa, Pb, n_bootstrap=200, seed=2)
    loop = []
    for i in case_indices(120, 200, np.random.default_rng(2)):
        if any(len(set(Y[i, c])) < 2 for c in range(3)):
            continue  # a class without both outcomes: the resample is left out
        loop.append(np.mean([roc_auc_score(Y[i, c], Pb[i, c]) - roc_auc_score(Y[i, c], Pa[i, c]) for c in range(3)]))
    assert d.n_valid == len(loop) < 200
    lo, hi = np.percentile(loop, [2.5, 97.5])
    assert (d.lower, d.upper) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    macro = [np.mean([roc_auc_score(Y[:, c], P[:, c]) for c in range(3)]) for P in (Pa, Pb)]
    assert d.difference == pytest.approx(macro[1] - macro[0]) and d.lower > 0
