"""Predictive uncertainty: MC-dropout and deep ensembles -> mean probability plus a spread.

Temperature scaling comes from the bundle (``bundle.info.temperature``, fitted by the evaluate step) and is
applied to every pass before averaging, so the mean is a calibrated probability. Everything that walks a
list of images does so in batches (``batch_size``), so a large split never sits in memory as one tensor.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
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


def has_dropout(model: nn.Module) -> bool:
    modules = any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())
    functional = float(getattr(model, "drop_rate", 0.0) or 0.0) > 0  # timm heads call F.dropout(training=...)
    return modules or functional


def dropout_mode(model: nn.Module) -> None:
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
    if not has_dropout(model):
        raise ModelError(f"{bundle.info.arch} has no active dropout: MC-dropout needs a model trained with dropout > 0")
    gen_state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        dropout_mode(model)
        samples = np.stack([bundle.probabilities_from_logits(model(batch)) for _ in range(passes)])
    finally:
        model.eval()
        torch.set_rng_state(gen_state)
    return _summarise(samples)


def batches(images: Iterable[np.ndarray], batch_size: int) -> Iterator[list[np.ndarray]]:
    """Lists of at most ``batch_size`` images from any iterable (e.g. a generator that reads files lazily)."""
    if batch_size < 1:
        raise InputError("batch size must be at least 1")
    chunk: list[np.ndarray] = []
    for img in images:
        chunk.append(img)
        if len(chunk) == batch_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _check_members(bundles: Sequence[ModelBundle]) -> None:
    if len(bundles) < 2:
        raise InputError("an ensemble needs at least two models")
    first = bundles[0].info
    for b in bundles[1:]:
        if b.info.task != first.task or b.info.class_names != first.class_names:
            raise ModelError("ensemble members must share task and class names")


def _member_samples(bundles: Sequence[ModelBundle], chunk: list[np.ndarray]) -> np.ndarray:
    """(members, N, outputs): each member preprocesses the [0, 1] images its own way, with its own temperature."""
    return np.stack([b.predict_batch(torch.stack([b.preprocess(img) for img in chunk])) for b in bundles])


def ensemble_predict(bundles: Sequence[ModelBundle], images: Iterable[np.ndarray],
                     batch_size: int = 64) -> UncertainPrediction:
    """Deep ensemble: each member preprocesses the [0, 1] images its own way and applies its own temperature."""
    _check_members(bundles)
    parts = [_member_samples(bundles, chunk) for chunk in batches(images, batch_size)]
    if not parts:
        raise InputError("no images given")
    return _summarise(np.concatenate(parts, axis=1))


@dataclass
class ScoredCases:
    probs: np.ndarray  # (N, outputs) the probabilities a triage rule thresholds
    spread: np.ndarray | None  # (N, outputs) std over MC passes / ensemble members; None without either
    source: dict  # what produced probs and spread (method, passes or members), for reports


def score_with_uncertainty(bundle: ModelBundle, images: Iterable[np.ndarray], *, mc_passes: int = 0,
                           ensemble: Sequence[ModelBundle] = (), batch_size: int = 64,
                           seed: int = 0) -> ScoredCases:
    """Probabilities plus (optionally) a spread for many images, one batch at a time.

    - neither option: the bundle's calibrated probabilities, no spread;
    - ``mc_passes >= 2``: the bundle's deterministic (eval-mode) probability, which is what the service
      thresholds, and the std over ``mc_passes`` dropout passes (seeded ``seed + batch number``);
    - ``ensemble`` (other bundles): members = ``bundle`` + ``ensemble``; the probability is the members' mean and
      the spread their std.
    """
    if mc_passes and ensemble:
        raise InputError("choose MC-dropout passes or an ensemble, not both")
    if mc_passes == 1 or mc_passes < 0:
        raise InputError("MC-dropout needs at least 2 passes (0 = off)")
    members = [bundle, *ensemble] if ensemble else []
    if members:
        _check_members(members)
        for b in ensemble:
            if len(b.info.thresholds) != len(bundle.info.thresholds):
                raise ModelError("ensemble members must have the same number of outputs")
    probs, spread = [], []
    for k, chunk in enumerate(batches(images, batch_size)):
        if members:
            samples = _member_samples(members, chunk)
            probs.append(samples.mean(axis=0))
            spread.append(samples.std(axis=0))
            continue
        x = torch.stack([bundle.preprocess(img) for img in chunk])
        probs.append(bundle.predict_batch(x))
        if mc_passes:
            spread.append(mc_dropout_predict(bundle, x, passes=mc_passes, seed=seed + k).std)
    if not probs:
        raise InputError("no images given")
    if members:
        source = {"method": "ensemble", "members": [{"name": b.info.name, "arch": b.info.arch,
                                                     "sha256": b.sha256} for b in members],
                  "probability": "mean of the members' calibrated probabilities", "batch_size": batch_size}
    elif mc_passes:
        source = {"method": "mc_dropout", "passes": mc_passes, "seed": seed, "batch_size": batch_size,
                  "probability": "the model's deterministic calibrated probability"}
    else:
        source = {"method": "none", "probability": "the model's calibrated probability"}
    return ScoredCases(np.concatenate(probs), np.concatenate(spread) if spread else None, source)
