"""Human-review triage: refer a case when the model is unsure or too close to its operating threshold.

Binary and multi-label models are judged per output against its threshold (``kind="threshold"``). A
multi-class model decides by argmax, so its "operating point" is the boundary between the two most likely
classes: it is referred when the top two probabilities are within the margin (``kind="top2_margin"``).

The rule's two knobs (margin around the threshold, maximum spread) are chosen on VALIDATION data to keep the
referral rate within a stated budget while minimising the error rate on the cases the model keeps. The fitted
rule is stored as a plain dict in ``bundle.info.triage`` and read back by the service.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from radiolens.errors import InputError

Kind = Literal["threshold", "top2_margin"]


def triage_kind(task: str) -> Kind:
    """The rule kind a model's task calls for: multi-class decides by argmax, the others per output threshold."""
    return "top2_margin" if task == "multiclass" else "threshold"


def certainty(probs: np.ndarray, thresholds, kind: Kind = "threshold") -> np.ndarray:
    """(N,) distance from the decision boundary: to the nearest threshold, or top-1 minus top-2 probability."""
    probs = np.asarray(probs, dtype=float).reshape(len(probs), -1)
    if kind == "top2_margin":
        if probs.shape[1] < 2:
            raise InputError("a top-two margin needs at least two class probabilities")
        top = np.sort(probs, axis=1)
        return top[:, -1] - top[:, -2]
    return np.abs(probs - np.asarray(thresholds, dtype=float)[None]).min(axis=1)


def decision_errors(probs: np.ndarray, y: np.ndarray, thresholds, kind: Kind = "threshold") -> np.ndarray:
    """(N,) bool: the model's decision is wrong. ``y``: class indices (N,) or one-hot (N, K) for top2_margin,
    0/1 per output otherwise (any wrong output makes the case wrong)."""
    probs = np.asarray(probs, dtype=float).reshape(len(probs), -1)
    if kind == "top2_margin":
        y = np.asarray(y)
        truth = y.argmax(axis=1) if y.ndim == 2 and y.shape[1] == probs.shape[1] else y.reshape(-1).astype(int)
        return probs.argmax(axis=1) != truth
    y = np.asarray(y, dtype=float).reshape(len(probs), -1)
    return ((probs >= np.asarray(thresholds, dtype=float)[None]) != (y > 0.5)).any(axis=1)


class TriageRule(BaseModel):
    thresholds: list[float]  # operating threshold per output (empty for top2_margin)
    class_names: list[str]
    kind: Kind = "threshold"
    margin: float = Field(0.05, ge=0.0, le=1.0)  # refer when |p - threshold| (or top-1 - top-2) < margin
    max_spread: float | None = None  # refer when spread (std over MC / ensemble passes) > this
    budget: float = Field(0.2, gt=0.0, le=1.0)  # target maximum referral fraction
    validation_referral_rate: float | None = None
    validation_kept_error_rate: float | None = None
    validation_n: int | None = None

    @property
    def n_outputs(self) -> int:
        return len(self.class_names) if self.kind == "top2_margin" else len(self.thresholds)

    def flag(self, prob: np.ndarray, spread: np.ndarray | None = None) -> tuple[bool, str]:
        """(refer?, reason in plain words) for one case's probabilities (one value per output)."""
        p = np.atleast_1d(np.asarray(prob, dtype=float))
        if p.shape[0] != self.n_outputs:
            raise InputError(f"expected {self.n_outputs} probabilities, got {p.shape[0]}")
        s = None if spread is None else np.atleast_1d(np.asarray(spread, dtype=float))
        reasons = []
        if self.kind == "top2_margin":
            order = np.argsort(-p, kind="stable")
            a, b = int(order[0]), int(order[1])
            if p[a] - p[b] < self.margin:
                reasons.append(f"top two classes {self.class_names[a]} {p[a]:.2f} and {self.class_names[b]} "
                               f"{p[b]:.2f} within {self.margin:.2f} of each other")
            if s is not None and self.max_spread is not None and s.max() > self.max_spread:
                k = int(np.argmax(s))
                reasons.append(f"{self.class_names[k]}: model uncertain (spread {s[k]:.2f} above "
                               f"{self.max_spread:.2f})")
        for k, (pk, t) in enumerate(zip(p, self.thresholds, strict=True) if self.kind == "threshold" else ()):
            name = self.class_names[k] if k < len(self.class_names) else f"output {k}"
            if abs(pk - t) < self.margin:
                reasons.append(f"{name}: probability {pk:.2f} within {self.margin:.2f} of the operating "
                               f"threshold {t:.2f}")
            if s is not None and self.max_spread is not None and s[k] > self.max_spread:
                reasons.append(f"{name}: model uncertain (spread {s[k]:.2f} above {self.max_spread:.2f})")
        if reasons:
            return True, "refer for human review: " + "; ".join(reasons)
        if self.kind == "top2_margin":
            return False, "no triage flag: confident, the top class clear of the next one"
        return False, "no triage flag: confident and away from the operating threshold"

    def refer_mask(self, probs: np.ndarray, spreads: np.ndarray | None = None) -> np.ndarray:
        probs = np.asarray(probs, dtype=float).reshape(len(probs), -1)
        near = certainty(probs, self.thresholds, self.kind) < self.margin
        if spreads is None or self.max_spread is None:
            return near
        return near | (np.asarray(spreads, dtype=float).reshape(len(probs), -1) > self.max_spread).any(axis=1)


def fit_triage_rule(probs: np.ndarray, y: np.ndarray, thresholds: list[float], class_names: list[str],
                    budget: float = 0.2, spreads: np.ndarray | None = None, kind: Kind = "threshold") -> TriageRule:
    """Grid-search margin (and max spread) on validation: referral <= budget, lowest error on kept cases.

    Hand-written because no library fits a selective-prediction rule to a referral budget; it is a small
    exhaustive search over candidate values taken from the validation data itself.
    """
    probs = np.asarray(probs, dtype=float).reshape(len(probs), -1)
    if len(probs) < 10:
        raise InputError("need at least 10 validation cases to fit a triage rule")
    if not 0 < budget <= 1:
        raise InputError("review budget must be in (0, 1]")
    t = [] if kind == "top2_margin" else [float(v) for v in thresholds]
    wrong = decision_errors(probs, y, t, kind)
    margins = np.unique(np.concatenate([[0.0], certainty(probs, t, kind)]))
    margins = margins[margins <= 1.0]
    spread_cands: list[float | None] = [None]
    if spreads is not None:
        sp = np.asarray(spreads, dtype=float).reshape(len(probs), -1).max(axis=1)
        spread_cands += list(np.quantile(sp, [0.8, 0.85, 0.9, 0.95, 0.99]))
    best = None
    for ms in spread_cands:
        for m in margins:
            rule = TriageRule(thresholds=t, class_names=class_names, kind=kind, margin=float(m),
                              max_spread=None if ms is None else float(ms), budget=budget)
            refer = rule.refer_mask(probs, spreads)
            rate = float(refer.mean())
            if rate > budget:
                continue
            err = float(wrong[~refer].mean()) if (~refer).any() else 0.0
            key = (err, rate)
            if best is None or key < best[0]:
                best = (key, rule, rate, err)
    assert best is not None  # margin 0 without spread refers nobody, always within budget
    _, rule, rate, err = best
    return rule.model_copy(update=dict(validation_referral_rate=rate, validation_kept_error_rate=err,
                                       validation_n=len(probs)))


def risk_coverage(probs: np.ndarray, y: np.ndarray, thresholds: list[float],
                  uncertainty: np.ndarray | None = None, kind: Kind = "threshold") -> dict[str, list[float] | float]:
    """Error rate on the kept cases as the least certain are referred first (coverage 1 -> 1/N).

    Certainty = distance to the threshold, or the top-two margin (minus the spread when given). Returns
    coverage, risk and the area under the risk-coverage curve (AURC, lower is better).
    """
    probs = np.asarray(probs, dtype=float).reshape(len(probs), -1)
    score = certainty(probs, thresholds, kind)
    if uncertainty is not None:
        score = score - np.asarray(uncertainty, dtype=float).reshape(len(probs), -1).max(axis=1)
    wrong = decision_errors(probs, y, thresholds, kind).astype(float)
    order = np.argsort(-score, kind="stable")
    n = len(order)
    kept = np.arange(1, n + 1)
    risk = np.cumsum(wrong[order]) / kept
    coverage = kept / n
    return {"coverage": coverage.tolist(), "risk": risk.tolist(), "aurc": float(np.mean(risk))}
