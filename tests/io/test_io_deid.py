"""De-identification library behaviour (API the HTTP service uses), on real pydicom-data files and synthetic ones."""

from __future__ import annotations

import copy
import re
import warnings

import numpy as np
import pydicom
import pytest
from io_synth import build_dataset
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from radiolens.errors import BurnedInAnnotationError, ConfigError
from radiolens.io.deid import SECRET_ENV, Deidentifier

SECRET = "unit-test-secret-0123"
UID_RE = re.compile(r"^2\.25\.(0|[1-9]\d*)$")


def _read(path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


def test_secret_is_required(monkeypatch):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    for bad in ("", b"", "short"):
        with pytest.raises(ConfigError):
            Deidentifier(bad)
    monkeypatch.setenv(SECRET_ENV, "from-the-environment")
    assert Deidentifier("").remap_uid("1.2.3") == Deidentifier("from-the-environment").remap_uid("1.2.3")


def test_remap_uid_is_keyed_valid_and_stable():
    a, b = Deidentifier(SECRET), Deidentifier(SECRET + "x")
    uid = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819"
    out = a.remap_uid(uid)
    assert UID_RE.match(out) and len(out) <= 64
    assert out == Deidentifier(SECRET.encode()).remap_uid(uid)  # str and bytes secrets agree
    assert out != b.remap_uid(uid) and out != a.remap_uid(uid + "0")
    assert a.remap_uid("1.2.840.10008.5.1.4.1.1.1") == "1.2.840.10008.5.1.4.1.1.1"  # standard UIDs kept


def test_dataset_actions_on_real_cr(pydicom_dir):
    ds = _read(pydicom_dir / "RG1_UNCR.dcm")
    ds.PatientAge, ds.PatientSex, ds.PatientSize, ds.PatientWeight = "062Y", "M", 1.8, 80
    ds.PatientBirthDate = "19610407"
    ds.add_new(0x00110010, "LO", "ACME")
    ds.add_new(0x00111001, "LO", "private phi")
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    ds.ReferencedImageSequence = Sequence([ref])
    before = copy.deepcopy(ds)
    deid = Deidentifier(SECRET)
    clean, report = deid.deidentify_dataset(ds)

    assert ds == before  # input untouched
    assert clean.StudyInstanceUID == deid.remap_uid(before.StudyInstanceUID)
    assert clean.SeriesInstanceUID == deid.remap_uid(before.SeriesInstanceUID)
    assert clean.SOPInstanceUID == deid.remap_uid(before.SOPInstanceUID)
    assert clean.file_meta.MediaStorageSOPInstanceUID == clean.SOPInstanceUID
    assert clean.ReferencedImageSequence[0].ReferencedSOPInstanceUID == clean.SOPInstanceUID  # nested, consistent
    assert clean.SOPClassUID == before.SOPClassUID
    assert (clean.PatientAge, clean.PatientSex, float(clean.PatientSize), float(clean.PatientWeight)) == \
        ("062Y", "M", 1.8, 80.0)
    assert str(clean.PatientName) == clean.PatientID == report["patient_pseudonym"]
    assert clean.PatientID.startswith("RL-") and before.PatientID not in clean.PatientID
    assert clean.PatientBirthDate == ""
    assert not any(e.tag.is_private for e in clean.iterall())
    assert clean.PatientIdentityRemoved == "YES"
    assert {i.CodeValue for i in clean.DeidentificationMethodCodeSequence} == {"113100", "113108"}
    assert clean.PixelData == before.PixelData
    for value in report.values():
        assert "CompressedSamples" not in str(value) and before.StudyInstanceUID not in str(value)


def test_date_shift_is_per_patient_and_consistent():
    deid = Deidentifier(SECRET, shift_dates=True)
    a1 = build_dataset(np.zeros((4, 4), np.uint16), StudyDate="20200315", PatientID="P-1")
    a2 = build_dataset(np.zeros((4, 4), np.uint16), StudyDate="20200320", PatientID="P-1")
    b = build_dataset(np.zeros((4, 4), np.uint16), StudyDate="20200315", PatientID="P-2")
    ca1, ca2, cb = (deid.deidentify_dataset(x)[0] for x in (a1, a2, b))
    import datetime as dt

    def day(s: str) -> dt.date:
        return dt.datetime.strptime(s, "%Y%m%d").date()

    assert ca1.StudyDate != "20200315"
    assert (day(ca2.StudyDate) - day(ca1.StudyDate)).days == 5  # intervals within a patient survive
    assert 1 <= (day("20200315") - day(ca1.StudyDate)).days <= 3650
    assert ca1.StudyDate != cb.StudyDate  # offsets differ between these two patients (keyed)
    assert "113107" in {i.CodeValue for i in ca1.DeidentificationMethodCodeSequence}
    plain = Deidentifier(SECRET).deidentify_dataset(a1)[0]
    assert plain.StudyDate == ""  # without the option dates are emptied (Annex E Z)


@pytest.mark.parametrize(("modality", "burned", "allowed"), [
    ("CR", None, True), ("CR", "YES", False), ("US", None, False), ("US", "NO", True),
    ("SC", None, False), ("OT", None, False), ("XA", None, False), ("ES", None, False), ("DX", "NO", True)])
def test_burned_in_policy(modality, burned, allowed):
    ds = build_dataset(np.zeros((4, 4), np.uint16), Modality=modality)
    if burned is not None:
        ds.BurnedInAnnotation = burned
    if allowed:
        Deidentifier(SECRET).deidentify_dataset(ds)
    else:
        with pytest.raises(BurnedInAnnotationError):
            Deidentifier(SECRET).deidentify_dataset(ds)
        clean, report = Deidentifier(SECRET, allow_burned_in=True).deidentify_dataset(ds)
        assert report["status"] == "ok"


def test_very_old_age_is_aggregated():
    ds = build_dataset(np.zeros((4, 4), np.uint16), PatientAge="093Y")
    assert Deidentifier(SECRET).deidentify_dataset(ds)[0].PatientAge == "090Y"


def test_deidentify_file_is_byte_identical_and_named_by_uid(pydicom_dir, tmp_path):
    deid = Deidentifier(SECRET, shift_dates=True)
    src = pydicom_dir / "RG1_J2KR.dcm"
    original = src.read_bytes()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ra = deid.deidentify_file(src, tmp_path / "a")
    rb = deid.deidentify_file(src, tmp_path / "b")
    assert ra == rb and ra["output"] == f"{ra['sop_instance_uid']}.dcm"
    assert (tmp_path / "a" / ra["output"]).read_bytes() == (tmp_path / "b" / rb["output"]).read_bytes()
    assert src.read_bytes() == original
    out = _read(tmp_path / "a" / ra["output"])
    assert out.file_meta.TransferSyntaxUID == _read(src).file_meta.TransferSyntaxUID
    # the codestream's comment segment is gone, the image data is the same
    assert out.PixelData != _read(src).PixelData and ra["stream_segments_removed"] >= 1
    assert np.array_equal(out.pixel_array, _read(src).pixel_array)


def test_every_corpus_file_deidentifies_to_identical_pixels(pydicom_data_files, tmp_path):
    """All of pydicom-data through the de-identifier: output re-reads and decodes to the same pixels."""
    from radiolens.errors import InputError
    from radiolens.io import read_image

    deid = Deidentifier(SECRET, shift_dates=True, allow_burned_in=True)
    done = 0
    for path in pydicom_data_files:
        try:
            expected = read_image(path).pixels
        except InputError:
            with pytest.raises(InputError):
                deid.deidentify_file(path, tmp_path)
            continue
        report = deid.deidentify_file(path, tmp_path)
        out = tmp_path / report["output"]
        clean = _read(out)
        assert clean.PatientIdentityRemoved == "YES" and UID_RE.match(clean.SOPInstanceUID), path.name
        assert np.array_equal(read_image(out).pixels, expected), path.name
        done += 1
    assert done >= 60


def test_secret_floor_and_file_are_shared_with_the_service(monkeypatch, tmp_path):
    """One rule for ``radiolens deid`` and ``radiolens serve``: 16 bytes, from the argument, env or a file."""
    from radiolens.io.deid import SECRET_FILE_ENV

    monkeypatch.delenv(SECRET_ENV, raising=False)
    with pytest.raises(ConfigError, match="shorter than 16 bytes"):
        Deidentifier("fifteen-chars!!")
    Deidentifier("sixteen-chars!!!")
    secret_file = tmp_path / "deid-secret"
    secret_file.write_text("  from-a-mounted-secret-file \n", encoding="utf-8")
    secret_file.chmod(0o600)  # a secret file others can read is refused (tests/serve/test_state_permissions.py)
    monkeypatch.setenv(SECRET_FILE_ENV, str(secret_file))
    assert Deidentifier("").remap_uid("1.2.3") == Deidentifier("from-a-mounted-secret-file").remap_uid("1.2.3")
    monkeypatch.setenv(SECRET_ENV, "a-different-secret-value")
    with pytest.raises(ConfigError, match="both set and differ"):
        Deidentifier("")


SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


@pytest.mark.parametrize("attrs", [
    {"BurnedInAnnotation": ["YES", "NO"]},  # multi-valued: not a single NO
    {"BurnedInAnnotation": ["NO", "NO"]},
    {"BurnedInAnnotation": "no"},  # not the defined term
    {"BurnedInAnnotation": "MAYBE"},
    {"Modality": ["US", "CR"]},  # any value in the risky set counts
    {"Modality": ["CR", "US"]},
    {"Modality": "us"},
    {"Modality": None},  # missing modality
    {"Modality": ""},
    {"SOPClassUID": SC_STORAGE, "Modality": None},  # Secondary Capture without Modality
    {"SOPClassUID": SC_STORAGE},  # Secondary Capture of a CR
    {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7.2"},  # multi-frame grayscale byte SC
    {"ConversionType": "WSD"},
    {"ImageType": ["DERIVED", "SECONDARY"]},
])
def test_possibly_burned_in_is_refused_in_every_form(attrs, tmp_path):
    """Regression: ``YES\\NO``, ``US\\CR`` and Secondary Capture without Modality used to be accepted."""
    ds = build_dataset(np.zeros((4, 4), np.uint16))
    for keyword, value in attrs.items():
        if value is None:
            del ds[keyword]
        else:
            setattr(ds, keyword, value)
    if "SOPClassUID" in attrs:
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    with pytest.raises(BurnedInAnnotationError):
        Deidentifier(SECRET).deidentify_dataset(ds)
    src = tmp_path / "in.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(src, enforce_file_format=True)
    (tmp_path / "out").mkdir()
    with pytest.raises(BurnedInAnnotationError):
        Deidentifier(SECRET).deidentify_file(src, tmp_path / "out")
    assert not list((tmp_path / "out").iterdir())  # nothing written
    # a single, exact NO is the reviewed statement that lets every one of them through ...
    if "BurnedInAnnotation" not in attrs:
        ds.BurnedInAnnotation = "NO"
        assert Deidentifier(SECRET).deidentify_dataset(ds)[1]["burned_in_annotation"] == "NO"
    # ... and --allow-burned-in processes them, reporting what the file said
    report = Deidentifier(SECRET, allow_burned_in=True).deidentify_dataset(ds)[1]
    assert report["status"] == "ok"
