"""The input gate: is this a chest radiograph of the kind the model was trained on?

Two layers. Header rules catch what the file says about itself (a CT or MR series, an ultrasound, a colour
picture, a multi-frame cine, a sliver of an image). A learned score catches what headers cannot: a PNG of
anything, a mislabelled DICOM, an image type the model never saw. The score is the Mahalanobis distance of
the model's own embedding from the Gaussian fitted to validation embeddings (Lee et al., NeurIPS 2018),
after PCA to a few dozen dimensions so the covariance is well estimated from a few hundred images
(Ledoit-Wolf shrinkage on top). Its threshold is the split-conformal (1 - target_false_rejection) quantile
of scores on validation *patients* the Gaussian was not fitted on (``profile.build_profile`` splits by
patient), so the false-rejection rate it promises holds for new patients, not only for new images of the
patients it has seen.

The header rules are learned too: ``ObservedHeaders`` records what the baseline images hold (sizes, aspect,
bit depth, modalities, ...) and ``header_rules`` turns that into limits with a margin, so a model trained on
28 px thumbnails accepts 28 px thumbnails and a model trained on 2,000 px films refuses a 40 px icon.

scikit-learn fits PCA and the shrunk covariance; scoring uses the stored arrays with numpy, so a saved
model never needs a pickled estimator.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from radiolens.errors import ConfigError, InputError
from radiolens.io import vocab
from radiolens.io.image import ImageMeta
from radiolens.monitor.config import GateConfig

OK = "ok"
OUT_OF_DISTRIBUTION = "out_of_distribution"


@dataclass
class FeatureDensity:
    """PCA projection + Gaussian (mean, precision) of validation embeddings, and the score threshold."""

    pca_mean: np.ndarray  # (d,)
    components: np.ndarray  # (k, d)
    mean: np.ndarray  # (k,)
    precision: np.ndarray  # (k, k)
    threshold: float
    target_false_rejection: float
    calibration_rejection: float  # measured on the calibration half
    n_fit: int
    n_calibration: int

    @classmethod
    def fit(cls, embeddings: np.ndarray, cfg: GateConfig, fit_index: np.ndarray,
            calibration_index: np.ndarray) -> FeatureDensity:
        """Gaussian on ``embeddings[fit_index]``, threshold from ``embeddings[calibration_index]``."""
        from sklearn.covariance import LedoitWolf
        from sklearn.decomposition import PCA

        emb = np.asarray(embeddings, dtype=np.float64)
        fit_idx, cal_idx = np.asarray(fit_index), np.asarray(calibration_index)
        if emb.ndim != 2 or len(fit_idx) < 20 or len(cal_idx) < 20:
            raise InputError("the input gate needs at least 20 validation images to fit and 20 to calibrate "
                             f"(got {len(fit_idx)} and {len(cal_idx)})")
        k = int(min(cfg.pca_components, emb.shape[1], len(fit_idx) - 1))
        pca = PCA(n_components=k, random_state=0).fit(emb[fit_idx])
        z = pca.transform(emb[fit_idx])
        lw = LedoitWolf().fit(z)
        density = cls(pca_mean=pca.mean_, components=pca.components_, mean=lw.location_,
                      precision=lw.precision_, threshold=0.0, target_false_rejection=cfg.target_false_rejection,
                      calibration_rejection=0.0, n_fit=len(fit_idx), n_calibration=len(cal_idx))
        cal_scores = density.score(emb[cal_idx])
        density.threshold = conformal_threshold(cal_scores, cfg.target_false_rejection)
        density.calibration_rejection = float(np.mean(cal_scores > density.threshold))
        return density

    def project(self, embeddings: np.ndarray) -> np.ndarray:
        emb = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
        if emb.shape[1] != self.pca_mean.shape[0]:
            raise ConfigError(f"embedding has {emb.shape[1]} dimensions, the gate was fitted on "
                              f"{self.pca_mean.shape[0]}: the monitoring profile belongs to another model")
        return (emb - self.pca_mean) @ self.components.T

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance in the PCA space (larger = further from the validation images)."""
        d = self.project(embeddings) - self.mean
        return np.einsum("ij,jk,ik->i", d, self.precision, d)

    def to_dict(self) -> dict[str, Any]:
        return {"pca_mean": self.pca_mean.tolist(), "components": self.components.tolist(),
                "mean": self.mean.tolist(), "precision": self.precision.tolist(), "threshold": self.threshold,
                "target_false_rejection": self.target_false_rejection,
                "calibration_rejection": self.calibration_rejection, "n_fit": self.n_fit,
                "n_calibration": self.n_calibration}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FeatureDensity:
        try:
            return cls(pca_mean=np.asarray(raw["pca_mean"], dtype=np.float64),
                       components=np.asarray(raw["components"], dtype=np.float64),
                       mean=np.asarray(raw["mean"], dtype=np.float64),
                       precision=np.asarray(raw["precision"], dtype=np.float64),
                       threshold=float(raw["threshold"]), target_false_rejection=float(raw["target_false_rejection"]),
                       calibration_rejection=float(raw["calibration_rejection"]), n_fit=int(raw["n_fit"]),
                       n_calibration=int(raw["n_calibration"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError("the model's monitoring profile has a malformed input-gate density") from exc


def conformal_threshold(scores: np.ndarray, target: float) -> float:
    """The ceil((n + 1)(1 - target))-th smallest of n calibration scores (the largest if that exceeds n).

    Split-conformal calibration (Vovk et al. 2005; Angelopoulos & Bates 2021, sec. 1): a new image
    exchangeable with the calibration images scores above it with probability at most ``target``. The plain
    (1 - target) quantile promises slightly less than that on new data.
    """
    s = np.sort(np.asarray(scores, dtype=np.float64))
    rank = int(np.ceil((len(s) + 1) * (1.0 - target)))
    return float(s[min(rank, len(s)) - 1])


def _upper(values: Iterable[str | None]) -> list[str]:
    return sorted({v.strip().upper() for v in values if v and v.strip()})


@dataclass
class ObservedHeaders:
    """What the baseline images' headers hold, reduced to extremes and value sets (no identities, no dates):
    the data the header rules are learned from."""

    n_images: int
    formats: list[str]
    modalities: list[str]
    body_parts: list[str]
    photometric: list[str]
    min_side: int
    max_aspect: float
    max_frames: int
    min_bits_stored: int | None
    max_chroma: float

    @classmethod
    def of(cls, items: Iterable[tuple[ImageMeta, int, int]]) -> ObservedHeaders:
        """From (meta, height, width) of each baseline image."""
        items = list(items)
        if not items:
            raise InputError("header rules need at least one baseline image")
        dicom = [m for m, _, _ in items if m.source_format == "dicom"]
        bits = [int(m.bits_stored) for m, _, _ in items if m.bits_stored]
        chroma = [float(m.extra["chroma"]) for m, _, _ in items
                  if isinstance(m.extra, dict) and m.extra.get("chroma") is not None]
        return cls(n_images=len(items), formats=_upper(m.source_format for m, _, _ in items),
                   modalities=_upper(m.modality for m in dicom), body_parts=_upper(m.body_part for m, _, _ in items),
                   photometric=_upper(m.photometric_interpretation for m in dicom),
                   min_side=min(min(h, w) for _, h, w in items),
                   max_aspect=max(max(h, w) / max(min(h, w), 1) for _, h, w in items),
                   max_frames=max(int(m.number_of_frames or 1) for m, _, _ in items),
                   min_bits_stored=min(bits) if bits else None, max_chroma=max(chroma, default=0.0))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ObservedHeaders:
        try:
            return cls(n_images=int(raw["n_images"]), formats=list(raw["formats"]),
                       modalities=list(raw["modalities"]), body_parts=list(raw["body_parts"]),
                       photometric=list(raw["photometric"]), min_side=int(raw["min_side"]),
                       max_aspect=float(raw["max_aspect"]), max_frames=int(raw["max_frames"]),
                       min_bits_stored=None if raw["min_bits_stored"] is None else int(raw["min_bits_stored"]),
                       max_chroma=float(raw["max_chroma"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError("the model's monitoring profile has malformed header observations") from exc


#: Without baseline images (a model with no monitoring profile) only a sliver is refused on shape: no chest
#: film is three times longer than it is wide. With a baseline, the limit is learned (``aspect_margin``).
_ASPECT_PRIOR = 3.0


@dataclass(frozen=True)
class HeaderRules:
    """The header limits in force: ``GateConfig``'s prior widened by (and learned from) ``ObservedHeaders``."""

    allowed_modalities: tuple[str, ...]
    allowed_body_parts: tuple[str, ...]
    allowed_photometric: tuple[str, ...]
    max_chroma: float
    max_frames: int
    min_side_px: int | None  # None: no size rule (no baseline and none configured)
    max_aspect_ratio: float
    min_bits_stored: int | None
    learned: bool  # whether baseline images shaped them
    baseline_min_side: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def header_rules(cfg: GateConfig, observed: ObservedHeaders | None = None) -> HeaderRules:
    """Learn the header limits from what the baseline images hold; explicit numbers in ``cfg`` win."""
    if observed is None:
        return HeaderRules(tuple(cfg.allowed_modalities), tuple(cfg.allowed_body_parts),
                           tuple(cfg.allowed_photometric), cfg.max_chroma, 1, cfg.min_side_px,
                           cfg.max_aspect_ratio or _ASPECT_PRIOR, cfg.min_bits_stored, learned=False)
    min_side = cfg.min_side_px or max(1, int(np.floor(cfg.size_margin * observed.min_side)))
    aspect = cfg.max_aspect_ratio or round(cfg.aspect_margin * observed.max_aspect, 3)
    return HeaderRules(
        allowed_modalities=tuple(_upper([*cfg.allowed_modalities, *observed.modalities])),
        allowed_body_parts=tuple(_upper([*cfg.allowed_body_parts, *observed.body_parts])),
        allowed_photometric=tuple(_upper([*cfg.allowed_photometric, *observed.photometric])),
        max_chroma=max(cfg.max_chroma, min(1.0, 1.5 * observed.max_chroma)),
        max_frames=max(1, observed.max_frames), min_side_px=min_side, max_aspect_ratio=aspect,
        min_bits_stored=cfg.min_bits_stored or observed.min_bits_stored, learned=True,
        baseline_min_side=observed.min_side)


def header_problems(meta: ImageMeta, height: int, width: int, rules: HeaderRules | GateConfig) -> list[str]:
    """Plain-words reasons the file itself says it is not a chest radiograph of the model's kind (empty: none).
    A ``GateConfig`` is taken as the rules without a baseline."""
    if isinstance(rules, GateConfig):
        rules = header_rules(rules)
    problems: list[str] = []
    # Coded values only (radiolens.io.vocab): these reasons reach responses, results files and the audit log.
    modality = vocab.modality(meta.modality) or ""
    if meta.source_format == "dicom" and modality and modality not in rules.allowed_modalities:
        problems.append(f"modality {modality} is not a projection radiograph "
                        f"(accepted: {', '.join(rules.allowed_modalities)})")
    body = vocab.body_part(meta.body_part) or ""
    if body and body not in rules.allowed_body_parts:
        problems.append(f"body part {body} is not chest")
    photometric = vocab.photometric(meta.photometric_interpretation) or ""
    if meta.source_format == "dicom" and photometric and photometric not in rules.allowed_photometric:
        problems.append(f"photometric interpretation {photometric} is a colour image, not a radiograph")
    chroma = meta.extra.get("chroma") if isinstance(meta.extra, dict) else None
    if chroma is not None and float(chroma) > rules.max_chroma:
        problems.append("a colour picture, not a radiograph")
    if meta.number_of_frames and int(meta.number_of_frames) > rules.max_frames:
        problems.append(f"{int(meta.number_of_frames)} frames: a multi-frame series, not a single radiograph")
    if rules.min_side_px is not None and min(height, width) < rules.min_side_px:
        basis = (f" (the smallest validation image of this model is {rules.baseline_min_side} px)"
                 if rules.baseline_min_side else "")
        problems.append(f"image is {width}x{height} px, smaller than {rules.min_side_px} px on a side{basis}")
    ratio = max(height, width) / max(min(height, width), 1)
    if ratio > rules.max_aspect_ratio:
        problems.append(f"aspect ratio {ratio:.1f} is beyond {rules.max_aspect_ratio:g}")
    if rules.min_bits_stored is not None and meta.bits_stored and int(meta.bits_stored) < rules.min_bits_stored:
        problems.append(f"{int(meta.bits_stored)} bits stored, fewer than the {rules.min_bits_stored} of every "
                        "image this model was validated on")
    return problems


@dataclass
class GateResult:
    status: str  # OK | OUT_OF_DISTRIBUTION
    reasons: list[str] = field(default_factory=list)
    ood_score: float | None = None
    threshold: float | None = None
    learned: bool = False  # whether the learned score was available (a monitoring profile exists)

    @property
    def passed(self) -> bool:
        return self.status == OK

    def reason(self) -> str:
        return "; ".join(self.reasons)

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reasons": list(self.reasons),
                "ood_score": None if self.ood_score is None else round(float(self.ood_score), 4),
                "threshold": None if self.threshold is None else round(float(self.threshold), 4),
                "learned_score": self.learned}


class InputGate:
    def __init__(self, cfg: GateConfig | None = None, density: FeatureDensity | None = None,
                 observed: ObservedHeaders | None = None):
        self.cfg = cfg or GateConfig()
        self.density = density
        self.rules = header_rules(self.cfg, observed)

    def check(self, meta: ImageMeta, height: int, width: int, embedding: np.ndarray | None) -> GateResult:
        reasons = header_problems(meta, height, width, self.rules)
        score = threshold = None
        if self.density is not None and embedding is not None:
            score = float(self.density.score(embedding)[0])
            threshold = self.density.threshold
            if score > threshold:
                reasons.append(f"outside what this model was trained on (out-of-distribution score {score:.1f} > "
                               f"{threshold:.1f}, the level {100 * (1 - self.density.target_false_rejection):.0f}%"
                               " of validation chest images stay below)")
        return GateResult(OUT_OF_DISTRIBUTION if reasons else OK, reasons, score, threshold,
                          learned=self.density is not None)
