"""Predictive uncertainty: MC-dropout and deep ensembles -> mean probability plus a spread.

Temperature scaling comes from the bundle (``bundle.info.temperature``, fitted by the evaluate step) and is
applied to every pass before averaging, so the mean is a calibrated probability.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from radiolens.errors import InputError, ModelError
from radiolens.models.bundle import ModelBundle


@dataclass
class UncertainPrediction:
    mean: np.ndarray  # (N, outputs) calibrated probability averaged over passes / members
    std: np.ndarray  # (N, outputs) spread across passes / members
    entropy: np.ndarray  # (N, outputs) predictive entropy of the mean, bits (binary / per-label)
    samples: np.ndarray  # (passes, N, outputs)


def predictive_entropy(p: np.ndarray) -> np.ndarray:
    """Binary (per-output) entropy in bits: 0 for a sure prediction, 1 at p = 0.5."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def _summarise(samples: np.ndarray) -> UncertainPrediction:
    mean = samples.mean(axis=0)
    return UncertainPrediction(mean=mean, std=samples.std(axis=0), entropy=predictive_entropy(mean),
                               samples=samples)


def _has_dropout(model: nn.Module) -> bool:
    modules = any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())
    functional = float(getattr(model, "drop_rate", 0.0) or 0.0) > 0  # timm heads call F.dropout(training=...)
    return modules or functional


def _dropout_mode(model: nn.Module) -> None:
    """Dropout active, BatchNorm (and everything else with running statistics) in inference mode."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


@torch.no_grad()
def mc_dropout_predict(bundle: ModelBundle, batch: torch.Tensor, passes: int = 20,
                       seed: int = 0) -> UncertainPrediction:
    """``passes`` stochastic forward passes of (N, 1, H, W) normalised tensors."""
    if passes < 2:
        raise InputError("MC-dropout needs at least 2 passes")
    model = bundle.model
    if not _has_dropout(model):
        raise ModelError(f"{bundle.info.arch} has no active dropout: MC-dropout needs a model trained with dropout > 0")
    gen_state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        _dropout_mode(model)
        samples = np.stack([bundle.probabilities_from_logits(model(batch)) for _ in range(passes)])
    finally:
        model.eval()
        torch.set_rng_state(gen_state)
    return _summarise(samples)


def ensemble_predict(bundles: Sequence[ModelBundle], images: Sequence[np.ndarray]) -> UncertainPrediction:
    """Deep ensemble: each member preprocesses the [0, 1] images its own way and applies its own temperature."""
    if len(bundles) < 2:
        raise InputError("an ensemble needs at least two models")
    first = bundles[0].info
    for b in bundles[1:]:
        if b.info.task != first.task or b.info.class_names != first.class_names:
            raise ModelError("ensemble members must share task and class names")
    samples = []
    for b in bundles:
        batch = torch.stack([b.preprocess(img) for img in images])
        samples.append(b.predict_batch(batch))
    return _summarise(np.stack(samples))
