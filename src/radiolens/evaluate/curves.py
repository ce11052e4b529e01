"""Reading training curves in plain words: is the model over-fitting, under-fitting, still improving?

There is no library for this judgement; the rules below are deliberately simple and stated in the output so
a reader can disagree with them. Epoch-to-epoch validation loss is noisy (small validation sets, augmentation),
so with 6+ epochs the curves are judged on a moving average (window 3-7 epochs) and a change only counts when it
is larger than that noise (the standard deviation of the loss around its moving average):

- over-fitting from epoch k: the smoothed validation loss is lowest at epoch k, the mean of the last epochs is
  more than ``rise_tol`` (relative) and more than the noise above it, while training loss did not rise (it kept
  falling or stayed low); if training loss rose too, the verdict is "unstable" (an optimisation problem);
- under-fitting: training loss fell by less than ``flat_tol`` (relative) from the first to the last epoch, or
  the best validation AUROC stayed below 0.6 (barely better than chance);
- not converged: over the last epochs validation loss still fell (or AUROC still rose) by more than the noise;
- otherwise: a reasonable fit (the loss levelled off).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

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


def window(n: int) -> int:
    if n < 6:
        return 1
    return min(7, 2 * (n // 10) + 3)


def smooth(values: list[float], w: int) -> np.ndarray:
    # pandas on demand: this package is imported by the service (monitoring reports), which runs without it.
    import pandas as pd

    return pd.Series(values, dtype=float).rolling(w, center=True, min_periods=1).mean().to_numpy()


def _noise(values: list[float], w: int) -> float:
    if w == 1 or len(values) < 3:
        return 0.0
    return float(np.std(np.asarray(values) - smooth(values, w)))


def _tail_change(values: list[float], w: int) -> float:
    """Change over the last epochs: mean of the last ``w`` minus mean of the ``w`` before (last minus previous
    value when there is no smoothing)."""
    if w == 1 or len(values) < 2 * w:
        return values[-1] - values[-2]
    return float(np.mean(values[-w:]) - np.mean(values[-2 * w:-w]))


def diagnose_training(history: list[dict] | None, rise_tol: float = RISE_TOL, flat_tol: float = FLAT_TOL) -> dict:
    """The verdict of :func:`_diagnose`, plus ``under_trained``: True when the best validation epoch is the
    last one run, so the training stopped while the model was still getting better on validation; the
    message then starts with "Under-trained" whatever the curves' shape (a reader should see it first)."""
    result = _diagnose(history, rise_tol, flat_tol)
    epochs = [int(row.get("epoch", i)) for i, row in enumerate(history or [])]
    last = max(epochs) if epochs else None
    result["under_trained"] = bool(result["best_epoch"] is not None and last is not None and len(epochs) >= 2
                                   and result["best_epoch"] == last)
    if result["under_trained"]:
        result["message"] = (f"Under-trained: the best validation epoch is the last one run (epoch {last}), so "
                             "the model was still improving when training stopped; train for more epochs "
                             "(or with a higher learning rate) before trusting this model. " + result["message"])
    return result


def _diagnose(history: list[dict] | None, rise_tol: float, flat_tol: float) -> dict:
    """``{"verdict": "overfitting"|"unstable"|"underfitting"|"not_converged"|"good_fit"|"unknown", "overfit_from_epoch",
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

    overfit_epoch = unstable_epoch = None
    w = window(len(val))
    val_values = [v for _, v in val]
    noise = _noise(val_values, w)
    if w > 1:
        details.append(f"Validation loss judged on a {w}-epoch moving average (epoch-to-epoch noise "
                       f"+/-{noise:.4f}).")
    if len(val) >= 2:
        smoothed = smooth(val_values, w)
        i_min = int(np.argmin(smoothed))
        k_epoch, k_val = val[i_min][0], float(smoothed[i_min])
        tail = float(np.mean(val_values[-w:])) if w > 1 else val_values[-1]
        rise = (tail - k_val) / k_val if k_val > 0 else 0.0
        details.append(f"Validation loss was lowest ({k_val:.4f}) at epoch {k_epoch}; the last "
                       f"{'epoch' if w == 1 else f'{w} epochs'} averaged {tail:.4f}.")
        if result["best_epoch"] is None:
            result["best_epoch"] = k_epoch
        train_after = [v for e, v in train if e >= k_epoch]
        train_rose = False
        if len(train_after) >= 2:
            train_values = [v for _, v in train]
            t_noise = _noise(train_values, window(len(train_values)))
            t_tail = float(np.mean(train_after[-w:]))
            train_rose = t_tail - train_after[0] > max(t_noise, rise_tol / 2 * train_after[0])
        if rise > rise_tol and tail - k_val > noise and i_min < len(val) - 1 and len(train_after) >= 2:
            if train_rose:
                unstable_epoch = k_epoch
            else:
                overfit_epoch = k_epoch
        train_at_k = min(train, key=lambda e: abs(e[0] - k_epoch))[1] if train else None
        if train_at_k:
            details.append(f"At that epoch validation loss was {k_val / train_at_k:.2f}x the training loss.")

    if overfit_epoch is not None:
        result.update(verdict="overfitting", overfit_from_epoch=overfit_epoch,
                      message=(f"Over-fitting from epoch {overfit_epoch}: after it the training loss kept falling "
                               f"or stayed low while the validation loss rose by more than {100 * rise_tol:.0f} % "
                               "(beyond its epoch-to-epoch noise). The model memorises the training images; keep the "
                               "checkpoint from the best validation epoch, and consider more augmentation, more data, "
                               "stronger regularisation or fewer epochs."))
        if best_auroc is not None and best_auroc[0] > overfit_epoch:
            details.append(f"Validation AUROC still peaked later (epoch {best_auroc[0]}): the rising loss is partly "
                           "growing over-confidence rather than worse ranking, which temperature scaling corrects "
                           "in part.")
        return result

    if unstable_epoch is not None:
        result.update(verdict="unstable", best_epoch=result["best_epoch"] or unstable_epoch,
                      message=(f"Unstable training after epoch {unstable_epoch}: training and validation loss both "
                               "rose, which points at the optimisation (learning rate too high, a schedule restart, "
                               "an unfrozen backbone) rather than over-fitting; keep the checkpoint from the best "
                               "validation epoch and consider a lower learning rate."))
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
    if len(val) >= 2:
        drop = -_tail_change(val_values, w)
        still_improving = drop > max(noise, 1e-12) and drop > 0.01 * abs(val_values[-1])
    if len(auroc) >= 2:
        auroc_values = [v for _, v in auroc]
        wa = window(len(auroc))
        gain = _tail_change(auroc_values, wa)
        still_improving = still_improving or (gain > max(_noise(auroc_values, wa), 0.005))
    if still_improving:
        result.update(verdict="not_converged",
                      message=("Still improving at the last epochs: validation loss was still falling (or AUROC "
                               "still rising) by more than its noise, so training stopped before convergence and "
                               "more epochs may help. No sign of over-fitting yet."))
        return result

    result.update(verdict="good_fit",
                  message=("Reasonable fit: the training loss fell, the validation loss levelled off without rising "
                           f"by more than {100 * rise_tol:.0f} % beyond its noise, and there is no sign of over- or "
                           "under-fitting."))
    return result
