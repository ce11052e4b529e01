"""Drift tests of a window of production observations against the validation baseline.

Each signal is judged by the test that fits it, with false alarms controlled on small windows:
- continuous signals (calibrated probability per class, per-image intensity statistics, size, pixel
  spacing, the gate's out-of-distribution score): two-sample Kolmogorov-Smirnov (scipy), Bonferroni-
  corrected over all of them, so the family-wise false-alarm rate per window stays at ``ks_alpha``; the
  population stability index (PSI) is reported beside each as the size of the shift;
- categorical header fields and the pooled intensity histogram: PSI against ``psi_threshold``;
- the model embedding (PCA-projected): kernel maximum mean discrepancy with a permutation test;
- the gate's rejection rate: one-sided binomial test against the rate measured on validation;
- reader feedback: disagreement rate against the validation error rate plus a margin.

A window with fewer than ``min_window`` predictions is "insufficient_data": never drift, never no drift.
PSI and the MMD permutation test are a few lines each; the libraries that ship them (alibi-detect,
evidently, nannyml) would pull in TensorFlow or large dependency trees for that.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps

from radiolens.monitor.config import DriftConfig
from radiolens.monitor.gate import OK
from radiolens.monitor.observe import HEADER_FIELDS, IMAGE_STATS, header_code
from radiolens.monitor.profile import MonitoringProfile

OK_STATUS, DRIFT, INSUFFICIENT = "ok", "drift", "insufficient_data"
_MIN_REFERENCE = 20
_MMD_MAX_REFERENCE = 300


# ---------------------------------------------------------------------------------------------- statistics
def psi_from_counts(ref_counts: np.ndarray, cur_counts: np.ndarray, smoothing: float = 0.5) -> float:
    """Population stability index, sum((q - p) * ln(q / p)), with additive smoothing of empty bins."""
    ref = np.asarray(ref_counts, dtype=np.float64) + smoothing
    cur = np.asarray(cur_counts, dtype=np.float64) + smoothing
    p, q = ref / ref.sum(), cur / cur.sum()
    return float(np.sum((q - p) * np.log(q / p)))


def psi_continuous(ref: np.ndarray, cur: np.ndarray, bins: int = 10) -> float:
    """PSI over bins at the reference deciles (ties merged)."""
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_c = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1)
    cur_c = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1)
    return psi_from_counts(ref_c, cur_c)


def psi_categorical(ref: list[str], cur: list[str]) -> float:
    cats = sorted(set(ref) | set(cur))
    index = {c: i for i, c in enumerate(cats)}
    ref_c = np.bincount([index[c] for c in ref], minlength=len(cats))
    cur_c = np.bincount([index[c] for c in cur], minlength=len(cats))
    return psi_from_counts(ref_c, cur_c)


def psi_distributions(ref: np.ndarray, cur: np.ndarray, floor: float = 1e-4) -> float:
    """PSI of two (already normalised) histograms, e.g. pooled intensity histograms."""
    p = np.maximum(np.asarray(ref, dtype=np.float64), floor)
    q = np.maximum(np.asarray(cur, dtype=np.float64), floor)
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum((q - p) * np.log(q / p)))


def mmd_permutation_test(ref: np.ndarray, cur: np.ndarray, permutations: int = 200,
                         seed: int = 0) -> tuple[float, float]:
    """Unbiased MMD^2 with a Gaussian kernel (median-distance bandwidth) and its permutation p-value."""
    from sklearn.metrics.pairwise import euclidean_distances

    x = np.vstack([ref, cur]).astype(np.float64)
    n = len(ref)
    d2 = euclidean_distances(x, squared=True)
    med = np.median(d2[np.triu_indices(len(x), 1)])
    k = np.exp(-d2 / max(med, 1e-12))
    np.fill_diagonal(k, 0.0)

    m, c = n, len(x) - n

    def mmd2(order: np.ndarray) -> float:
        a = np.zeros(len(x))
        a[order[:n]] = 1.0  # indicator of the "reference" side under this labelling
        b = 1.0 - a
        ka = k @ a
        return float(a @ ka / (m * (m - 1)) + b @ (k @ b) / (c * (c - 1)) - 2 * (b @ ka) / (m * c))

    observed = mmd2(np.arange(len(x)))
    rng = np.random.default_rng(seed)
    null = np.array([mmd2(rng.permutation(len(x))) for _ in range(permutations)])
    return observed, float((1 + np.sum(null >= observed)) / (1 + permutations))


# ---------------------------------------------------------------------------------------------- results
@dataclass
class SignalResult:
    name: str
    test: str  # "ks" | "psi" | "mmd" | "binomial" | "rate"
    status: str  # OK_STATUS | DRIFT | INSUFFICIENT
    statistic: float | None = None
    p_value: float | None = None
    limit: float | None = None  # p < limit (tests) or statistic > limit (psi, rate) means drift
    psi: float | None = None  # effect size beside a KS test
    n_window: int = 0
    n_reference: int = 0
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("statistic", "p_value", "limit", "psi"):
            if out[key] is not None:
                out[key] = float(f"{out[key]:.6g}")
        return out


@dataclass
class WindowReport:
    status: str
    n: int
    signals: list[SignalResult] = field(default_factory=list)
    first_id: str | None = None
    last_id: str | None = None
    first_at: str | None = None
    last_at: str | None = None
    reason: str = ""

    @property
    def drifted(self) -> list[SignalResult]:
        return [s for s in self.signals if s.status == DRIFT]

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "n": self.n, "reason": self.reason, "first_id": self.first_id,
                "last_id": self.last_id, "first_at": self.first_at, "last_at": self.last_at,
                "drifted": [s.name for s in self.drifted], "signals": [s.as_dict() for s in self.signals]}


# ---------------------------------------------------------------------------------------------- the window
def _values(obs: list[dict[str, Any]], key: str) -> np.ndarray:
    kind, _, name = key.partition(":")
    out = []
    for o in obs:
        if kind == "probability":
            v = o["probabilities"][int(name)] if int(name) < len(o["probabilities"]) else None
        elif kind == "image":
            v = o["stats"].get(name)
        else:
            v = o.get(kind)
        if v is not None:
            out.append(float(v))
    return np.asarray(out, dtype=np.float64)


def evaluate_window(profile: MonitoringProfile, window: list[dict[str, Any]], cfg: DriftConfig,
                    feedback: tuple[int, int] = (0, 0), seed: int = 0) -> WindowReport:
    """Compare ``window`` (observations, oldest first) with the profile's reference.

    ``feedback`` = (answers, disagreements) of readers on the window's predictions.
    """
    n = len(window)
    if n < cfg.min_window:
        return WindowReport(INSUFFICIENT, n, reason=f"{n} predictions in the window, fewer than the {cfg.min_window} "
                            "needed to judge drift")
    signals: list[SignalResult] = []
    ref_all, ref_cal = profile.reference_for(False), profile.reference_for(True)

    # continuous signals: KS, Bonferroni over those that can be tested
    continuous = [(f"probability:{i}", f"probability:{c}", False) for i, c in enumerate(profile.class_names)]
    continuous += [(f"image:{s}", f"image:{s}", False) for s in IMAGE_STATS]
    continuous += [("ood_score", "ood_score", True)]
    tested: list[tuple[SignalResult, float]] = []
    for key, name, emb_based in continuous:
        ref, cur = _values(ref_cal if emb_based else ref_all, key), _values(window, key)
        if len(cur) < cfg.min_window or len(ref) < _MIN_REFERENCE:
            signals.append(SignalResult(name, "ks", INSUFFICIENT, n_window=len(cur), n_reference=len(ref),
                                        detail="too few values in the window or the baseline"))
            continue
        ks = sps.ks_2samp(ref, cur)
        res = SignalResult(name, "ks", OK_STATUS, statistic=float(ks.statistic), p_value=float(ks.pvalue),
                           psi=psi_continuous(ref, cur), n_window=len(cur), n_reference=len(ref))
        signals.append(res)
        tested.append((res, float(ks.pvalue)))
    if tested:
        limit = cfg.ks_alpha / len(tested)
        for res, p in tested:
            res.limit = limit
            if p < limit:
                res.status = DRIFT
                res.detail = f"distribution differs from validation (KS p={p:.2g} < {limit:.2g})"

    # categorical header fields and the pooled intensity histogram: PSI
    for fname in HEADER_FIELDS:
        ref = [header_code(fname, o["header"].get(fname)) for o in ref_all]
        cur = [header_code(fname, o["header"].get(fname)) for o in window]
        value = psi_categorical(ref, cur)
        new = sorted(set(cur) - set(ref))
        status = DRIFT if value > cfg.psi_threshold else OK_STATUS
        signals.append(SignalResult(f"header:{fname}", "psi", status, statistic=value, limit=cfg.psi_threshold,
                                    n_window=len(cur), n_reference=len(ref),
                                    detail=(f"values not seen in validation: {', '.join(new[:5])}" if new else "")))
    hist_ref = np.mean([o["histogram"] for o in ref_all], axis=0)
    hist_cur = np.mean([o["histogram"] for o in window], axis=0)
    value = psi_distributions(hist_ref, hist_cur)
    signals.append(SignalResult("intensity_histogram", "psi", DRIFT if value > cfg.psi_threshold else OK_STATUS,
                                statistic=value, limit=cfg.psi_threshold, n_window=n, n_reference=len(ref_all)))

    # the model embedding: MMD permutation test against the calibration half
    ref_emb = np.asarray([o["embedding"] for o in ref_cal if o.get("embedding") is not None], dtype=np.float64)
    cur_emb = np.asarray([o["embedding"] for o in window if o.get("embedding") is not None], dtype=np.float64)
    if len(cur_emb) < cfg.min_window or len(ref_emb) < _MIN_REFERENCE:
        signals.append(SignalResult("embedding", "mmd", INSUFFICIENT, n_window=len(cur_emb),
                                    n_reference=len(ref_emb), detail="too few embeddings"))
    else:
        if len(ref_emb) > _MMD_MAX_REFERENCE:
            ref_emb = ref_emb[np.random.default_rng(seed).choice(len(ref_emb), _MMD_MAX_REFERENCE, replace=False)]
        stat, p = mmd_permutation_test(ref_emb, cur_emb, cfg.mmd_permutations, seed)
        signals.append(SignalResult("embedding", "mmd", DRIFT if p < cfg.mmd_alpha else OK_STATUS, statistic=stat,
                                    p_value=p, limit=cfg.mmd_alpha, n_window=len(cur_emb), n_reference=len(ref_emb),
                                    detail="model features differ from validation" if p < cfg.mmd_alpha else ""))

    # the gate's rejection rate, against the upper 95% bound of the rate measured on the calibration half:
    # that rate is itself an estimate from a few hundred images, and testing against its point value turns
    # its sampling error into false alarms
    rejected = sum(1 for o in window if o.get("status") != OK)
    n_cal = max(len(ref_cal), 1)
    k_cal = int(round(profile.expected_rejection_rate * n_cal))
    p0 = float(sps.binomtest(k_cal, n_cal).proportion_ci(confidence_level=0.90, method="exact").high)
    test = sps.binomtest(rejected, n, p0, alternative="greater")
    signals.append(SignalResult("ood_rate", "binomial", DRIFT if test.pvalue < cfg.ood_rate_alpha else OK_STATUS,
                                statistic=rejected / n, p_value=float(test.pvalue), limit=cfg.ood_rate_alpha,
                                n_window=n, n_reference=len(ref_cal),
                                detail=f"{rejected} of {n} inputs rejected by the gate (validation rate "
                                f"{profile.expected_rejection_rate:.3f}, upper bound {p0:.3f})"))

    # reader feedback
    answers, disagreements = feedback
    if profile.expected_error_rate is None:
        signals.append(SignalResult("disagreement", "rate", INSUFFICIENT, n_window=answers,
                                    detail="the baseline has no validation error rate (no labels given)"))
    elif answers < cfg.min_feedback:
        signals.append(SignalResult("disagreement", "rate", INSUFFICIENT, n_window=answers,
                                    statistic=(disagreements / answers) if answers else None,
                                    detail=f"{answers} feedback answers, fewer than {cfg.min_feedback}"))
    else:
        rate, lim = disagreements / answers, profile.expected_error_rate + cfg.disagreement_margin
        signals.append(SignalResult("disagreement", "rate", DRIFT if rate > lim else OK_STATUS, statistic=rate,
                                    limit=lim, n_window=answers,
                                    detail=f"readers disagreed with {disagreements} of {answers} decisions"))

    drifted = [s.name for s in signals if s.status == DRIFT]
    status = DRIFT if drifted else OK_STATUS
    reason = ("drift in: " + ", ".join(drifted)) if drifted else "no signal differs from the validation baseline"
    return WindowReport(status, n, signals, reason=reason)
