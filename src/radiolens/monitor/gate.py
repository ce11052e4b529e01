"""The input gate: is this a chest radiograph of the kind the model was trained on?

Two layers. Header rules catch what the file says about itself (a CT or MR series, an ultrasound, a colour
picture, a multi-frame cine, a sliver of an image). A learned score catches what headers cannot: a PNG of
anything, a mislabelled DICOM, an image type the model never saw. The score is the Mahalanobis distance of
the model's own embedding from the Gaussian fitted to validation embeddings (Lee et al., NeurIPS 2018),
after PCA to a few dozen dimensions so the covariance is well estimated from a few hundred images
(Ledoit-Wolf shrinkage on top). Its threshold is the (1 - target_false_rejection) quantile of scores on a
*different* half of the validation set than the one the Gaussian was fitted on, so the false-rejection
rate it promises is measured, not assumed.

scikit-learn fits PCA and the shrunk covariance; scoring uses the stored arrays with numpy, so a saved
model never needs a pickled estimator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
        density.threshold = float(np.quantile(cal_scores, 1.0 - cfg.target_false_rejection))
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


def header_problems(meta: ImageMeta, height: int, width: int, cfg: GateConfig) -> list[str]:
    """Plain-words reasons the file itself says it is not a single chest radiograph (empty list: none)."""
    problems: list[str] = []
    # Coded values only (radiolens.io.vocab): these reasons reach responses, results files and the audit log.
    modality = vocab.modality(meta.modality) or ""
    if meta.source_format == "dicom" and modality and modality not in cfg.allowed_modalities:
        problems.append(f"modality {modality} is not a projection radiograph "
                        f"(accepted: {', '.join(cfg.allowed_modalities)})")
    body = vocab.body_part(meta.body_part) or ""
    if body and body not in cfg.allowed_body_parts:
        problems.append(f"body part {body} is not chest")
    photometric = vocab.photometric(meta.photometric_interpretation) or ""
    if meta.source_format == "dicom" and photometric and photometric not in cfg.allowed_photometric:
        problems.append(f"photometric interpretation {photometric} is a colour image, not a radiograph")
    chroma = meta.extra.get("chroma") if isinstance(meta.extra, dict) else None
    if chroma is not None and float(chroma) > cfg.max_chroma:
        problems.append("a colour picture, not a radiograph")
    if meta.number_of_frames and int(meta.number_of_frames) > 1:
        problems.append(f"{int(meta.number_of_frames)} frames: a multi-frame series, not a single radiograph")
    if min(height, width) < cfg.min_side_px:
        problems.append(f"image is {width}x{height} px, smaller than {cfg.min_side_px} px on a side")
    ratio = max(height, width) / max(min(height, width), 1)
    if ratio > cfg.max_aspect_ratio:
        problems.append(f"aspect ratio {ratio:.1f} is beyond {cfg.max_aspect_ratio:g}")
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
    def __init__(self, cfg: GateConfig | None = None, density: FeatureDensity | None = None):
        self.cfg = cfg or GateConfig()
        self.density = density

    def check(self, meta: ImageMeta, height: int, width: int, embedding: np.ndarray | None) -> GateResult:
        reasons = header_problems(meta, height, width, self.cfg)
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
