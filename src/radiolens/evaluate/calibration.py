"""Calibration: temperature scaling fitted on validation, expected calibration error and reliability bins.

Temperature scaling (Guo et al. 2017) divides every logit by one scalar T > 0 chosen to minimise the
validation negative log-likelihood. It never changes a binary/multilabel ranking (so AUROC stays put) but
makes "70 %" mean roughly 70 %. One T for all outputs: sigmoid BCE for binary/multilabel, softmax
cross-entropy for multiclass.

PyTorch and torchmetrics are imported inside the functions that fit or score (training and evaluation), so the
package imports in a serving installation without them (the monitoring report reads ``evaluate.plots``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from sklearn.calibration import calibration_curve

from radiolens.evaluate.inputs import ShapeError

if TYPE_CHECKING:
    import torch

N_BINS = 15
_T_MIN, _T_MAX = 0.05, 20.0


def _nll(z: torch.Tensor, t: torch.Tensor, task: str) -> torch.Tensor:
    import torch.nn.functional as F

    if task == "multiclass":
        return F.cross_entropy(z, t)
    return F.binary_cross_entropy_with_logits(z, t)


def fit_temperature(logits, targets, task: str, max_iter: int = 200) -> float:
    """The T > 0 minimising NLL of ``logits / T`` (LBFGS on log T, so T stays positive), clipped to
    [0.05, 20] so that a degenerate validation set cannot produce an absurd scale.

    ``targets``: (N,) class indices for multiclass; (N,) or (N, K) 0/1 for binary/multilabel.
    """
    import torch

    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    if task == "multiclass":
        t = torch.as_tensor(np.asarray(targets, dtype=np.int64).reshape(-1))
    else:
        t = torch.as_tensor(np.asarray(targets, dtype=np.float64)).reshape(z.shape)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = _nll(z / log_t.exp(), t, task)
        loss.backward()
        return loss

    opt.step(closure)
    value = float(log_t.detach().exp())
    if not np.isfinite(value):
        return 1.0
    return float(np.clip(value, _T_MIN, _T_MAX))


def nll(logits, targets, task: str, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``logits / temperature`` (the quantity temperature scaling minimises)."""
    import torch

    z = torch.as_tensor(np.asarray(logits, dtype=np.float64)) / float(temperature)
    if task == "multiclass":
        t = torch.as_tensor(np.asarray(targets, dtype=np.int64).reshape(-1))
    else:
        t = torch.as_tensor(np.asarray(targets, dtype=np.float64)).reshape(z.shape)
    return float(_nll(z, t, task))


def expected_calibration_error(y, p, task: str = "binary", n_bins: int = N_BINS) -> float:
    """ECE (L1, equal-width bins) from torchmetrics.

    - binary: ``y`` (N,) 0/1, ``p`` (N,) probabilities of the positive class;
    - multiclass: ``y`` (N,) indices, ``p`` (N, K) softmax probabilities (top-label ECE);
    - multilabel: ``y``/``p`` (N, K); returns the mean of the per-output binary ECEs.
    """
    import torch
    from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

    if task == "multiclass":
        probs = torch.as_tensor(np.ascontiguousarray(p, dtype=np.float64))
        return float(multiclass_calibration_error(probs, torch.as_tensor(np.asarray(y, dtype=np.int64)),
                                                  num_classes=probs.shape[1], n_bins=n_bins, norm="l1"))
    y_arr = np.asarray(y).astype(np.int64)
    p_arr = np.asarray(p, dtype=np.float64)
    if task == "multilabel":
        if y_arr.ndim != 2:
            raise ShapeError("multilabel ECE needs (N, K) targets and probabilities")
        return float(np.mean([expected_calibration_error(y_arr[:, k], p_arr[:, k], "binary", n_bins)
                              for k in range(y_arr.shape[1])]))
    return float(binary_calibration_error(torch.as_tensor(np.ascontiguousarray(p_arr.reshape(-1))),
                                          torch.as_tensor(np.ascontiguousarray(y_arr.reshape(-1))),
                                          n_bins=n_bins, norm="l1"))


def reliability_bins(y, p, n_bins: int = N_BINS) -> dict:
    """Points of a reliability diagram (scikit-learn ``calibration_curve``, equal-width bins; empty bins are
    omitted) plus the case count per bin. ``y`` 0/1 "event happened", ``p`` its predicted probability."""
    y = np.asarray(y).astype(np.int64).reshape(-1)
    p = np.clip(np.asarray(p, dtype=np.float64).reshape(-1), 0.0, 1.0)
    # Same bin assignment as calibration_curve(strategy="uniform"), so counts line up with its points.
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bin_ids = np.searchsorted(edges[1:-1], p)
    counts = np.bincount(bin_ids, minlength=n_bins)
    if y.min() == y.max():
        # calibration_curve needs both labels; the observed frequency is then simply 0 (or 1) in every bin.
        sums = np.bincount(bin_ids, weights=p, minlength=n_bins)
        mean_pred = (sums[counts > 0] / counts[counts > 0]).tolist()
        frac = [float(y[0])] * len(mean_pred)
    else:
        frac_arr, mean_arr = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
        frac, mean_pred = frac_arr.tolist(), mean_arr.tolist()
    centres = (edges[:-1] + edges[1:]) / 2
    return {"mean_predicted": mean_pred, "observed_fraction": frac,
            "bin_counts": [int(c) for c in counts if c > 0],
            "bin_centres": [float(c) for c, n in zip(centres, counts, strict=True) if n > 0], "n_bins": n_bins}


def top_label(targets, probs) -> tuple[np.ndarray, np.ndarray]:
    """Multi-class -> binary "was the top class right" events with the top-class confidence, the usual
    input of a multi-class reliability diagram."""
    probs = np.asarray(probs, dtype=np.float64)
    return (probs.argmax(axis=1) == np.asarray(targets)).astype(np.int64), probs.max(axis=1)
