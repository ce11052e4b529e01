"""Process-wide settings that every layer may read (lowest layer: imports nothing from radiolens)."""

from __future__ import annotations

import os
from pathlib import Path

from radiolens.errors import ConfigError

DATA_DIR_ENV = "RADIOLENS_DATA_DIR"


def data_dir(required: bool = True) -> Path | None:
    """The folder holding the real data sets (``../shared/data`` in CI), from ``RADIOLENS_DATA_DIR``."""
    value = os.environ.get(DATA_DIR_ENV)
    if not value:
        if required:
            raise ConfigError(f"{DATA_DIR_ENV} is not set: point it at the real data folder (../shared/data)")
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(f"{DATA_DIR_ENV}={value} is not a directory")
    return path
