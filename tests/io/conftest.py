"""Fixtures of the io tests: synthetic DICOM builder and paths to the real files used throughout."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SIIM_DICOM = "siim_acr_pneumothorax/dicom/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def build_dataset(pixels: np.ndarray | None, *, photometric: str = "MONOCHROME2", bits_stored: int | None = None,
                  **attrs) -> Dataset:
    """A minimal, valid CR image data set around ``pixels`` ((H, W) or (F, H, W) unsigned/signed ints)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "CR"
    ds.PatientName, ds.PatientID = "Synthetic^Patient", "SYN-1"
    if pixels is not None:
        arr = np.asarray(pixels)
        if arr.ndim == 3:
            ds.NumberOfFrames = arr.shape[0]
        ds.Rows, ds.Columns = arr.shape[-2], arr.shape[-1]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = arr.dtype.itemsize * 8
        ds.BitsStored = bits_stored or ds.BitsAllocated
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
        ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


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
