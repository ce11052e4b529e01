"""Reading training curves in plain words: is the model over-fitting, under-fitting, still improving?

There is no library for this judgement; the rules below are deliberately simple and stated in the output so
a reader can disagree with them:

- over-fitting from epoch k: validation loss reached its minimum at epoch k, then rose by more than
  ``rise_tol`` (relative) by the last epoch while training loss kept falling;
- under-fitting: training loss fell by less than ``flat_tol`` (relative) from the first to the last epoch, or
  the best validation AUROC stayed below 0.6 (barely better than chance);
- not converged: validation loss (or AUROC) was still improving in the last epoch (more epochs may help);
- otherwise: a reasonable fit, with the generalisation gap (val loss / train loss at the best epoch) stated.
"""

from __future__ import annotations

import math
from typing import Any

RISE_TOL = 0.10
FLAT_TOL = 0.05
CHANCE_AUROC = 0.6


def _series(history: list[dict], key: str) -> list[tuple[int, float]]:
    out = []
    for i, row in enumerate(history):
        value = row.get(key)
        if value is None:
            continue
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            out.append((int(row.get("epoch", i)), value))
    return out


def diagnose_training(history: list[dict] | None, rise_tol: float = RISE_TOL, flat_tol: float = FLAT_TOL) -> dict:
    """``{"verdict": "overfitting"|"underfitting"|"not_converged"|"good_fit"|"unknown", "overfit_from_epoch",
    "best_epoch", "message", "details": [...]}``; ``history`` is a list of per-epoch dicts with any of
    ``epoch, train_loss, val_loss, val_auroc, lr``."""
    result: dict[str, Any] = {"verdict": "unknown", "overfit_from_epoch": None, "best_epoch": None,
                              "message": "", "details": []}
    if not history:
        result["message"] = "No training history was given, so over/under-fitting cannot be judged."
        return result
    train = _series(history, "train_loss")
    val = _series(history, "val_loss")
    auroc = _series(history, "val_auroc")
    details: list[str] = result["details"]
    if len(train) < 2 and len(val) < 2:
        result["message"] = (f"Only {len(history)} epoch(s) with losses were recorded; at least two are needed "
                             "to judge the training curves.")
        return result

    best_auroc = max(auroc, key=lambda e: e[1]) if auroc else None
    if best_auroc is not None:
        result["best_epoch"] = best_auroc[0]
        details.append(f"Best validation AUROC {best_auroc[1]:.3f} at epoch {best_auroc[0]}.")

    train_drop = None
    if len(train) >= 2 and train[0][1] > 0:
        train_drop = (train[0][1] - train[-1][1]) / train[0][1]
        details.append(f"Training loss went from {train[0][1]:.4f} to {train[-1][1]:.4f} "
                       f"({100 * train_drop:.1f} % lower).")

    overfit_epoch = None
    if len(val) >= 2:
        k_epoch, k_val = min(val, key=lambda e: e[1])
        last_val = val[-1][1]
        rise = (last_val - k_val) / k_val if k_val > 0 else 0.0
        details.append(f"Validation loss was lowest ({k_val:.4f}) at epoch {k_epoch} and ended at {last_val:.4f}.")
        if result["best_epoch"] is None:
            result["best_epoch"] = k_epoch
        train_after = [v for e, v in train if e >= k_epoch]
        train_fell = len(train_after) >= 2 and train_after[-1] < train_after[0]
        if rise > rise_tol and train_fell:
            overfit_epoch = k_epoch
        if len(train) >= 1:
            train_at_k = min(train, key=lambda e: abs(e[0] - k_epoch))[1]
            if train_at_k > 0:
                details.append(f"At that epoch validation loss was {k_val / train_at_k:.2f}x the training loss.")

    if overfit_epoch is not None:
        result.update(verdict="overfitting", overfit_from_epoch=overfit_epoch,
                      message=(f"Over-fitting from epoch {overfit_epoch}: after it the training loss kept falling "
                               f"while the validation loss rose by more than {100 * rise_tol:.0f} %. The model "
                               "memorises the training images; keep the checkpoint from the best validation epoch, "
                               "and consider more augmentation, more data, stronger regularisation or fewer epochs."))
        return result

    if (train_drop is not None and train_drop < flat_tol) or (best_auroc is not None and best_auroc[1] < CHANCE_AUROC):
        reasons = []
        if train_drop is not None and train_drop < flat_tol:
            reasons.append(f"the training loss barely moved (down {100 * train_drop:.1f} %, under "
                           f"{100 * flat_tol:.0f} %)")
        if best_auroc is not None and best_auroc[1] < CHANCE_AUROC:
            reasons.append(f"the best validation AUROC ({best_auroc[1]:.3f}) is close to chance")
        result.update(verdict="underfitting",
                      message=("Under-fitting: " + " and ".join(reasons) + ". The model has not learned the task; "
                               "consider a higher learning rate, more epochs, a larger model or checking the "
                               "labels and preprocessing."))
        return result

    still_improving = False
    if len(val) >= 2 and val[-1][1] <= min(v for _, v in val) + 1e-12 and val[-1][1] < val[-2][1]:
        still_improving = True
    if len(auroc) >= 2 and auroc[-1][1] >= max(v for _, v in auroc) - 1e-12 and auroc[-1][1] > auroc[-2][1]:
        still_improving = True
    if still_improving:
        result.update(verdict="not_converged",
                      message=("Still improving at the last epoch: validation loss/AUROC was at its best in the "
                               "final epoch, so training stopped before convergence and more epochs may help. No "
                               "sign of over-fitting yet."))
        return result

    result.update(verdict="good_fit",
                  message=("Reasonable fit: the training loss fell, the validation loss levelled off without rising "
                           f"by more than {100 * rise_tol:.0f} %, and there is no sign of over- or under-fitting."))
    return result
