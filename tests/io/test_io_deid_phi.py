"""PHI planted into real files must not survive ``radiolens deid`` anywhere: output bytes, names or report."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from typer.testing import CliRunner

from radiolens.cli import app
from radiolens.io import read_image

pytestmark = pytest.mark.realdata

SECRET = "phi-test-secret-4711"
PHI = {
    "PatientName": "Quenby^Zebediah^Archibald",
    "PatientID": "PID99817263",
    "PatientBirthDate": "19610407",
    "OtherPatientIDs": "OTHERID55512",
    "PatientAddress": "42 Wallaby Way Sydney",
    "PatientTelephoneNumbers": "5550199887",
    "InstitutionName": "Saint Elsewhere Hospital",
    "InstitutionAddress": "1 Hospital Road Gotham",
    "ReferringPhysicianName": "Ramoray^Drake",
    "PerformingPhysicianName": "Houseman^Gregory",
    "OperatorsName": "Tech^Wilhelmina",
    "AccessionNumber": "ACC7781234",
    "StudyID": "STUDY90210",
    "ImageComments": "Zebediah fell at home, call daughter Philippa",
    "StudyDescription": "QUENBY CHEST FOLLOWUP",
    "SeriesDescription": "Quenby portable series",
    "AdditionalPatientHistory": "smoker, lives alone at Wallaby Way",
    "StationName": "XRAYROOM7QUENBY",
    "DeviceSerialNumber": "SN-88123-XYZ",
}
PRIVATE_PHI = "Archibald private note"
NESTED_PHI = "Nestedname^Philippa"
REQUEST_PHI = "REQPROC31337"


def _needles(value: str) -> set[bytes]:
    """Byte patterns to hunt: the value and its parts, in common encodings and case variants."""
    parts = {value, value.replace("^", " ")}
    if "^" in value:  # person names: every component on its own too
        parts |= {p for p in value.split("^") if len(p) >= 4}
    if len(value) == 8 and value.isdigit():  # a date: also ISO and US spellings
        parts |= {f"{value[:4]}-{value[4:6]}-{value[6:]}", f"{value[4:6]}/{value[6:]}/{value[:4]}"}
    out: set[bytes] = set()
    for p in parts:
        for variant in (p, p.upper(), p.lower(), p.title()):
            for enc in ("utf-8", "utf-16-le", "utf-16-be"):
                out.add(variant.encode(enc))
    return out


def _plant(src: Path, dst: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(src)
        for keyword, value in PHI.items():
            setattr(ds, keyword, value)
        ds.BurnedInAnnotation = "NO"
        block = ds.private_block(0x0011, "ACME PHI CREATOR", create=True)
        block.add_new(0x01, "LO", PRIVATE_PHI)
        ref = Dataset()
        ref.ReferencedSOPClassUID = ds.SOPClassUID
        ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
        ref.OperatorsName = NESTED_PHI  # PHI inside an item of a sequence that is kept (UIDs remapped)
        ds.ReferencedImageSequence = Sequence([ref])
        req = Dataset()
        req.RequestedProcedureID = REQUEST_PHI
        req.ScheduledProcedureStepDescription = "for Quenby"
        ds.RequestAttributesSequence = Sequence([req])
        ds.save_as(dst, enforce_file_format=True)


@pytest.fixture(scope="module")
def planted(tmp_path_factory, data_dir, pydicom_data_files) -> Path:
    from io_synth import SIIM_DICOM

    corpus = pydicom_data_files[0].parent
    folder = tmp_path_factory.mktemp("phi_in")
    (folder / "Quenby_Zebediah").mkdir()  # PHI in a folder name, and in file names
    sources = {"siim_Quenby.dcm": data_dir / SIIM_DICOM, "RG1_UNCR_Quenby.dcm": corpus / "RG1_UNCR.dcm",
               "RG1_J2KR_Quenby.dcm": corpus / "RG1_J2KR.dcm", "CT_693_Quenby.dcm": corpus / "693_UNCR.dcm"}
    for name, src in sources.items():
        _plant(src, folder / "Quenby_Zebediah" / name)
    return folder


def _run(args: list[str]):
    return CliRunner().invoke(app, args, catch_exceptions=False)


def _ds(path: Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


@pytest.fixture(scope="module")
def deid_out(planted, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phi_out")
    result = _run(["deid", str(planted), str(out), "--secret", SECRET])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def deid_out_shifted(planted, tmp_path_factory) -> Path:
    """Same inputs with --shift-dates: dates are kept (shifted), so the scan must still find no PHI."""
    out = tmp_path_factory.mktemp("phi_out_shifted")
    result = _run(["deid", str(planted), str(out), "--secret", SECRET, "--shift-dates"])
    assert result.exit_code == 0, result.output
    return out


def test_shift_dates_keeps_shifted_dates(planted, deid_out_shifted):
    rows = json.loads((deid_out_shifted / "deid_report.json").read_text())["files"]
    report = {r["sop_instance_uid"]: r for r in rows}
    from radiolens.io.deid import Deidentifier

    mapper = Deidentifier(SECRET)
    shifted = 0
    for src in sorted(planted.rglob("*.dcm")):
        original = _ds(src)
        clean = _ds(deid_out_shifted / report[mapper.remap_uid(original.SOPInstanceUID)]["output"])
        assert not clean.get("PatientBirthDate")  # always emptied, shifted or not
        if original.get("StudyDate"):
            assert clean.StudyDate and clean.StudyDate != original.StudyDate
            shifted += 1
    assert shifted >= 1  # the scan below covers outputs that really carry (shifted) dates


@pytest.mark.parametrize("which", ["deid_out", "deid_out_shifted"])
def test_no_planted_phi_anywhere_in_output(planted, which, request):
    deid_out = request.getfixturevalue(which)
    originals = [_ds(p) for p in sorted(planted.rglob("*.dcm"))]
    needles = set()
    for value in [*PHI.values(), PRIVATE_PHI, NESTED_PHI, REQUEST_PHI, "Quenby", "Zebediah", "Philippa", "Wallaby"]:
        needles |= _needles(value)
    for ds in originals:  # the real identifiers of the source files are PHI too
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
            needles.add(str(uid).encode())
    planted_bytes = b"".join(p.read_bytes() for p in planted.rglob("*.dcm"))
    for value in [*PHI.values(), PRIVATE_PHI, NESTED_PHI, REQUEST_PHI]:  # the hunt is not vacuous
        assert value.encode() in planted_bytes, value
    files = sorted(p for p in deid_out.rglob("*") if p.is_file())
    assert len([p for p in files if p.suffix == ".dcm"]) == 4
    assert {"deid_report.csv", "deid_report.json"} <= {p.name for p in files}
    for path in files:
        blob = path.read_bytes() + path.name.encode()
        found = [n for n in needles if n in blob]
        assert not found, f"{path.name} still contains {found[:3]}"


def test_pixels_unchanged_and_characteristics_kept(planted, deid_out):
    report = json.loads((deid_out / "deid_report.json").read_text())["files"]
    assert all(r["status"] == "ok" for r in report)
    by_sop = {}
    deid_sops = {r["sop_instance_uid"]: deid_out / r["output"] for r in report}
    from radiolens.io.deid import Deidentifier

    mapper = Deidentifier(SECRET)
    for src in sorted(planted.rglob("*.dcm")):
        original = _ds(src)
        out_path = deid_sops[mapper.remap_uid(original.SOPInstanceUID)]
        clean = _ds(out_path)
        by_sop[src.name] = clean
        if not original.file_meta.TransferSyntaxUID.is_encapsulated:  # native pixels: raw bytes identical
            assert clean.PixelData == original.PixelData
        assert np.array_equal(read_image(out_path).pixels, read_image(src).pixels)
        assert clean.get("PatientAge") == original.get("PatientAge")
        assert clean.get("PatientSex") == original.get("PatientSex")
    siim = by_sop["siim_Quenby.dcm"]
    assert (siim.PatientAge, siim.PatientSex) == ("62", "M")
    siim_src = _ds(planted / "Quenby_Zebediah" / "siim_Quenby.dcm")
    meta = read_image(deid_sops[mapper.remap_uid(siim_src.SOPInstanceUID)]).meta
    assert meta.patient_age_years == 62 and meta.view_position == "PA" and meta.body_part == "CHEST"
    # the two RG1 copies belong to one study/series: their remapped UIDs agree, their SOP UIDs do not
    a, b = by_sop["RG1_UNCR_Quenby.dcm"], by_sop["RG1_J2KR_Quenby.dcm"]
    assert a.StudyInstanceUID == b.StudyInstanceUID and a.SeriesInstanceUID == b.SeriesInstanceUID
    assert a.SOPInstanceUID != b.SOPInstanceUID


def test_rerun_is_byte_identical_and_other_secret_differs(planted, deid_out, tmp_path):
    again = tmp_path / "again"
    assert _run(["deid", str(planted), str(again), "--secret", SECRET]).exit_code == 0
    first = {p.name: p.read_bytes() for p in deid_out.iterdir()}
    second = {p.name: p.read_bytes() for p in again.iterdir()}
    assert first == second
    other = tmp_path / "other"
    assert _run(["deid", str(planted), str(other), "--secret", SECRET + "-other"]).exit_code == 0
    assert not ({p.name for p in other.glob("*.dcm")} & set(first))
    other_study = {_ds(p).StudyInstanceUID for p in other.glob("*.dcm")}
    first_study = {_ds(deid_out / n).StudyInstanceUID for n in first if n.endswith(".dcm")}
    assert not (other_study & first_study)


def test_inputs_never_modified(planted, tmp_path):
    before = {p: p.read_bytes() for p in planted.rglob("*") if p.is_file()}
    assert _run(["deid", str(planted), str(tmp_path / "o"), "--secret", SECRET, "--shift-dates"]).exit_code == 0
    assert before == {p: p.read_bytes() for p in planted.rglob("*") if p.is_file()}
    inside = planted / "out"
    result = _run(["deid", str(planted), str(inside), "--secret", SECRET])
    assert result.exit_code == 2 and not inside.exists()
    shutil.rmtree(tmp_path / "o")
