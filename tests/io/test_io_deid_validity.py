"""Every DICOM radiolens writes is valid: dciodvfy (dicom3tools) finds no error its source did not have, and
every value passes pydicom's VR checks in RAISE mode. Regression: DeidentificationMethod was written with
89 (105 with --shift-dates) characters, beyond the 64 its VR (LO) allows; X/Z/D attributes that are Type 1
in the IOD were emptied; Type 2 sequences removed; Type 3 sequences left present but empty."""

from __future__ import annotations

import warnings

import pydicom
import pytest
from pydicom import config
from pydicom.valuerep import validate_value

from dicom_validate import new_dciodvfy_errors
from radiolens.errors import InputError
from radiolens.io import read_image
from radiolens.io.deid import Deidentifier

SECRET = "validity-test-secret-0123"


def _read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=True)


def _vr_failures(ds) -> set[tuple[int, str, str]]:
    """(tag, VR, value) of every value pydicom's validators reject in RAISE mode, at any depth."""
    bad = set()
    for elem in ds.iterall():
        if elem.VR in ("SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN") or elem.value is None:
            continue
        values = elem.value if isinstance(elem.value, pydicom.multival.MultiValue) else [elem.value]
        for value in values:
            try:
                validate_value(elem.VR, value, config.RAISE)
            except ValueError:
                bad.add((int(elem.tag), elem.VR, str(value)))
    return bad


@pytest.fixture
def strict_writing():
    """pydicom's writing checks (character-set encoding, unknown tags) raise instead of warning."""
    before = config.settings._writing_validation_mode
    config.settings.writing_validation_mode = config.RAISE
    yield
    config.settings._writing_validation_mode = before


@pytest.mark.parametrize("shift_dates", [False, True])
def test_every_deidentified_real_file_is_valid_dicom(pydicom_data_files, siim_dicom, shift_dates, tmp_path,
                                                     strict_writing):
    deid = Deidentifier(SECRET, shift_dates=shift_dates, allow_burned_in=True)
    checked, problems = 0, {}
    for src in [*pydicom_data_files, siim_dicom]:
        try:
            read_image(src)
        except InputError:  # unreadable sources (a truncated file) are refused, not written
            with pytest.raises(InputError):
                deid.deidentify_file(src, tmp_path)
            continue
        out = tmp_path / deid.deidentify_file(src, tmp_path)["output"]
        clean = _read(out)
        added = sorted(new_dciodvfy_errors(out, src))
        vr_bad = _vr_failures(clean) - _vr_failures(_read(src))
        if added or vr_bad:
            problems[src.name] = (added, sorted(vr_bad))
        assert all(len(v) <= 64 for v in clean.DeidentificationMethod), src.name
        checked += 1
    assert not problems, problems
    assert checked >= 65  # 68 of the 70 real files decode (one is truncated, one has no usable pixels)
