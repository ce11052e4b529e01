"""Bootstrap confidence intervals for ranking metrics (AUROC, average precision).

Resampling is over cases. Per-class intervals use a *stratified* bootstrap (positives and negatives are
resampled separately, keeping their counts), so every resample holds both classes and the interval of a rare
finding is not biased by silently dropping resamples with no positive. Macro/micro intervals resample whole
cases jointly (all outputs together, keeping the correlation between classes). For the macro mean, a resample
in which some class (defined on the full set) has a single label value is rejected and redrawn: dropping that
class from the resample's mean instead would change which classes are averaged and bias the interval (on the
NIH test split, 70 % of plain resamples lose a one-positive finding, and the interval shifted upwards). The
rejection rate is reported; with very rare classes the interval is conditional on every class being present.

Point estimates always come from scikit-learn. Inside the bootstrap we need thousands of AUROCs and APs; one
``roc_auc_score`` call costs ~2 ms here (a minute for 14 findings x 1000 resamples) and torchmetrics loops over
resamples in Python (36 ms each at N = 20,000), so resampled values are computed here, vectorised: a resample
is the original cases with multiplicities, so the cases are sorted by score ONCE and each resample reduces to
per-tie-group counts of positives and negatives, from which AUROC (Mann-Whitney, ties 1/2) and AP
(scikit-learn's step sum) follow without sorting again. Tests check both against ``roc_auc_score`` /
``average_precision_score`` on every resample, with heavy ties (|diff| < 1e-12).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

ALPHA = 0.05
#: Below this many positive (or negative) cases a bootstrap interval mostly reflects the other class's
#: variability (with one positive, every stratified resample holds that same case), so it comes out misleadingly
#: narrow; such intervals are withheld (estimate kept, bounds None, reason says why) rather than shown.
MIN_CASES_FOR_CI = 5
_CHUNK_ELEMENTS = 2_000_000
#: Give up redrawing macro resamples after this many times n_bootstrap draws (then report fewer, flagged).
MAX_DRAW_FACTOR = 50


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile-bootstrap interval; ``estimate`` is None when undefined."""

    estimate: float | None
    lower: float | None = None
    upper: float | None = None
    n_valid: int = 0  # resamples that gave a defined value
    method: str = ""
    reason: str | None = None  # why the estimate or the interval is missing

    def to_dict(self) -> dict:
        return asdict(self)

    def as_tuple(self) -> tuple[float | None, float | None, float | None]:
        return self.estimate, self.lower, self.upper


def _single_class_reason(y: np.ndarray) -> str | None:
    n_pos = int(np.sum(y == 1))
    if n_pos == 0:
        return "no positive cases"
    if n_pos == len(y):
        return "no negative cases"
    return None


def stratified_indices(y: np.ndarray, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """(B, N) case indices; each row resamples positives among positives and negatives among negatives."""
    pos = np.flatnonzero(y == 1)
    neg = np.flatnonzero(y != 1)
    rows_pos = pos[rng.integers(0, len(pos), size=(n_bootstrap, len(pos)))]
    rows_neg = neg[rng.integers(0, len(neg), size=(n_bootstrap, len(neg)))]
    return np.concatenate([rows_pos, rows_neg], axis=1)


def case_indices(n: int, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """(B, N) plain case-resampling indices."""
    return rng.integers(0, n, size=(n_bootstrap, n))


def _tie_groups(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cases sorted by descending score, their labels, and where each run of tied scores starts."""
    order = np.argsort(-p, kind="stable")
    scores = p[order]
    starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])
    return order, (y[order] == 1), starts


def _group_weights(y, p, idx: np.ndarray, cells_per_case: int = 1):
    """For every resample (row of ``idx``), the positive and negative case counts per tie group, in descending
    score order: (B, G) arrays. A resample is the original cases with multiplicities, so the sort is done once."""
    order, ys, starts = _tie_groups(np.asarray(y).reshape(-1), np.asarray(p, dtype=np.float64).reshape(-1))
    n_cases = idx.shape[1]
    step = max(1, _CHUNK_ELEMENTS // max(n_cases * cells_per_case, 1))
    for i in range(0, len(idx), step):
        chunk = idx[i:i + step]
        offsets = (np.arange(len(chunk)) * n_cases)[:, None]
        counts = np.bincount((chunk + offsets).ravel(), minlength=len(chunk) * n_cases).reshape(len(chunk), n_cases)
        if cells_per_case > 1:  # pooled (case, class) cells: every cell of a drawn case is drawn with it
            counts = np.repeat(counts, cells_per_case, axis=1)
        w = counts[:, order].astype(np.float64)
        yield np.add.reduceat(w * ys, starts, axis=1), np.add.reduceat(w * ~ys, starts, axis=1)


def resampled_auroc(y, p, idx: np.ndarray, cells_per_case: int = 1) -> np.ndarray:
    """AUROC of every resample ``idx`` (B, N) of (y, p); NaN where a resample has a single class.

    Each negative scores the positives ranked above it plus 1/2 per tied positive (the Mann-Whitney form of
    roc_auc_score), summed per tie group with the resample's multiplicities."""
    out = []
    for pos, neg in _group_weights(y, p, idx, cells_per_case):
        pos_above = np.cumsum(pos, axis=1) - pos
        n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = (neg * (pos_above + 0.5 * pos)).sum(axis=1) / (n_pos * n_neg)
        auc[(n_pos == 0) | (n_neg == 0)] = np.nan
        out.append(auc)
    return np.concatenate(out)


def resampled_average_precision(y, p, idx: np.ndarray) -> np.ndarray:
    """Average precision of every resample; NaN where a resample has no positive.

    scikit-learn's definition, AP = sum over distinct thresholds of (R_n - R_(n-1)) * P_n, with tied scores one
    threshold: per tie group, (positives in the group / all positives) x precision at that group."""
    out = []
    for pos, neg in _group_weights(y, p, idx):
        tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
        n_pos = tp[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
            ap = (pos * precision).sum(axis=1) / n_pos
        ap[n_pos == 0] = np.nan
        out.append(ap)
    return np.concatenate(out)


def percentile_interval(values: np.ndarray, alpha: float = ALPHA) -> tuple[float | None, float | None, int]:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None, None, 0
    lo, hi = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi), int(values.size)


def _ranking_ci(kind: str, y, p, n_bootstrap: int, seed: int, alpha: float) -> Interval:
    y = np.asarray(y).astype(np.int64).reshape(-1)
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    reason = _single_class_reason(y)
    if reason is not None:
        return Interval(None, reason=f"undefined: {reason} in this set")
    if kind == "auroc":
        estimate = float(roc_auc_score(y, p))
    else:
        estimate = float(average_precision_score(y, p))
    if n_bootstrap <= 0:
        return Interval(estimate, method="none", reason="no bootstrap requested")
    n_pos = int(y.sum())
    small = min(n_pos, len(y) - n_pos)
    if small < MIN_CASES_FOR_CI:
        which = "positive" if n_pos <= len(y) - n_pos else "negative"
        return Interval(estimate, method="none",
                        reason=f"no interval: only {small} {which} case(s), at least {MIN_CASES_FOR_CI} needed")
    idx = stratified_indices(y, n_bootstrap, np.random.default_rng(seed))
    rows = resampled_auroc(y, p, idx) if kind == "auroc" else resampled_average_precision(y, p, idx)
    lo, hi, n_valid = percentile_interval(rows, alpha)
    return Interval(estimate, lo, hi, n_valid, method=f"stratified percentile bootstrap, {n_bootstrap} resamples")


def bootstrap_auroc(y, p, n_bootstrap: int = 1000, seed: int = 0, alpha: float = ALPHA) -> Interval:
    """AUROC (scikit-learn) with a stratified percentile-bootstrap interval; undefined (None + reason) if
    ``y`` holds a single class."""
    return _ranking_ci("auroc", y, p, n_bootstrap, seed, alpha)


def bootstrap_average_precision(y, p, n_bootstrap: int = 1000, seed: int = 0, alpha: float = ALPHA) -> Interval:
    """Average precision (scikit-learn) with a stratified percentile-bootstrap interval."""
    return _ranking_ci("ap", y, p, n_bootstrap, seed, alpha)


def auroc_with_ci(y, p, n_bootstrap: int = 1000, seed: int = 0, alpha: float = ALPHA):
    """``(auroc, lower, upper)``; all None when AUROC is undefined (one class only). See bootstrap_auroc."""
    return bootstrap_auroc(y, p, n_bootstrap, seed, alpha).as_tuple()


def average_precision_with_ci(y, p, n_bootstrap: int = 1000, seed: int = 0, alpha: float = ALPHA):
    """``(ap, lower, upper)``; all None when there is no positive case."""
    return bootstrap_average_precision(y, p, n_bootstrap, seed, alpha).as_tuple()


def macro_micro_auroc_ci(Y: np.ndarray, P: np.ndarray, n_bootstrap: int = 1000, seed: int = 0,
                         alpha: float = ALPHA) -> dict[str, Interval]:
    """Macro (mean over classes defined in the set) and micro (all cells pooled) AUROC of (N, K) one-hot /
    multilabel targets ``Y`` and scores ``P``, with joint case-resampling intervals."""
    Y = np.asarray(Y).astype(np.int64)
    P = np.asarray(P, dtype=np.float64)
    n, k = Y.shape
    defined = [c for c in range(k) if _single_class_reason(Y[:, c]) is None]
    out: dict[str, Interval] = {}
    if not defined:
        out["macro"] = Interval(None, reason="undefined: no class has both positive and negative cases")
    else:
        macro = float(np.mean([roc_auc_score(Y[:, c], P[:, c]) for c in defined]))
        note = None if len(defined) == k else f"mean over the {len(defined)} of {k} classes where AUROC is defined"
        out["macro"] = Interval(macro, reason=note)
    micro_reason = _single_class_reason(Y.reshape(-1))
    out["micro"] = (Interval(float(roc_auc_score(Y.reshape(-1), P.reshape(-1))))
                    if micro_reason is None else Interval(None, reason=f"undefined: {micro_reason}"))
    if n_bootstrap <= 0:
        return out
    rng = np.random.default_rng(seed)
    idx = case_indices(n, n_bootstrap, rng)
    method = f"case-resampling percentile bootstrap, {n_bootstrap} resamples"
    if out["macro"].estimate is not None:
        accepted, drawn, batch = [], 0, idx
        while sum(len(a) for a in accepted) < n_bootstrap and drawn < MAX_DRAW_FACTOR * n_bootstrap:
            drawn += len(batch)
            positives = Y[:, defined][batch].sum(axis=1)  # (B, classes) positives per resample
            accepted.append(batch[((positives > 0) & (positives < n)).all(axis=1)])
            batch = case_indices(n, n_bootstrap, rng)
        macro_idx = np.concatenate(accepted)[:n_bootstrap]
        notes = [out["macro"].reason] if out["macro"].reason else []
        lo = hi = None
        n_valid = len(macro_idx)
        if n_valid:
            per_class = np.stack([resampled_auroc(Y[:, c], P[:, c], macro_idx) for c in defined], axis=1)
            lo, hi, n_valid = percentile_interval(per_class.mean(axis=1), alpha)
        rejected = 1.0 - sum(len(a) for a in accepted) / drawn
        if rejected > 0:
            notes.append(f"{100 * rejected:.0f} % of resamples lacked a positive or negative case of some class and "
                         "were redrawn")
        if n_valid < n_bootstrap:
            notes.append(f"only {n_valid} valid resamples after {drawn} draws: the interval is not reliable")
        out["macro"] = Interval(out["macro"].estimate, lo, hi, n_valid,
                                method + (", rejecting resamples with a missing class" if rejected > 0 else ""),
                                "; ".join(notes) or None)
    if out["micro"].estimate is not None:
        micro_rows = resampled_auroc(Y.reshape(-1), P.reshape(-1), idx, cells_per_case=k)
        lo, hi, n_valid = percentile_interval(micro_rows, alpha)
        out["micro"] = Interval(out["micro"].estimate, lo, hi, n_valid, method)
    return out


@dataclass(frozen=True)
class PairedDifference:
    """AUROC(b) - AUROC(a) on the same cases, with a paired percentile-bootstrap interval."""

    auroc_a: float
    auroc_b: float
    difference: float
    lower: float | None
    upper: float | None
    share_b_better: float | None  #: fraction of resamples in which b's AUROC exceeds a's
    n_valid: int
    method: str

    def to_dict(self) -> dict:
        return asdict(self)


def paired_auroc_difference(y, p_a, p_b, n_bootstrap: int = 1000, seed: int = 0,
                            alpha: float = ALPHA) -> PairedDifference:
    """Compare two models scored on the SAME cases: both AUROCs are computed on every (stratified) resample
    of the cases, so the interval of the difference keeps their correlation. Two models' separate intervals
    overlap far more often than their paired difference crosses zero; this is the test to read when asking
    whether b beats a on this test set."""
    y = np.asarray(y).astype(np.int64).reshape(-1)
    p_a = np.asarray(p_a, dtype=np.float64).reshape(-1)
    p_b = np.asarray(p_b, dtype=np.float64).reshape(-1)
    if not len(y) == len(p_a) == len(p_b):
        raise ValueError("labels and both score vectors must have one entry per case")
    reason = _single_class_reason(y)
    if reason is not None:
        raise ValueError(f"AUROC is undefined: {reason}")
    a, b = float(roc_auc_score(y, p_a)), float(roc_auc_score(y, p_b))
    if n_bootstrap <= 0:
        return PairedDifference(a, b, b - a, None, None, None, 0, "none")
    idx = stratified_indices(y, n_bootstrap, np.random.default_rng(seed))
    diff = resampled_auroc(y, p_b, idx) - resampled_auroc(y, p_a, idx)
    lo, hi, n_valid = percentile_interval(diff, alpha)
    return PairedDifference(a, b, b - a, lo, hi, float(np.mean(diff > 0)), n_valid,
                            f"paired stratified percentile bootstrap, {n_bootstrap} resamples")


def paired_macro_auroc_difference(Y, P_a, P_b, n_bootstrap: int = 1000, seed: int = 0,
                                  alpha: float = ALPHA) -> PairedDifference:
    """Macro AUROC(b) - macro AUROC(a) for (N, K) multi-label / one-hot targets, both models scored on the
    same cases. The macro mean is over the classes with both outcomes in the full set; cases are resampled
    jointly and a resample in which one of those classes has a single outcome is left out (``n_valid``
    counts the rest), as in :func:`macro_micro_auroc_ci`."""
    Y = np.asarray(Y).astype(np.int64)
    P_a, P_b = np.asarray(P_a, dtype=np.float64), np.asarray(P_b, dtype=np.float64)
    if Y.ndim != 2 or P_a.shape != Y.shape or P_b.shape != Y.shape:
        raise ValueError("targets and both score arrays must be (cases, classes) of one shape")
    defined = [c for c in range(Y.shape[1]) if _single_class_reason(Y[:, c]) is None]
    if not defined:
        raise ValueError("macro AUROC is undefined: no class has both outcomes")
    a = float(np.mean([roc_auc_score(Y[:, c], P_a[:, c]) for c in defined]))
    b = float(np.mean([roc_auc_score(Y[:, c], P_b[:, c]) for c in defined]))
    if n_bootstrap <= 0:
        return PairedDifference(a, b, b - a, None, None, None, 0, "none")
    idx = case_indices(len(Y), n_bootstrap, np.random.default_rng(seed))
    diff = np.mean([resampled_auroc(Y[:, c], P_b[:, c], idx) - resampled_auroc(Y[:, c], P_a[:, c], idx)
                    for c in defined], axis=0)  # NaN wherever a class lost an outcome in that resample
    lo, hi, n_valid = percentile_interval(diff, alpha)
    valid = diff[np.isfinite(diff)]
    return PairedDifference(a, b, b - a, lo, hi, float(np.mean(valid > 0)) if valid.size else None, n_valid,
                            f"paired case-resampling percentile bootstrap, {n_bootstrap} resamples "
                            "(resamples missing an outcome of a class left out)")
