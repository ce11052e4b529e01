"""The monitoring profile: the input gate's calibration and the drift baseline, both captured from the
validation images when a model is registered, and stored inside the model bundle (``BundleInfo.monitoring``)
so a deployed model carries what it must be compared with.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
import torch

from radiolens.errors import ConfigError, InputError
from radiolens.io.image import RadioImage
from radiolens.models.bundle import ModelBundle
from radiolens.models.embedding import EmbeddingTap
from radiolens.monitor.config import GateConfig
from radiolens.monitor.gate import OK, OUT_OF_DISTRIBUTION, FeatureDensity, GateResult, InputGate, header_problems
from radiolens.monitor.observe import observation

FORMAT = "radiolens-monitoring/1"


@dataclass
class MonitoringProfile:
    density: FeatureDensity
    gate: GateConfig
    class_names: list[str]
    #: One observation per validation image; ``half`` says whether it fitted the gate ("fit") or calibrated it
    #: ("calibration"). Signals derived from the embedding are compared with the calibration half only.
    reference: list[dict[str, Any]]
    expected_rejection_rate: float
    expected_error_rate: float | None = None
    source: str = ""
    created_at: float = field(default_factory=time.time)

    @property
    def n_images(self) -> int:
        return len(self.reference)

    def reference_for(self, embedding_based: bool) -> list[dict[str, Any]]:
        if embedding_based:
            return [r for r in self.reference if r.get("half") == "calibration"]
        return self.reference

    def input_gate(self) -> InputGate:
        return InputGate(self.gate, self.density)

    def summary(self) -> dict[str, Any]:
        return {"images": self.n_images, "source": self.source, "created_at": self.created_at,
                "gate_threshold": round(self.density.threshold, 4),
                "target_false_rejection": self.density.target_false_rejection,
                "expected_rejection_rate": round(self.expected_rejection_rate, 4),
                "expected_error_rate": None if self.expected_error_rate is None else round(self.expected_error_rate, 4),
                "embedding_dims": int(self.density.components.shape[0])}

    # ------------------------------------------------------------------ persistence (plain literals only)
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "density": self.density.to_dict(), "gate": self.gate.model_dump(),
                "class_names": list(self.class_names), "reference": self.reference,
                "expected_rejection_rate": self.expected_rejection_rate,
                "expected_error_rate": self.expected_error_rate, "source": self.source, "created_at": self.created_at}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MonitoringProfile:
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ConfigError(f"the model's monitoring profile is not in the {FORMAT} format")
        try:
            return cls(density=FeatureDensity.from_dict(raw["density"]), gate=GateConfig(**raw["gate"]),
                       class_names=list(raw["class_names"]), reference=list(raw["reference"]),
                       expected_rejection_rate=float(raw["expected_rejection_rate"]),
                       expected_error_rate=None if raw.get("expected_error_rate") is None
                       else float(raw["expected_error_rate"]),
                       source=str(raw.get("source", "")), created_at=float(raw.get("created_at", 0.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError("the model's monitoring profile is malformed") from exc

    @classmethod
    def from_bundle(cls, bundle: ModelBundle) -> MonitoringProfile | None:
        raw = bundle.info.monitoring
        return cls.from_dict(raw) if raw else None


def model_outputs(bundle: ModelBundle, tap: EmbeddingTap, images: Sequence[RadioImage],
                  batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities and embeddings of many images, in batches (one forward pass each)."""
    probs, embs = [], []
    for i in range(0, len(images), batch_size):
        x = torch.stack([bundle.preprocess(im) for im in images[i:i + batch_size]])
        logits, emb = tap(x)
        probs.append(bundle.probabilities_from_logits(logits))
        embs.append(emb.numpy())
    return np.concatenate(probs), np.concatenate(embs)


def batched_outputs(bundle: ModelBundle, images: Iterable[RadioImage],
                    batch_size: int = 32) -> Iterator[tuple[list[RadioImage], np.ndarray, np.ndarray]]:
    """(images, probabilities, embeddings) one batch at a time, pulling images lazily from ``images``."""
    tap = EmbeddingTap(bundle.model, bundle.info.num_outputs)
    try:
        it = iter(images)
        while batch := list(islice(it, batch_size)):
            probs, embs = model_outputs(bundle, tap, batch, batch_size)
            yield batch, probs, embs
    finally:
        tap.close()


def decision_errors(bundle: ModelBundle, probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per image: does the decision at the operating point differ from the label (what a reader disagrees with)?
    The triage rule's definition, at the bundle's own thresholds (argmax for multi-class)."""
    from radiolens.explain.triage import decision_errors as wrong_decisions
    from radiolens.explain.triage import triage_kind

    return wrong_decisions(np.atleast_2d(probs), targets, bundle.info.thresholds, triage_kind(bundle.info.task))


def build_profile(bundle: ModelBundle, images: Iterable[RadioImage], targets: np.ndarray | None = None,
                  cfg: GateConfig | None = None, source: str = "", seed: int = 0,
                  batch_size: int = 32) -> MonitoringProfile:
    """Capture the gate calibration and the drift baseline from validation images (held out from training).

    Images are consumed batch by batch (only their statistics and embeddings are kept), so a large
    validation set of full-size DICOMs never sits in memory.
    """
    cfg = cfg or GateConfig()
    partial: list[dict[str, Any]] = []
    headers: list[list[str]] = []
    probs_parts, emb_parts = [], []
    for batch, probs, embs in batched_outputs(bundle, images, batch_size):
        probs_parts.append(probs)
        emb_parts.append(embs)
        for im, p in zip(batch, probs, strict=True):
            partial.append(observation(im, p, None, None, OK))
            headers.append(header_problems(im.meta, im.height, im.width, cfg))
    n = len(partial)
    if n < 40:
        raise InputError(f"a monitoring baseline needs at least 40 validation images (got {n})")
    probs, embs = np.concatenate(probs_parts), np.concatenate(emb_parts)
    order = np.random.default_rng(seed).permutation(n)
    half = np.zeros(n, dtype=bool)
    half[order[n // 2:]] = True  # True: calibration half
    density = FeatureDensity.fit(embs, cfg, fit_index=np.flatnonzero(~half), calibration_index=np.flatnonzero(half))
    scores, projections = density.score(embs), density.project(embs)
    rejected = np.zeros(n, dtype=bool)
    for i, obs in enumerate(partial):
        rejected[i] = bool(headers[i]) or scores[i] > density.threshold
        obs.update(status=OUT_OF_DISTRIBUTION if rejected[i] else OK, ood_score=round(float(scores[i]), 4),
                   embedding=[round(float(v), 5) for v in projections[i]],
                   half="calibration" if half[i] else "fit")
    error_rate = None
    if targets is not None:
        if len(targets) != n:
            raise InputError(f"validation targets ({len(targets)}) and images ({n}) differ in length")
        error_rate = float(decision_errors(bundle, probs, targets).mean())
    return MonitoringProfile(density=density, gate=cfg, class_names=list(bundle.info.class_names),
                             reference=partial, expected_rejection_rate=float(rejected[half].mean()),
                             expected_error_rate=error_rate, source=source)


def assess(gate: InputGate, profile: MonitoringProfile | None, image: RadioImage, probabilities: np.ndarray,
           embedding: np.ndarray | None) -> tuple[GateResult, dict[str, Any]]:
    """The gate's verdict and the monitoring observation of one image the model has run on."""
    emb = None if embedding is None else np.atleast_2d(embedding)
    result = gate.check(image.meta, image.height, image.width, emb)
    projection = profile.density.project(emb)[0] if profile is not None and emb is not None else None
    return result, observation(image, probabilities, projection, result.ood_score, result.status)


def observe_images(bundle: ModelBundle, profile: MonitoringProfile, images: Iterable[RadioImage],
                   gate: InputGate | None = None, batch_size: int = 32) -> list[tuple[GateResult, dict[str, Any]]]:
    """``assess`` for many images in batched forward passes: what the service records, offline."""
    gate = gate or profile.input_gate()
    out: list[tuple[GateResult, dict[str, Any]]] = []
    for batch, probs, embs in batched_outputs(bundle, images, batch_size):
        out.extend(assess(gate, profile, im, p, e) for im, p, e in zip(batch, probs, embs, strict=True))
    return out


def register(bundle: ModelBundle, profile: MonitoringProfile) -> None:
    """Attach the profile to the bundle (save the bundle afterwards; its sha256 changes with it)."""
    if list(profile.class_names) != list(bundle.info.class_names):
        raise ConfigError("the monitoring profile was built for a model with other classes")
    bundle.info.monitoring = profile.to_dict()
