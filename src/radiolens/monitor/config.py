"""Typed settings of the input gate and the drift monitor (defaults are what the benchmark measured)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from radiolens.errors import ConfigError


class GateConfig(BaseModel):
    """Header rules plus the learned out-of-distribution score, applied before a probability is shown."""

    model_config = ConfigDict(extra="forbid")

    # Header rules. Each is learned from the baseline images the gate is fitted on (``monitor baseline``: the
    # validation split of the training manifest, i.e. the model's own kind of data); the values here are the
    # domain's prior, widened by what those images hold, so a rule never refuses the kind of image the model
    # was trained on. A number set explicitly (not None) overrides what the data says.

    #: DICOM modalities accepted as projection radiographs, plus every modality the baseline images carry.
    #: PNG/JPEG uploads carry no modality and pass this rule.
    allowed_modalities: list[str] = Field(default_factory=lambda: ["CR", "DX", "DR", "RG"])
    #: Body Part Examined values accepted (upper case), plus the baseline's; an absent value passes (many CR
    #: files leave it empty).
    allowed_body_parts: list[str] = Field(default_factory=lambda: ["CHEST", "THORAX", "LUNG", "CHEST_LAT"])
    #: Photometric interpretations accepted, plus the baseline's.
    allowed_photometric: list[str] = Field(default_factory=lambda: ["MONOCHROME1", "MONOCHROME2"])
    #: A PNG/JPEG whose RGB channels differ on average by more than this (0..1) is a colour picture, not a film
    #: (raised to 1.5 x the largest spread among the baseline images if that is higher).
    max_chroma: float = Field(default=0.03, ge=0, le=1)
    #: Smallest side accepted. None: ``size_margin`` x the smallest side among the baseline images.
    min_side_px: int | None = Field(default=None, ge=1)
    #: Fraction of the baseline's smallest side still accepted (0.5: half as many pixels a side).
    size_margin: float = Field(default=0.5, gt=0, le=1)
    #: Largest long/short side ratio accepted. None: ``aspect_margin`` x the largest among the baseline images.
    max_aspect_ratio: float | None = Field(default=None, ge=1)
    aspect_margin: float = Field(default=1.5, ge=1)
    #: Fewest bits stored accepted (a 1-bit mask is not a radiograph). None: the fewest among the baseline.
    min_bits_stored: int | None = Field(default=None, ge=1)
    @field_validator("allowed_modalities", "allowed_body_parts", "allowed_photometric")
    @classmethod
    def _in_vocabulary(cls, values: list[str], info) -> list[str]:
        # Header values are compared as codes of radiolens.io.vocab (anything else reads as OTHER), so a value
        # outside the vocabulary could never match: refuse it here rather than reject every such image.
        from radiolens.io import vocab

        allowed = {"allowed_modalities": vocab.MODALITIES, "allowed_body_parts": vocab.BODY_PARTS,
                   "allowed_photometric": vocab.PHOTOMETRIC}[info.field_name] | {vocab.OTHER}
        codes = [str(v).strip().upper() for v in values]
        unknown = [v for v in codes if v not in allowed]
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: not in the vocabulary header values are coded to (see "
                             "radiolens.io.vocab); values outside it read as OTHER")
        return codes

    #: Fraction of held-in validation images the learned score may reject (sets its threshold).
    target_false_rejection: float = Field(default=0.02, gt=0, lt=0.5)
    #: Dimensions the model embedding is reduced to (PCA) before its Gaussian density is fitted.
    pca_components: int = Field(default=32, ge=2, le=512)


class DriftConfig(BaseModel):
    """How production windows are compared with the validation baseline, and when that becomes an alert."""

    model_config = ConfigDict(extra="forbid")

    window: int = Field(default=100, ge=5, description="most recent predictions compared with the baseline")
    min_window: int = Field(default=30, ge=5, description="fewer predictions than this: insufficient data")
    check_every: int = Field(default=10, ge=1, description="run the comparison after every N predictions")
    consecutive: int = Field(default=3, ge=1, description="raise an alert only after a signal drifted in this "
                             "many successive checks (filters one-window flukes; adds check_every x (N-1) delay)")
    psi_threshold: float = Field(default=0.25, gt=0, description="PSI above this on a categorical or histogram "
                                 "signal is drift (0.25: the usual 'major shift' level)")
    ks_alpha: float = Field(default=0.01, gt=0, lt=1, description="family-wise level of the KS tests "
                            "(Bonferroni-corrected over all continuous signals)")
    mmd_alpha: float = Field(default=0.01, gt=0, lt=1, description="level of the embedding MMD permutation test")
    mmd_permutations: int = Field(default=200, ge=20)
    ood_rate_alpha: float = Field(default=0.01, gt=0, lt=1, description="level of the binomial test of the "
                                  "gate's rejection rate against its validation rate")
    disagreement_margin: float = Field(default=0.15, ge=0, le=1, description="alert when reader disagreement "
                                       "exceeds the validation error rate by more than this")
    min_feedback: int = Field(default=10, ge=1, description="fewer feedback answers: insufficient data")
    webhook_url: str | None = Field(default=None, description="POST every alert (JSON) here, if set")
    webhook_timeout_s: float = Field(default=5.0, gt=0)

    @field_validator("min_window")
    @classmethod
    def _min_le_window(cls, v: int, info) -> int:
        window = info.data.get("window")
        if window is not None and v > window:
            raise ValueError(f"min_window ({v}) cannot exceed window ({window})")
        return v

    @field_validator("webhook_url")
    @classmethod
    def _http_only(cls, v: str | None) -> str | None:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("webhook_url must be an http:// or https:// URL")
        return v or None


class MonitorConfig(BaseModel):
    """Both parts together: what ``radiolens serve --monitor-config FILE.yaml`` reads."""

    model_config = ConfigDict(extra="forbid")

    gate: GateConfig = Field(default_factory=GateConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)


def load_monitor_config(path: str | Path) -> MonitorConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"monitoring config not found: {path.name}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return MonitorConfig.model_validate(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path.name}: not valid YAML ({type(exc).__name__})") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first.get("loc", ()))
        raise ConfigError(f"{path.name}: {loc or 'config'}: {first.get('msg', 'invalid')}") from exc
