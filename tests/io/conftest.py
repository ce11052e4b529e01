"""Fixtures of the io tests: synthetic DICOM builder and paths to the real files used throughout."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from io_synth import SIIM_DICOM, build_dataset


@pytest.fixture
def write_dicom(tmp_path):
    """Write a synthetic data set to ``tmp_path/name`` and return the path."""

    def _write(name: str, pixels: np.ndarray | None, **kwargs) -> Path:
        ds = build_dataset(pixels, **kwargs)
        path = tmp_path / name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(path, enforce_file_format=True)
        return path

    return _write


@pytest.fixture(scope="session")
def pydicom_dir(pydicom_data_files) -> Path:
    return pydicom_data_files[0].parent


@pytest.fixture(scope="session")
def siim_dicom(data_dir) -> Path:
    path = data_dir / SIIM_DICOM
    assert path.is_file(), f"SIIM DICOM missing under RADIOLENS_DATA_DIR: {SIIM_DICOM}"
    return path
