"""Typed configuration of the inference service (lives beside what it configures)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from radiolens.errors import ConfigError
from radiolens.io.deid import SECRET_ENV, SECRET_FILE_ENV, load_secret, secret_from_env
from radiolens.io.deid_ocr import PixelTextConfig
from radiolens.monitor.config import MonitorConfig

_log = logging.getLogger("radiolens.serve")
#: Environment variable carrying a JSON ``ServeSettings`` to uvicorn worker processes (``--workers > 1``).
SETTINGS_ENV = "RADIOLENS_SERVE_SETTINGS"
#: The de-identification secret comes from the io layer's variables (or a file), so it never has to appear on a
#: command line; the io layer also sets the minimum length.
DEID_SECRET_ENV = SECRET_ENV
DEID_SECRET_FILE_ENV = SECRET_FILE_ENV
ServeBackend = Literal["torch", "onnx"]


class ServeSettings(BaseModel):
    """Everything ``create_app`` needs. Defaults are safe for one workstation; hospitals set db_url and state_dir."""

    model_path: Path
    db_url: str = ""  # empty: SQLite file ``radiolens.db`` inside state_dir
    state_dir: Path = Path("radiolens-state")  # heatmaps and de-identified image copies, named by opaque ids
    deid_secret: str = Field(default="", repr=False)  # HMAC key for UID remapping / raster study refs
    #: Start once with a secret other than the one the database was used with, on purpose: the stored
    #: fingerprint is replaced and a ``deid_key_rotated`` audit row written (otherwise such a start is refused).
    accept_new_deid_secret: bool = False
    #: Accept a de-identification secret published in radiolens' demo script or docs (``PUBLIC_SECRETS``):
    #: for a throw-away demo only, never with real data (anyone could recompute the remapped UIDs).
    insecure_demo_secret: bool = False
    #: Burned-in text in uploaded DICOM pixels, read by Tesseract OCR (radiolens.io.deid_ocr): ``refuse``
    #: (default: HTTP 422 burned_in_annotation, nothing stored), ``mask`` (black boxes, stored as a new
    #: instance) or ``off`` (the header rule alone, no OCR in the upload path).
    pixel_text: PixelTextConfig = Field(default_factory=lambda: PixelTextConfig(policy="refuse"))
    max_upload_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    request_timeout_s: float = Field(default=60.0, gt=0)
    #: Uploads being received, waiting for the inference pool or predicted, per process; more are answered 503
    #: with Retry-After before their body is read (each holds up to max_upload_bytes in memory).
    max_pending_uploads: int = Field(default=6, ge=1, le=1024)
    retry_after_s: int = Field(default=5, ge=1, le=3600)  # the Retry-After of that 503
    #: A connection must send a complete request head within this time (of connecting, or of its previous
    #: response), else it is closed: slow or stalled clients cannot hold connections (serve/http/server.py).
    header_timeout_s: float = Field(default=10.0, gt=0, le=300)
    #: Forward passes at once per process (with micro-batching: batching threads, each running one batch).
    inference_workers: int = Field(default=2, ge=1, le=64)
    #: Dynamic micro-batching (serve/runtime/batching.py): concurrent requests' prepared images run as one
    #: forward pass of up to ``batch_max_size`` images; the oldest waits at most ``batch_max_wait_ms`` for
    #: neighbours. 1 = off: each request runs its own forward pass on its pool thread, as before.
    batch_max_size: int = Field(default=8, ge=1, le=256)
    batch_max_wait_ms: float = Field(default=5.0, ge=0.0, le=1000.0)
    heatmaps: bool = True
    # checked at start-up, not at the first heatmap (explain.cam.METHODS less the benchmark-only "random")
    cam_method: Literal["gradcam", "gradcam++", "scorecam", "eigencam", "layercam", "xgradcam"] = "gradcam"
    auto_migrate: bool = True  # run ``alembic upgrade head`` when the app is created
    display_max_side: int = Field(default=1024, ge=64, le=4096)  # size of the de-identified display copy
    near_threshold_margin: float = Field(default=0.1, ge=0.0, le=0.5)  # fallback triage rule only
    mc_dropout_passes: int = Field(default=8, ge=0, le=64)  # spread for the triage rule; 0/1 = off
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)  # input gate + drift checks and alerts
    #: "onnx": probabilities (and the embedding the gate uses) from ONNX Runtime running ``onnx_path``, an
    #: export of ``model_path`` (fp32 or INT8); heatmaps and MC-dropout still use the PyTorch model.
    #: ``model_path`` may itself be the ``.onnx`` export: then the service runs without PyTorch (the export
    #: carries the bundle's metadata), with no heatmaps and no MC-dropout. None: by ``model_path``'s suffix.
    backend: ServeBackend | None = None
    onnx_path: Path | None = None
    onnx_threads: int | None = Field(default=None, ge=1, le=256)  # ONNX Runtime intra-op threads (None: cores)
    #: DICOMweb STOW-RS (``POST /dicomweb/studies``): received instances are queued, encrypted, in the DICOM
    #: spool (``state_dir/dicom-spool``) and scored by a gateway running on the same state folder (``radiolens
    #: gateway run``); without one they wait there unscored. Off: 404.
    dicomweb_stow: bool = False
    #: Browser sessions of a password sign-in (``POST /v1/session``): refused this long after sign-in, and after
    #: this long without a request (a shared reading-room workstation left signed in).
    session_ttl_s: int = Field(default=8 * 3600, ge=60, le=7 * 24 * 3600)
    session_idle_s: int = Field(default=30 * 60, ge=60, le=24 * 3600)
    #: Failed sign-ins allowed per username and per client address within ``signin_window_s``; more are
    #: answered 429 with Retry-After until the oldest failure leaves the window.
    signin_max_failures_user: int = Field(default=5, ge=1, le=1000)
    signin_max_failures_address: int = Field(default=20, ge=1, le=10000)
    signin_window_s: int = Field(default=15 * 60, ge=10, le=24 * 3600)

    @field_validator("model_path", "state_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return Path(v).expanduser()

    @property
    def batching(self) -> bool:
        return self.batch_max_size > 1

    @property
    def pool_threads(self) -> int:
        """Threads of the inference pool (serve/runtime/pool.py), which ingest, predict and store: one per
        forward pass at once, or, with micro-batching, enough to fill every batching thread's batch (uploads
        in progress stay bounded by ``max_pending_uploads``)."""
        return self.inference_workers * (self.batch_max_size if self.batching else 1)

    @property
    def onnx_only(self) -> bool:
        """The served model is an ONNX export alone (no ``.pt`` bundle, so no PyTorch needed)."""
        return self.model_path.suffix.lower() == ".onnx"

    @model_validator(mode="after")
    def _backend_file(self) -> ServeSettings:
        if self.onnx_only:
            if self.backend == "torch":
                raise ValueError(f"{self.model_path.name} is an ONNX export: it runs only on the onnx backend")
            if self.onnx_path is not None and Path(self.onnx_path) != self.model_path:
                raise ValueError("give the ONNX export either as model_path or as onnx_path (with a .pt model_path)")
            self.backend, self.onnx_path = "onnx", self.model_path
        elif self.backend is None:
            self.backend = "torch"
        if self.backend == "onnx" and self.onnx_path is None:
            raise ValueError("backend 'onnx' needs onnx_path (an export of model_path: `radiolens export`)")
        return self

    def resolved_db_url(self) -> str:
        if self.db_url:
            return self.db_url
        return f"sqlite:///{(self.state_dir / 'radiolens.db').resolve()}"

    def resolved_secret(self) -> str:
        secret = self.deid_secret or secret_from_env()  # a secret file others can read is refused here
        if not secret:
            raise ConfigError(f"a de-identification secret is required: set {DEID_SECRET_ENV} or "
                              f"{DEID_SECRET_FILE_ENV} (keep it stable: it makes remapped study UIDs consistent "
                              "across restarts)")
        # the io layer's rules: length, and a published demo value refused unless insecure_demo_secret
        return load_secret(secret, public="warn" if self.insecure_demo_secret else "refuse",
                           warn=_log.warning)

    def to_env(self) -> str:
        """Settings for worker processes, WITHOUT the secret (env dumps and crash reports show this variable)."""
        return self.model_dump_json(exclude={"deid_secret"})

    def worker_env(self) -> dict[str, str]:
        """Environment for uvicorn worker processes: the settings, plus the secret in its own variable when it
        was given in the settings (a secret from the environment or a file reaches workers the same way)."""
        env = {SETTINGS_ENV: self.to_env()}
        if self.deid_secret:
            env[DEID_SECRET_ENV] = self.deid_secret
        return env

    @classmethod
    def from_env(cls) -> ServeSettings:
        raw = os.environ.get(SETTINGS_ENV)
        if not raw:
            raise ConfigError(f"{SETTINGS_ENV} is not set")
        try:
            return cls.model_validate(json.loads(raw))
        except Exception as exc:
            raise ConfigError(f"{SETTINGS_ENV}: invalid settings ({type(exc).__name__})") from exc



def secret_fingerprint(secret: str) -> str:
    """A short, non-reversible tag of the secret (HMAC-SHA256 of a fixed label, 16 hex digits), shown in logs
    and ``/v1/service`` so an operator can tell that the secret changed without ever seeing it."""
    import hashlib
    import hmac

    return hmac.new(secret.encode("utf-8"), b"radiolens deid-secret fingerprint v1", hashlib.sha256).hexdigest()[:16]
