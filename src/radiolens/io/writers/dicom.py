"""DICOM files radiolens writes: the de-identified copies of ``radiolens deid`` and the result objects built by
:mod:`radiolens.io.writers.dicom_sr` (Structured Report) and :mod:`radiolens.io.writers.dicom_sc` (Secondary
Capture).

Written atomically (a ``.part`` file renamed into place), so an interrupted run never leaves a half-written file
that a later walk would take for a de-identified result.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from pydicom.dataset import Dataset

from radiolens.errors import InputError
from radiolens.io.formats import DICOM


def dicom_file_name(ds: Dataset) -> str:
    """File name from the (remapped) SOP Instance UID: unique, stable, PHI-free once de-identified."""
    return f"{ds.SOPInstanceUID}{DICOM.suffix}"


def write_dicom(ds: Dataset, dst: str | Path, *, name: str) -> Path:
    """Write ``ds`` as a DICOM file (preamble, file meta) at ``dst``, atomically; returns ``dst``.

    ``name`` is what an error calls the source. pydicom's warnings are silenced: they can quote element values.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(tmp, enforce_file_format=True)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"{name}: DICOM data set could not be written ({type(exc).__name__})") from None
    os.replace(tmp, dst)
    return dst
