"""The monitoring profile: the input gate's calibration and the drift baseline, both captured from the
validation images when a model is registered, and stored inside the model bundle (``BundleInfo.monitoring``)
so a deployed model carries what it must be compared with.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

import numpy as np

from radiolens.errors import ConfigError, GateCalibrationError, InputError
from radiolens.io.image import RadioImage
from radiolens.monitor.config import GateConfig
from radiolens.monitor.gate import (
    OK,
    OUT_OF_DISTRIBUTION,
    FeatureDensity,
    GateResult,
    InputGate,
    ObservedHeaders,
    conformal_threshold,
    header_problems,
    header_rules,
)
from radiolens.monitor.observe import observation

if TYPE_CHECKING:
    from radiolens.models.bundle import ModelBundle
    from radiolens.models.embedding import EmbeddingTap

FORMAT = "radiolens-monitoring/2"
#: Confidence level of the held-out false-rejection interval (Wilson score interval).
CI_LEVEL = 0.95


@dataclass
class MonitoringProfile:
    density: FeatureDensity
    gate: GateConfig
    class_names: list[str]
    #: One observation per validation image; ``half`` says whether it fitted the gate ("fit") or calibrated it
    #: ("calibration"); the two hold different patients. Signals derived from the embedding are compared with
    #: the calibration half only.
    reference: list[dict[str, Any]]
    #: False-rejection rate of the gate on the calibration patients, each image judged by rules and a
    #: threshold learned without its patient (see ``build_profile``).
    expected_rejection_rate: float
    #: Header facts of the fit half the header rules are learned from.
    observed: ObservedHeaders
    #: How the held-out rate was measured: images, patients, rejections by header rule / learned score,
    #: the Wilson interval, and an example header reason (no identities).
    heldout: dict[str, Any]
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
        return InputGate(self.gate, self.density, self.observed)

    @property
    def far_above_target(self) -> bool:
        """The gate refuses clearly more of its own kind of images than promised: the lower bound of the
        held-out false-rejection interval is above the target."""
        return self.heldout["ci"][0] > self.density.target_false_rejection

    def rejection_statement(self) -> str:
        h = self.heldout
        lo, hi = h["ci"]
        return (f"{h['rejected']} of {h['images']} validation images of {h['patients']} patients the gate was not "
                f"fitted on ({self.expected_rejection_rate:.3f}, {100 * CI_LEVEL:.0f}% CI {lo:.3f}-{hi:.3f}; "
                f"{h['by_header']} by a header rule, {h['by_score']} by the learned score)")

    def summary(self) -> dict[str, Any]:
        return {"images": self.n_images, "source": self.source, "created_at": self.created_at,
                "gate_threshold": round(self.density.threshold, 4),
                "target_false_rejection": self.density.target_false_rejection,
                "expected_rejection_rate": round(self.expected_rejection_rate, 4),
                "heldout_rejection_ci": [round(v, 4) for v in self.heldout["ci"]],
                "heldout_images": self.heldout["images"], "heldout_patients": self.heldout["patients"],
                "fit_patients": self.heldout["fit_patients"],
                "expected_error_rate": None if self.expected_error_rate is None else round(self.expected_error_rate, 4),
                "embedding_dims": int(self.density.components.shape[0])}

    # ------------------------------------------------------------------ persistence (plain literals only)
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "density": self.density.to_dict(), "gate": self.gate.model_dump(),
                "class_names": list(self.class_names), "reference": self.reference,
                "expected_rejection_rate": self.expected_rejection_rate, "observed": self.observed.to_dict(),
                "heldout": self.heldout,
                "expected_error_rate": self.expected_error_rate, "source": self.source, "created_at": self.created_at}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MonitoringProfile:
        if isinstance(raw, dict) and raw.get("format") == "radiolens-monitoring/1":
            raise ConfigError("the model's monitoring profile was built by an older radiolens (fixed header "
                              "rules, threshold not calibrated on separate patients): run `radiolens monitor "
                              "baseline` again")
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ConfigError(f"the model's monitoring profile is not in the {FORMAT} format")
        try:
            return cls(density=FeatureDensity.from_dict(raw["density"]), gate=GateConfig(**raw["gate"]),
                       class_names=list(raw["class_names"]), reference=list(raw["reference"]),
                       expected_rejection_rate=float(raw["expected_rejection_rate"]),
                       observed=ObservedHeaders.from_dict(raw["observed"]), heldout=dict(raw["heldout"]),
                       expected_error_rate=None if raw.get("expected_error_rate") is None
                       else float(raw["expected_error_rate"]),
                       source=str(raw.get("source", "")), created_at=float(raw.get("created_at", 0.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError("the model's monitoring profile is malformed") from exc

    @classmethod
    def from_bundle(cls, bundle: ModelBundle) -> MonitoringProfile | None:
        raw = bundle.info.monitoring
        return cls.from_dict(raw) if raw else None



def require_profile(bundle: ModelBundle, model_name: str) -> MonitoringProfile:
    """The bundle's monitoring profile; a bundle without one (``model_name``: its file name, for the message)
    is a ``ConfigError`` naming the command that registers it."""
    profile = MonitoringProfile.from_bundle(bundle)
    if profile is None:
        raise ConfigError(f"{model_name} has no monitoring baseline: run `radiolens monitor baseline` first")
    return profile

def model_outputs(bundle: ModelBundle, tap: EmbeddingTap, images: Sequence[RadioImage],
                  batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities and embeddings of many images, in batches (one forward pass each)."""
    probs, embs = [], []
    for i in range(0, len(images), batch_size):
        import torch

        x = torch.stack([bundle.preprocess(im) for im in images[i:i + batch_size]])
        logits, emb = tap(x)
        probs.append(bundle.probabilities_from_logits(logits))
        embs.append(emb.numpy())
    return np.concatenate(probs), np.concatenate(embs)


def batched_outputs(bundle: ModelBundle, images: Iterable[RadioImage],
                    batch_size: int = 32) -> Iterator[tuple[list[RadioImage], np.ndarray, np.ndarray]]:
    """(images, probabilities, embeddings) one batch at a time, pulling images lazily from ``images``."""
    from radiolens.models.embedding import EmbeddingTap

    tap = EmbeddingTap(bundle.model, bundle.info.num_outputs, bundle.info.arch)
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


def patient_halves(groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Image indices of the fit and calibration halves: half of the patients each (never one patient in both)."""
    from sklearn.model_selection import GroupShuffleSplit

    fit, cal = next(GroupShuffleSplit(n_splits=1, test_size=0.5, random_state=seed)
                    .split(np.zeros(len(groups)), groups=groups))
    return np.sort(fit), np.sort(cal)


def heldout_rejections(scores: np.ndarray, header_rejected: np.ndarray, groups: np.ndarray, target: float,
                       seed: int) -> np.ndarray:
    """Per calibration image: would the gate refuse it when neither the density, nor the header rules, nor the
    threshold saw its patient? The calibration patients are cross-fitted in two folds: each fold is judged by
    the conformal threshold of the other (the deployed threshold uses both, so this is slightly conservative)."""
    from sklearn.model_selection import GroupKFold

    rejected = np.asarray(header_rejected, dtype=bool).copy()
    for judge, judged in GroupKFold(n_splits=2, shuffle=True, random_state=seed).split(scores, groups=groups):
        rejected[judged] |= scores[judged] > conformal_threshold(scores[judge], target)
    return rejected


def wilson_interval(k: int, n: int, level: float = CI_LEVEL) -> tuple[float, float]:
    import scipy.stats as sps

    ci = sps.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def build_profile(bundle: ModelBundle, images: Iterable[RadioImage], targets: np.ndarray | None = None,
                  cfg: GateConfig | None = None, source: str = "", seed: int = 0,
                  batch_size: int = 32, groups: Sequence[Any] | None = None) -> MonitoringProfile:
    """Capture the gate calibration and the drift baseline from validation images (held out from training).

    ``groups``: the patient of each image. The patients are split in two: the gate's density and its header
    rules are learned from one half, its threshold is chosen on the other, and its false-rejection rate is
    measured there too (cross-fitted, see ``heldout_rejections``), so every promise holds for patients the gate
    has never seen. Without ``groups`` every image counts as its own patient (images of one patient may then
    fall in both halves, and the promises are optimistic).

    Images are consumed batch by batch (only their statistics and embeddings are kept), so a large
    validation set of full-size DICOMs never sits in memory.
    """
    cfg = cfg or GateConfig()
    partial: list[dict[str, Any]] = []
    headers: list[tuple[Any, int, int]] = []
    probs_parts, emb_parts = [], []
    for batch, probs, embs in batched_outputs(bundle, images, batch_size):
        probs_parts.append(probs)
        emb_parts.append(embs)
        for im, p in zip(batch, probs, strict=True):
            partial.append(observation(im, p, None, None, OK))
            headers.append((im.meta, im.height, im.width))
    n = len(partial)
    if n < 40:
        raise InputError(f"a monitoring baseline needs at least 40 validation images (got {n})")
    if groups is None:
        group_ids = np.arange(n)
    else:
        group_ids = np.asarray([str(g) for g in groups])
        if len(group_ids) != n:
            raise InputError(f"patient ids ({len(group_ids)}) and validation images ({n}) differ in length")
    if len(np.unique(group_ids)) < 4:
        raise InputError("a monitoring baseline needs validation images of at least 4 patients (two for the gate "
                         f"to be fitted on, two to calibrate it); got {len(np.unique(group_ids))}")
    probs, embs = np.concatenate(probs_parts), np.concatenate(emb_parts)
    fit_idx, cal_idx = patient_halves(group_ids, seed)
    half = np.zeros(n, dtype=bool)
    half[cal_idx] = True  # True: calibration half
    density = FeatureDensity.fit(embs, cfg, fit_index=fit_idx, calibration_index=cal_idx)
    observed = ObservedHeaders.of(headers[i] for i in fit_idx)
    rules = header_rules(cfg, observed)
    problems = [header_problems(m, h, w, rules) for m, h, w in headers]
    header_rejected = np.array([bool(p) for p in problems])
    scores, projections = density.score(embs), density.project(embs)
    for i, obs in enumerate(partial):
        rejected = header_rejected[i] or scores[i] > density.threshold
        obs.update(status=OUT_OF_DISTRIBUTION if rejected else OK, ood_score=round(float(scores[i]), 4),
                   embedding=[round(float(v), 5) for v in projections[i]],
                   half="calibration" if half[i] else "fit")
    held = heldout_rejections(scores[cal_idx], header_rejected[cal_idx], group_ids[cal_idx],
                              cfg.target_false_rejection, seed)
    k = int(held.sum())
    example = next((problems[i][0] for i in cal_idx if problems[i]), None)
    heldout = {"images": len(cal_idx), "patients": len(np.unique(group_ids[cal_idx])),
               "fit_patients": len(np.unique(group_ids[fit_idx])), "rejected": k,
               "by_header": int(header_rejected[cal_idx].sum()), "by_score": k - int(header_rejected[cal_idx].sum()),
               "ci": list(wilson_interval(k, len(cal_idx))), "ci_level": CI_LEVEL, "method": "wilson",
               "patient_ids_given": groups is not None, "example_header_reason": example}
    error_rate = None
    if targets is not None:
        if len(targets) != n:
            raise InputError(f"validation targets ({len(targets)}) and images ({n}) differ in length")
        error_rate = float(decision_errors(bundle, probs, targets).mean())
    return MonitoringProfile(density=density, gate=cfg, class_names=list(bundle.info.class_names),
                             reference=partial, expected_rejection_rate=k / len(cal_idx), observed=observed,
                             heldout=heldout, expected_error_rate=error_rate, source=source)


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


def register(bundle: ModelBundle, profile: MonitoringProfile, allow_high_rejection: bool = False) -> None:
    """Attach the profile to the bundle (save the bundle afterwards; its sha256 changes with it).

    Refused (``GateCalibrationError``) when the gate is far above its false-rejection target on held-out
    validation patients (``MonitoringProfile.far_above_target``): such a gate would answer "not assessed" to
    the model's own kind of images. ``allow_high_rejection`` registers it anyway.
    """
    if list(profile.class_names) != list(bundle.info.class_names):
        raise ConfigError("the monitoring profile was built for a model with other classes")
    if profile.far_above_target and not allow_high_rejection:
        example = profile.heldout.get("example_header_reason")
        raise GateCalibrationError(
            f"the input gate refuses {profile.rejection_statement()}, far above its target of "
            f"{profile.density.target_false_rejection:g} (the whole {100 * CI_LEVEL:.0f}% interval lies above it)"
            + (f"; a header rule says e.g. '{example}'" if example else "")
            + ". The baseline was not registered: check that the images are the model's own kind (its "
            "validation split) and the gate: settings of the monitoring config")
    bundle.info.monitoring = profile.to_dict()
