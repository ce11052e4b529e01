"""Losses that take class imbalance into account (chest X-ray sets are rarely balanced)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from radiolens.errors import ConfigError


def positive_weights(targets: np.ndarray) -> torch.Tensor:
    """BCE ``pos_weight`` per output: negatives / positives in the training set (binary: (N,) targets)."""
    t = np.asarray(targets, dtype=np.float64)
    if t.ndim == 1:
        t = t[:, None]
    pos = t.sum(axis=0)
    neg = len(t) - pos
    return torch.as_tensor(neg / np.maximum(pos, 1.0), dtype=torch.float32)


def class_weights(targets: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency CE weights, normalised so a balanced set gets all ones."""
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes).astype(np.float64)
    w = len(targets) / (num_classes * np.maximum(counts, 1.0))
    return torch.as_tensor(w, dtype=torch.float32)


class BCELoss(nn.Module):
    def __init__(self, pos_weight: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("pos_weight", pos_weight if pos_weight is not None else None)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets.float().view_as(logits),
                                                  pos_weight=self.pos_weight)


class CELoss(nn.Module):
    def __init__(self, weight: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("weight", weight if weight is not None else None)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets.long(), weight=self.weight)


class SigmoidFocalLoss(nn.Module):
    """Focal loss for binary / multi-label outputs (torchvision's implementation)."""

    def __init__(self, gamma: float = 2.0, alpha: float = 0.25):
        super().__init__()
        self.gamma, self.alpha = gamma, alpha

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return sigmoid_focal_loss(logits, targets.float().view_as(logits), alpha=self.alpha, gamma=self.gamma,
                                  reduction="mean")


class SoftmaxFocalLoss(nn.Module):
    """Multi-class focal loss: (1 - p_t)^gamma * weighted CE.

    Written here because torchvision only ships the sigmoid form; it is CE re-weighted per sample, so it
    reuses F.cross_entropy for the numerically stable part.
    """

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None):
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weight", weight if weight is not None else None)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets.long()
        ce = F.cross_entropy(logits, targets, reduction="none")
        pt = torch.exp(-ce)  # unweighted probability of the true class
        w = self.weight[targets] if self.weight is not None else torch.ones_like(ce)
        return ((1 - pt) ** self.gamma * ce * w).sum() / w.sum()


def make_loss(task: str, kind: str, targets: np.ndarray, num_outputs: int, weighting: bool = True,
              focal_gamma: float = 2.0) -> nn.Module:
    """The loss for a task; ``kind`` auto -> BCE (binary, multilabel) or CE (multiclass)."""
    if kind == "auto":
        kind = "ce" if task == "multiclass" else "bce"
    if task == "multiclass":
        weight = class_weights(targets, num_outputs) if weighting else None
        if kind == "ce":
            return CELoss(weight)
        if kind == "focal":
            return SoftmaxFocalLoss(focal_gamma, weight)
        raise ConfigError("a multi-class model takes loss 'ce' or 'focal' (BCE is for binary/multi-label)")
    if kind == "bce":
        return BCELoss(positive_weights(targets) if weighting else None)
    if kind == "focal":
        return SigmoidFocalLoss(focal_gamma)
    raise ConfigError(f"loss '{kind}' does not fit task '{task}' (use bce or focal)")
