"""Typed configuration of the inference service (lives beside what it configures)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from radiolens.errors import ConfigError
from radiolens.monitor.config import MonitorConfig

#: Environment variable carrying a JSON ``ServeSettings`` to uvicorn worker processes (``--workers > 1``).
SETTINGS_ENV = "RADIOLENS_SERVE_SETTINGS"
#: Environment variable holding the de-identification secret, so it never has to appear on a command line.
DEID_SECRET_ENV = "RADIOLENS_DEID_SECRET"


class ServeSettings(BaseModel):
    """Everything ``create_app`` needs. Defaults are safe for one workstation; hospitals set db_url and state_dir."""

    model_path: Path
    db_url: str = ""  # empty: SQLite file ``radiolens.db`` inside state_dir
    state_dir: Path = Path("radiolens-state")  # heatmaps and de-identified image copies, named by opaque ids
    deid_secret: str = Field(default="", repr=False)  # HMAC key for UID remapping / raster study refs
    max_upload_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    request_timeout_s: float = Field(default=60.0, gt=0)
    inference_workers: int = Field(default=2, ge=1, le=64)
    heatmaps: bool = True
    cam_method: str = "gradcam"
    auto_migrate: bool = True  # run ``alembic upgrade head`` when the app is created
    display_max_side: int = Field(default=1024, ge=64, le=4096)  # size of the de-identified display copy
    near_threshold_margin: float = Field(default=0.1, ge=0.0, le=0.5)  # fallback triage rule only
    mc_dropout_passes: int = Field(default=8, ge=0, le=64)  # spread for the triage rule; 0/1 = off
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)  # input gate + drift checks and alerts

    @field_validator("model_path", "state_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return Path(v).expanduser()

    def resolved_db_url(self) -> str:
        if self.db_url:
            return self.db_url
        return f"sqlite:///{(self.state_dir / 'radiolens.db').resolve()}"

    def resolved_secret(self) -> str:
        secret = self.deid_secret or os.environ.get(DEID_SECRET_ENV, "")
        if not secret:
            raise ConfigError(f"a de-identification secret is required: set {DEID_SECRET_ENV} (keep it stable: "
                              "it makes remapped study UIDs consistent across restarts)")
        return secret

    def to_env(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_env(cls) -> ServeSettings:
        raw = os.environ.get(SETTINGS_ENV)
        if not raw:
            raise ConfigError(f"{SETTINGS_ENV} is not set")
        try:
            return cls.model_validate(json.loads(raw))
        except Exception as exc:
            raise ConfigError(f"{SETTINGS_ENV}: invalid settings ({type(exc).__name__})") from exc
