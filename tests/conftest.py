"""Shared fixtures. Real-data tests read RADIOLENS_DATA_DIR and FAIL (never skip) when it is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    value = os.environ.get("RADIOLENS_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.fail("RADIOLENS_DATA_DIR must point at the real data folder (../shared/data); "
                    f"got {value!r}. Real-data tests fail rather than skip.")
    return Path(value)


@pytest.fixture(scope="session")
def pydicom_data_files() -> list[Path]:
    """Every file of the pydicom-data package (real DICOM test corpus), downloaded as a PyPI package."""
    try:
        import data_store  # the import name of the pydicom-data package
    except ImportError:
        pytest.fail("the pydicom-data package is required (pip install -e '.[dev]')")
    root = Path(data_store.__file__).parent / "data"
    files = sorted(p for p in root.rglob("*.dcm") if p.is_file())
    if not files:
        pytest.fail(f"pydicom-data holds no files under {root}")
    return files
