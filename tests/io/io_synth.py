"""Synthetic DICOM builder shared by the io tests (a module, not conftest, so imports are unambiguous)."""

from __future__ import annotations

import numpy as np
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
