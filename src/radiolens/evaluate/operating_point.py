"""Choosing a decision threshold on the VALIDATION set and only then applying it to test.

Picking the threshold on test and reporting test sensitivity/specificity at it is optimistic (the threshold is
fitted to the very cases it is judged on); this module only ever sees validation scores.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve

from radiolens.evaluate.inputs import parse_operating_point

DEFAULT_THRESHOLD = 0.5


def choose_threshold(y_val, p_val, rule: str = "youden") -> float:
    """The threshold on ``p_val`` (positive when ``p >= threshold``) chosen by ``rule``; see threshold_choice,
    which also returns the validation sensitivity/specificity and any fallback."""
    return float(threshold_choice(y_val, p_val, rule)["threshold"])


def threshold_choice(y_val, p_val, rule: str = "youden") -> dict:
    """Threshold on ``p_val`` (positive when ``p >= threshold``) by ``rule``:

    - ``"youden"``: maximises sensitivity + specificity - 1 on validation;
    - ``"sensitivity:0.90"``: the highest threshold whose validation sensitivity is at least 0.90 (so the best
      specificity that keeps that sensitivity);
    - ``"specificity:0.95"``: the lowest threshold whose validation specificity is at least 0.95.

    Returns ``{"threshold", "rule", "val_sensitivity", "val_specificity", "fallback"}``. When validation has a
    single class the rule cannot be applied: the threshold falls back to 0.5 and ``fallback`` says why.
    Raises OperatingPointError for an unknown rule.
    """
    kind, target = parse_operating_point(rule)
    y = np.asarray(y_val).astype(np.int64).reshape(-1)
    p = np.asarray(p_val, dtype=np.float64).reshape(-1)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        missing = "positive" if n_pos == 0 else "negative"
        return {"threshold": DEFAULT_THRESHOLD, "rule": rule, "val_sensitivity": None, "val_specificity": None,
                "fallback": f"validation has no {missing} case: threshold fixed at {DEFAULT_THRESHOLD}"}
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
    # roc_curve's first point is (0, 0) at threshold +inf ("call nothing positive"); never return that.
    fpr, tpr, thr = fpr[1:], tpr[1:], thr[1:]
    if kind == "youden":
        i = int(np.argmax(tpr - fpr))
    elif kind == "sensitivity":
        i = int(np.flatnonzero(tpr >= target - 1e-12)[0])  # tpr is non-decreasing; last point has tpr = 1
    else:
        ok = np.flatnonzero(1.0 - fpr >= target - 1e-12)
        i = int(ok[-1]) if ok.size else 0
    fallback = None
    if kind == "specificity" and 1.0 - fpr[i] < target - 1e-12:
        fallback = f"no threshold reaches specificity {target} on validation: the highest score is used"
    return {"threshold": float(thr[i]), "rule": rule, "val_sensitivity": float(tpr[i]),
            "val_specificity": float(1.0 - fpr[i]), "fallback": fallback}
