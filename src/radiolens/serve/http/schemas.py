"""Pydantic request/response models: they are the OpenAPI schema clients code against."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

#: A date-time answered with its offset (RFC 3339): SQLite hands back naive UTC values.
UtcDateTime = Annotated[datetime, AfterValidator(lambda d: d if d.tzinfo else d.replace(tzinfo=UTC))]

ADVISORY = "Advisory only - not a diagnosis. For review by a qualified reader."


class ErrorDetail(BaseModel):
    code: str
    message: str = Field(description="what is wrong")
    action: str = Field(description="what to do about it, in words for the person at the viewer")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ModelRef(BaseModel):
    name: str
    version: str
    sha256: str = Field(description="sha256 of the model bundle (.pt)")
    arch: str
    task: str
    operating_point: str
    backend: Literal["torch", "onnx"] = "torch"
    backend_sha256: str | None = Field(default=None, description="sha256 of the .onnx file when backend is onnx")
    precision: str | None = Field(default=None, description="fp32 or int8 (onnx backend)")


class ClassProbability(BaseModel):
    name: str
    probability: float = Field(ge=0, le=1, description="calibrated (temperature-scaled) probability")
    threshold: float
    positive: bool


class Decision(BaseModel):
    label: str
    positive_classes: list[str]
    operating_point: str


class Review(BaseModel):
    flag: bool
    reason: str
    rule: str
    spread: float | None = Field(default=None, description="MC-dropout std of the reviewed probability")


class PixelsInfo(BaseModel):
    """The full-depth copy at ``pixels_url``: ``value = pixel * rescale_slope + rescale_intercept``."""

    rows: int
    columns: int
    bits_stored: int
    photometric: Literal["MONOCHROME1", "MONOCHROME2"] = Field(description="MONOCHROME1: low values are white")
    modality: str | None = Field(default=None, description="DICOM Modality as coded (CT: values in HU)")
    rescale_slope: float
    rescale_intercept: float
    window_center: float = Field(description="default VOI window, in rescaled values")
    window_width: float


class ScopeImage(BaseModel):
    """What the de-identified header kept (keyed 'image': it describes the film, not a person)."""

    age_band: str = Field(description="paediatric (<18) | adult (18-64) | geriatric (>=65) | not stated")
    sex: str = Field(description="male | female | other | not stated")
    view: str = Field(description="DICOM ViewPosition as kept by de-identification (AP, PA, LL, ...) or not stated")


class ScopeModel(BaseModel):
    population: str = Field(description="the model's intended population, or 'population not stated'")
    ages: str | None
    views: list[str]
    input_size: tuple[int, int]


class Scope(BaseModel):
    """The image beside the model's intended population (radiolens.models.population.scope_of)."""

    image: ScopeImage
    model: ScopeModel
    in_scope: bool | None = Field(description="false: outside (see warnings); null: could not be checked")
    warnings: list[str]
    not_checked: list[str] = Field(description="why in_scope could not be judged")


class PredictionOut(BaseModel):
    id: str
    status: Literal["ok", "out_of_distribution"] = Field(
        default="ok", description="out_of_distribution: the input gate found the image outside what the model was "
        "trained on; probabilities are withheld (empty), the decision is 'not assessed' and review is flagged")
    created_at: UtcDateTime
    model: ModelRef
    probabilities: list[ClassProbability] = Field(description="empty when status is not ok")
    decision: Decision
    review: Review
    study_ref: str = Field(description="de-identified study reference: remapped StudyInstanceUID or keyed hash")
    input_sha256: str
    source_format: str
    image_url: str
    heatmap_url: str | None
    heatmap_target: str | None
    pixels_url: str | None = Field(default=None, description="the de-identified image at full bit depth")
    pixels: PixelsInfo | None = None
    scope: Scope | None = Field(default=None, description="null for predictions stored before scope was kept")
    latency_ms: float
    advisory: str = ADVISORY
    monitoring: dict[str, Any] = Field(default_factory=dict, description="filled by monitoring hooks, if any")
    feedback: list[FeedbackOut] = Field(default_factory=list)


class FeedbackIn(BaseModel):
    agree: bool = Field(strict=True)  # JSON true/false only (lax mode also took 0, 1, "yes")
    corrected_label: str | None = Field(default=None, max_length=128)


class FeedbackOut(BaseModel):
    id: int
    prediction_id: str
    created_at: UtcDateTime
    agree: bool
    corrected_label: str | None
    user_id: int | None = Field(default=None, description="the reader's opaque user id")
    superseded_at: UtcDateTime | None = Field(
        default=None, description="when the reader replaced this feedback (PUT); null: their current one")


class WorklistReview(BaseModel):
    flag: bool
    reason: str


class WorklistProbability(BaseModel):
    name: str
    probability: float = Field(ge=0, le=1)
    positive: bool


class WorklistFeedback(BaseModel):
    state: Literal["awaiting", "given", "not_allowed", "unavailable"] = Field(
        description="the requesting reader's feedback: awaiting (none yet), given, not_allowed (the study was not "
        "assessed), unavailable (the result failed its integrity check)")
    agree: bool | None = None
    corrected_label: str | None = None
    given_at: UtcDateTime | None = None


class WorklistItem(BaseModel):
    id: str
    created_at: UtcDateTime
    integrity: Literal["ok", "failed"] = Field(description="failed: the stored result no longer matches the audit "
                                               "chain; its content is withheld")
    status: str | None = Field(description="the input gate's outcome: ok, or why the study was not assessed")
    decision: str | None
    review: WorklistReview | None
    probabilities: list[WorklistProbability]
    feedback: WorklistFeedback


class WorklistOut(BaseModel):
    items: list[WorklistItem]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next (older) page; null: last page")
    limit: int


class SigninIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class SessionOut(BaseModel):
    user_id: int
    role: str
    expires_at: UtcDateTime
    csrf_token: str = Field(description="send in the X-CSRF-Token header of every POST, PUT and DELETE made with "
                            "the session cookie (also readable from the radiolens_csrf cookie)")


class ModelInfo(ModelRef):
    class_names: list[str]
    negative_name: str
    thresholds: list[float]
    temperature: float
    input_size: tuple[int, int]
    population: dict[str, Any] = Field(default_factory=dict, description="intended population (description, "
                                       "age_min_years, age_max_years, views); empty: not stated")
    review_rule: str
    heatmap_method: str | None = Field(
        default=None, description="gradcam (or the configured CAM method) on the PyTorch model; for an ONNX "
        "export served alone: cam (class activation map from its feature maps, equal to Grad-CAM for a global "
        "average pooling + linear head) or eigencam (gradient-free, not class-specific); null: no heatmaps")
    uncertainty_method: Literal["mc-dropout", "none"] = Field(
        default="none", description="mc-dropout: the review flag sees the MC-dropout spread; none: it sees the "
        "probabilities only (an ONNX export has no dropout to sample)")
    review_basis: str = Field(default="", description="what the review flag is computed from, in plain words")


class ModelsOut(BaseModel):
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok", "not_ready"]
    checks: dict[str, str] = Field(default_factory=dict)


class KeyIn(BaseModel):
    role: Literal["clinician", "auditor", "admin"]
    label: str = Field(default="", max_length=128)
    # The pattern admits only lifetimes within auth.MAX_EXPIRY (at most 999 d, 99 w, 9999 h or 999999 m), so
    # every value the schema allows is accepted; the CLI's --expires-in goes up to the full 3660 days.
    expires_in: str | None = Field(default=None, pattern=r"^(never|[1-9][0-9]{0,5}m|[1-9][0-9]{0,3}h|[1-9][0-9]{0,2}d"
                                   r"|[1-9][0-9]?w)$", description="lifetime: a number and a unit m|h|d|w "
                                   "(e.g. 30d); null or 'never': the key does not expire")


class KeyOut(BaseModel):
    id: int
    key_id: str
    role: str
    label: str
    created_at: UtcDateTime
    revoked_at: UtcDateTime | None
    expires_at: UtcDateTime | None = Field(default=None, description="refused (401) from this time on; null: never")
    status: Literal["active", "revoked", "expired"] = "active"
    api_key: str | None = Field(default=None, description="shown once, at creation")


class WhoAmI(BaseModel):
    user_id: int
    role: str


class AuditVerifyOut(BaseModel):
    ok: bool
    rows: int
    head_seq: int
    head_hash: str
    problems: list[str]


class DriftSignal(BaseModel):
    name: str
    test: str = Field(description="ks | psi | mmd | binomial | rate")
    status: Literal["ok", "drift", "insufficient_data"]
    statistic: float | None = None
    p_value: float | None = None
    limit: float | None = Field(default=None, description="p < limit (tests) or statistic > limit (psi, rate): drift")
    psi: float | None = None
    n_window: int = 0
    n_reference: int = 0
    detail: str = ""


class DriftWindow(BaseModel):
    status: Literal["ok", "drift", "insufficient_data"]
    n: int
    reason: str
    first_id: str | None = None
    last_id: str | None = None
    first_at: str | None = None
    last_at: str | None = None
    drifted: list[str] = Field(default_factory=list)
    signals: list[DriftSignal] = Field(default_factory=list)


class MonitoringOut(BaseModel):
    model: ModelRef
    baseline: dict[str, Any] | None = Field(description="validation baseline summary; null: none registered")
    gate: dict[str, Any]
    config: dict[str, Any]
    window: DriftWindow = Field(description="the most recent predictions compared with the baseline, now")
    last_check: dict[str, Any] | None
    active_alerts: list[dict[str, Any]]
    alert_history: list[dict[str, Any]] = Field(description="newest first (from the audit log)")


PredictionOut.model_rebuild()
