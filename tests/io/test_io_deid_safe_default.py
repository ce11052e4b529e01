"""Nothing that can carry text or a time point survives de-identification by default.

Every public attribute of pydicom's data dictionary with a text, name, date or time VR is planted into a real
file (top level, inside a kept sequence item, two levels deep in a sequence the Annex E table does not list,
and free text into the file meta and the 128-byte preamble), then every output byte is searched. Regression:
the preamble was copied verbatim, and attributes the table misses (Patient's Birth/Death Date in Alternative
Calendar, several DA/DT attributes, anything added to DICOM after the table's edition) were kept as they were.
"""

from __future__ import annotations

import datetime as dt
import warnings

import pydicom
import pytest
from pydicom.datadict import DicomDictionary, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from radiolens.io.deid import _ACTIONS, DATE_TIME_VRS, KEPT_TEXT, RETAINED, TEXT_VRS, Deidentifier

SECRET = "safe-default-secret-0123"
MARK = "Q7X"  # every planted text value starts with it, so one search finds any survivor
KEPT_MARK = "K7P"  # planted into the attributes radiolens keeps on purpose: they must still be there
PLANTED_DATE = "19610407"
#: A public tag absent from the dictionary (an attribute newer than pydicom's copy of DICOM): its VR is UN.
UNKNOWN_PUBLIC = Tag(0x0018, 0x9FFE)


def _plantable() -> dict[int, tuple[str, str]]:
    """tag -> (VR, keyword) for every dictionary attribute with a text/date/time VR outside groups 0000/0002."""
    out = {}
    for tag, entry in DicomDictionary.items():
        vr, keyword = entry[0], entry[4]
        if vr in TEXT_VRS | DATE_TIME_VRS and Tag(tag).group not in (0x0000, 0x0002) and keyword:
            out[tag] = (vr, keyword)
    return out


def _value(tag: int, vr: str, index: int, kept: bool):
    mark = KEPT_MARK if kept else MARK
    date = "20010203" if kept else PLANTED_DATE
    if vr == "DA":
        return date
    if vr == "DT":
        return f"{date}1234{index % 60:02d}"
    if vr == "TM":
        return f"2359{index % 60:02d}.{index:06d}"  # unique per attribute
    if vr == "AS":
        return "077Y"
    if vr == "PN":
        return f"{mark}^T{tag:08X}"
    return f"{mark}{tag:08X}"  # 11 characters: fits SH and AE (16)


def _plant(ds: Dataset, attrs: dict[int, tuple[str, str]]) -> None:
    for i, (tag, (vr, _)) in enumerate(sorted(attrs.items())):
        ds.add_new(tag, vr, _value(tag, vr, i, Tag(tag) in KEPT_TEXT))
    ds.add_new(UNKNOWN_PUBLIC, "UN", f"{MARK} unknown attribute".encode())


@pytest.fixture(scope="module")
def attrs() -> dict[int, tuple[str, str]]:
    found = _plantable()
    names = {kw for _, kw in found.values()}
    # the attributes the issue found kept are among those planted
    assert {"PatientBirthDateInAlternativeCalendar", "PatientDeathDateInAlternativeCalendar"} <= names
    assert UNKNOWN_PUBLIC not in DicomDictionary
    return found


@pytest.fixture(scope="module")
def planted(attrs, pydicom_dir, tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(pydicom_dir / "RG1_UNCR.dcm")
    ds.BurnedInAnnotation = "NO"
    ds.preamble = f"{MARK} preamble: Quenby^Zebediah".encode().ljust(128, b"\x00")
    _plant(ds, attrs)
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    _plant(ref, attrs)
    ds.ReferencedImageSequence = Sequence([ref])  # X/Z/U*: kept, items cleaned
    unlisted = next(kw for tag, (vr, kw) in sorted((t, (e[0], e[4])) for t, e in DicomDictionary.items())
                    if vr == "SQ" and kw and Tag(tag) not in _ACTIONS and Tag(tag).group == 0x0018)
    inner, outer = Dataset(), Dataset()
    _plant(inner, attrs)
    outer.add_new(Tag(unlisted), "SQ", Sequence([inner]))
    setattr(ds, unlisted, Sequence([outer]))
    for keyword in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
                    "ReceivingApplicationEntityTitle"):
        setattr(ds.file_meta, keyword, f"{MARK}META")
    ds.file_meta.ImplementationVersionName = f"{MARK}IMPLVER"
    ds.file_meta.PrivateInformationCreatorUID = "1.2.3.4.5"
    ds.file_meta.PrivateInformation = f"{MARK} private information".encode()
    path = tmp_path_factory.mktemp("safe_in") / "planted.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    assert data[:3] == MARK.encode() and data.count(MARK.encode()) > 3 * len(attrs) // 2  # planting worked
    return path


@pytest.mark.parametrize("shift_dates", [False, True])
def test_no_planted_text_or_date_survives(planted, attrs, shift_dates, tmp_path):
    report = Deidentifier(SECRET, shift_dates=shift_dates).deidentify_file(planted, tmp_path)
    out = tmp_path / report["output"]
    data = out.read_bytes()
    assert data[:128] == b"\x00" * 128  # preamble zeroed
    survivors = []
    start = data.find(MARK.encode())
    while start >= 0:
        survivors.append(data[max(0, start - 8):start + 16])
        start = data.find(MARK.encode(), start + 1)
    assert not survivors, f"{len(survivors)} planted values survive, e.g. {survivors[:5]}"
    assert PLANTED_DATE.encode() not in data  # DA and the date part of DT: dummied, or shifted by >= 1 day
    planted_times = {_value(t, vr, i, False).encode() for i, (t, (vr, _)) in enumerate(sorted(attrs.items()))
                     if vr == "TM" and Tag(t) not in KEPT_TEXT}
    assert not [t for t in planted_times if t in data]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clean = pydicom.dcmread(out)
    # the attributes kept on purpose are still there, unchanged, at every level (the keep list is real)
    kept_top = {keyword_for_tag(t) for t in KEPT_TEXT if t in clean and str(clean[t].value).startswith(KEPT_MARK)}
    assert kept_top == {keyword_for_tag(t) for t in KEPT_TEXT if attrs.get(int(t), ("",))[0] in TEXT_VRS}
    assert sum(data.count(f"{KEPT_MARK}{int(t):08X}".encode()) for t in KEPT_TEXT) >= 3 * len(kept_top)
    # the retained characteristic stays; dates are dummied or shifted by the patient's offset
    assert clean.PatientAge == "077Y" and Tag("PatientAge") in RETAINED
    for keyword in ("PatientBirthDateInAlternativeCalendar", "PatientDeathDateInAlternativeCalendar"):
        assert keyword not in clean  # birth/death dates (LO): removed, with or without --shift-dates
    if shift_dates:  # DA/DT move back by the patient's offset, consistently
        days = Deidentifier(SECRET).date_offset_days(_source_patient_key(planted))
        shifted = (dt.date(1961, 4, 7) - dt.timedelta(days=days)).strftime("%Y%m%d")
        assert clean.StudyDate == shifted and clean.AcquisitionDateTime.startswith(shifted)
        assert report["dates_shifted"] > 0
    else:
        assert clean.StudyDate == ""  # Annex E: Z


def _source_patient_key(path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.get("PatientID", "") or "").strip() or str(ds.get("PatientName", "") or "")
