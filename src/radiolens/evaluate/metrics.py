"""Point metrics at a threshold, taken from scikit-learn (no hand-written formulas): a wrong sensitivity in
a clinical report is worse than a missing one, and scikit-learn's definitions are the reference readers
can check against."""

from __future__ import annotations

import numpy as np
from scipy.special import expit, softmax
from scipy.stats import binomtest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    multilabel_confusion_matrix,
    precision_score,
    recall_score,
)


def probabilities(logits: np.ndarray, task: str, temperature: float = 1.0) -> np.ndarray:
    """Logits (N, K) -> probabilities: sigmoid per output (binary, multilabel) or softmax (multiclass)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    return softmax(z, axis=1) if task == "multiclass" else expit(z)


def one_vs_rest(targets: np.ndarray, n_classes: int) -> np.ndarray:
    """Class indices (N,) -> (N, K) 0/1 indicators."""
    return np.eye(n_classes, dtype=np.int64)[np.asarray(targets, dtype=np.int64)]


def _none_if_nan(value: float) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value


def proportion_ci(successes: int, total: int, confidence: float = 0.95) -> list[float | None]:
    """Wilson score interval of a proportion (scipy); [None, None] when ``total`` is 0. Wilson rather than the
    normal approximation because sensitivities near 1 on small test sets are the normal case here."""
    if total <= 0:
        return [None, None]
    ci = binomtest(int(successes), int(total)).proportion_ci(confidence_level=confidence, method="wilson")
    return [float(ci.low), float(ci.high)]


def binary_rates(y, p, threshold: float) -> dict:
    """Sensitivity, specificity, PPV, NPV, F1 (and the 2x2 counts) of ``p >= threshold`` against 0/1 ``y``,
    with 95 % Wilson intervals for the four rates (``sensitivity_ci`` etc.).

    A rate whose denominator is zero (e.g. PPV when nothing is called positive) is None, not 0.
    """
    y = np.asarray(y).astype(np.int64).reshape(-1)
    pred = (np.asarray(p, dtype=np.float64).reshape(-1) >= threshold).astype(np.int64)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred, labels=[0, 1]).ravel())
    kw = {"zero_division": np.nan}
    return {
        "threshold": float(threshold),
        "sensitivity": _none_if_nan(recall_score(y, pred, pos_label=1, **kw)),
        "specificity": _none_if_nan(recall_score(y, pred, pos_label=0, **kw)),
        "ppv": _none_if_nan(precision_score(y, pred, pos_label=1, **kw)),
        "npv": _none_if_nan(precision_score(y, pred, pos_label=0, **kw)),
        "f1": _none_if_nan(f1_score(y, pred, pos_label=1, **kw)),
        "sensitivity_ci": proportion_ci(tp, tp + fn), "specificity_ci": proportion_ci(tn, tn + fp),
        "ppv_ci": proportion_ci(tp, tp + fp), "npv_ci": proportion_ci(tn, tn + fn),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "n_positive": tp + fn, "n_negative": tn + fp,
    }


def brier(y, p) -> float:
    """Brier score of 0/1 ``y`` against probabilities ``p`` (scikit-learn)."""
    return float(brier_score_loss(np.asarray(y).reshape(-1), np.asarray(p, dtype=np.float64).reshape(-1)))


def multiclass_brier(targets: np.ndarray, probs: np.ndarray) -> float:
    """Multi-class Brier score (mean over cases of the squared distance to the one-hot target, summed over
    classes), via scikit-learn's ``brier_score_loss`` on class indices."""
    k = probs.shape[1]
    # scikit-learn >= 1.7 takes the multiclass form; its value is the sum over classes (range 0..2).
    return float(brier_score_loss(np.asarray(targets), probs, labels=list(range(k))))


def per_class_confusion(Y: np.ndarray, pred: np.ndarray) -> list[dict]:
    """One 2x2 matrix per output (scikit-learn ``multilabel_confusion_matrix``) as tn/fp/fn/tp dicts."""
    mats = multilabel_confusion_matrix(np.asarray(Y), np.asarray(pred))
    return [{"tn": int(m[0, 0]), "fp": int(m[0, 1]), "fn": int(m[1, 0]), "tp": int(m[1, 1])} for m in mats]


def argmax_summary(targets: np.ndarray, probs: np.ndarray) -> dict:
    """Multi-class argmax decision: confusion matrix (rows = truth) plus accuracy *and* balanced accuracy,
    so accuracy never stands alone on an imbalanced set."""
    k = probs.shape[1]
    pred = probs.argmax(axis=1)
    cm = confusion_matrix(targets, pred, labels=list(range(k)))
    return {
        "confusion_matrix": cm.astype(int).tolist(),
        "accuracy": float(accuracy_score(targets, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(targets, pred)),
        "macro_f1": float(f1_score(targets, pred, average="macro", labels=list(range(k)), zero_division=0)),
    }
