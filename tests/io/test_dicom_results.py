"""DICOM result objects from a real prediction on the real SIIM chest DICOM: the TID 1500 Comprehensive 3D SR and
the Grad-CAM Secondary Capture are valid for dciodvfy (no Error line), join the original study in a new series,
reference the original image, carry the record's probability, and add no patient data the source did not carry.

The record is made by the real pipeline (Predictor on a saved small_cnn bundle, seeded, not trained: the writers
are under test, not the model), with the Grad-CAM heatmap of its target class.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

from dicom_validate import dciodvfy_path
from radiolens.errors import InputError
from radiolens.io import read_image
from radiolens.io.writers.dicom import write_dicom
from radiolens.io.writers.dicom_sc import build_sc
from radiolens.io.writers.dicom_sr import LOCAL, PROBABILITY, SourceRef, build_sr
from radiolens.models.backends import load_backend
from radiolens.models.bundle import BundleInfo, ModelBundle
from radiolens.models.registry import create_model
from radiolens.pipeline.predictor import Predictor, prepare

pytestmark = pytest.mark.realdata

# Patient, study and site attributes: in a result only with the source's own value.
PHI = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "PatientWeight", "PatientSize",
       "OtherPatientIDs", "OtherPatientNames", "PatientAddress", "PatientComments", "EthnicGroup",
       "ReferringPhysicianName", "AccessionNumber", "StudyID", "StudyDate", "StudyTime", "StudyDescription",
       "InstitutionName", "InstitutionAddress", "PerformingPhysicianName", "OperatorsName", "PatientBirthTime",
       "IssuerOfPatientID", "MilitaryRank", "BranchOfService", "CountryOfResidence", "RegionOfResidence")


@pytest.fixture(scope="module")
def prediction(siim_dicom: Path, tmp_path_factory):
    torch.manual_seed(0)
    info = BundleInfo(arch="small_cnn", task="binary", class_names=["pneumonia"], input_size=(32, 32),
                      name="dicom-results-cnn", version="0.test")
    path = tmp_path_factory.mktemp("dicom-results-model") / "m.pt"
    ModelBundle(info=info, model=create_model("small_cnn", 1)).save(path)
    predictor = Predictor(load_backend(path), gate=False)
    image = read_image(siim_dicom)
    record = predictor.predict(prepare(predictor.info, image), heatmap=True)
    assert record.assessed and record.heatmap is not None
    return record, image


def _errors(path: Path) -> list[str]:
    run = subprocess.run([dciodvfy_path(), str(path)], capture_output=True, text=True, errors="replace",
                         timeout=120)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.strip().startswith("Error")]


def _no_added_phi(result: pydicom.Dataset, source: pydicom.Dataset) -> None:
    for kw in PHI:
        value = result.get(kw)
        if value not in (None, ""):
            assert kw in source and str(value) == str(source.get(kw)), f"{kw} added or changed"


def _walk(items):
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))


def test_sr_is_valid_and_carries_the_record(prediction, siim_dicom, tmp_path):
    record, _ = prediction
    source = pydicom.dcmread(str(siim_dicom))
    data = record.to_dict()
    path = write_dicom(build_sr(data, SourceRef.from_dataset(source)), tmp_path / "sr.dcm", name="sr")
    assert _errors(path) == []

    back = pydicom.dcmread(str(path))
    assert back.StudyInstanceUID == source.StudyInstanceUID
    assert back.SeriesInstanceUID not in (source.SeriesInstanceUID, "")
    assert back.SOPInstanceUID != source.SOPInstanceUID
    evidence = back.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == source.StudyInstanceUID
    assert evidence.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    ref = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (source.SOPClassUID, source.SOPInstanceUID)
    _no_added_phi(back, source)

    sr = hd.sr.srread(path)
    groups = sr.content.get_image_measurement_groups()
    assert len(groups) == len(data["probabilities"]) == 1
    (measurement,) = groups[0].get_measurements(name=PROBABILITY)
    assert measurement.value == pytest.approx(data["probabilities"][0]["probability"], abs=1e-9)
    assert measurement.value == pytest.approx(float(record.probabilities[0]), abs=1e-6)
    images = [i for i in _walk(back.ContentSequence) if i.ValueType == "IMAGE"]
    assert {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in images} == {source.SOPInstanceUID}
    texts = [i.TextValue for i in _walk(back.ContentSequence) if i.ValueType == "TEXT"]
    assert any(t.startswith("Advisory only") for t in texts)
    assert [s.CodingSchemeDesignator for s in back.CodingSchemeIdentificationSequence] == [LOCAL]
    assert any(data["model"]["sha256"] in str(i.get("TextValue", "")) for i in _walk(back.ContentSequence))
    decision = "52101004" if data["probabilities"][0]["positive"] else "2667000"
    codes = {i.ConceptCodeSequence[0].CodeValue for i in _walk(back.ContentSequence) if i.ValueType == "CODE"}
    assert decision in codes and ("373066001" if data["review"]["flag"] else "373067005") in codes


def test_source_without_its_uids_is_refused(siim_dicom):
    source = pydicom.dcmread(str(siim_dicom))
    del source.SOPInstanceUID
    with pytest.raises(InputError, match="SOPInstanceUID"):
        SourceRef.from_dataset(source)


def test_sr_of_a_record_not_assessed_keeps_the_review_reason(prediction, siim_dicom, tmp_path):
    record, _ = prediction
    source = pydicom.dcmread(str(siim_dicom))
    data = record.withheld("out_of_distribution", "not a chest radiograph").to_dict()
    path = write_dicom(build_sr(data, SourceRef.from_dataset(source)), tmp_path / "sr.dcm", name="sr")
    assert _errors(path) == []
    back = pydicom.dcmread(str(path))
    assert not [i for i in _walk(back.ContentSequence) if i.ValueType == "NUM"]
    assert data["review"]["reason"] in [i.TextValue for i in _walk(back.ContentSequence) if i.ValueType == "TEXT"]


def test_sc_overlay_is_valid_and_references_the_source(prediction, siim_dicom, tmp_path):
    record, image = prediction
    source = pydicom.dcmread(str(siim_dicom))
    sc = build_sc(image.first_frame(), record.heatmap.array, SourceRef.from_dataset(source),
                  target=record.heatmap.target)
    path = write_dicom(sc, tmp_path / "sc.dcm", name="sc")
    assert _errors(path) == []
    back = pydicom.dcmread(str(path))
    assert back.StudyInstanceUID == source.StudyInstanceUID
    assert back.SeriesInstanceUID != source.SeriesInstanceUID
    ref = back.SourceImageSequence[0]
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (source.SOPClassUID, source.SOPInstanceUID)
    assert back.PhotometricInterpretation == "RGB" and back.BitsAllocated == 8
    assert back.pixel_array.shape == (source.Rows, source.Columns, 3)
    # The source does not state Burned In Annotation: its pixels may carry text, and the capture copies them.
    assert "BurnedInAnnotation" not in source and back.BurnedInAnnotation == "YES"
    _no_added_phi(back, source)
    # Where the heat is zero the capture is the grey source pixels.
    grey = np.rint(np.clip(image.first_frame(), 0, 1) * 255)
    heat = Image.fromarray((record.heatmap.array * 255).astype(np.uint8)).resize((source.Columns, source.Rows),
                                                                                  Image.Resampling.BILINEAR)
    cold = np.asarray(heat) == 0
    assert cold.any() and not cold.all()
    assert np.array_equal(back.pixel_array[cold], np.repeat(grey[cold][:, None], 3, axis=1))
    assert np.abs(back.pixel_array[~cold].astype(int) - grey[~cold][:, None]).max() > 0


def test_sc_of_a_reviewed_source_says_no_burned_in_text(prediction, siim_dicom, tmp_path):
    record, image = prediction
    source = pydicom.dcmread(str(siim_dicom))
    source.BurnedInAnnotation = "NO"  # reviewed by the site
    sc = build_sc(image.first_frame(), record.heatmap.array, SourceRef.from_dataset(source), target="pneumonia")
    path = write_dicom(sc, tmp_path / "sc.dcm", name="sc")
    assert _errors(path) == []
    assert pydicom.dcmread(str(path)).BurnedInAnnotation == "NO"


def test_sr_of_a_multilabel_record_has_one_group_per_finding(siim_dicom, tmp_path):
    torch.manual_seed(1)
    names = ["pneumothorax", "effusion", "nodule"]  # two with a SNOMED CT concept, one local
    info = BundleInfo(arch="small_cnn", task="multilabel", class_names=names, input_size=(32, 32))
    ModelBundle(info=info, model=create_model("small_cnn", 3)).save(tmp_path / "m.pt")
    predictor = Predictor(load_backend(tmp_path / "m.pt"), gate=False)
    data = predictor.predict(prepare(predictor.info, read_image(siim_dicom))).to_dict()
    source = pydicom.dcmread(str(siim_dicom))
    path = write_dicom(build_sr(data, SourceRef.from_dataset(source)), tmp_path / "sr.dcm", name="sr")
    assert _errors(path) == []
    groups = hd.sr.srread(path).content.get_image_measurement_groups()
    assert [g.finding_type.meaning for g in groups] == ["Pneumothorax", "Pleural effusion", "nodule"]
    got = [g.get_measurements(name=PROBABILITY)[0].value for g in groups]
    assert got == pytest.approx([s["probability"] for s in data["probabilities"]], abs=1e-9)
