"""The prediction as a DICOM Comprehensive 3D SR following TID 1500 (Measurement Report), built with highdicom.

The report goes back to the archive that sent the image, so it joins the ORIGINAL study (same Study Instance UID,
same patient module) in a new series, and references the original image by its original SOP Class/Instance UIDs.
Nothing beyond what the source carried is written about the patient: the patient and study attributes come from
:class:`SourceRef`, which is filled from the source data set only.

io sits below pipeline, so the input is plain data: the dict of ``PredictionRecord.to_dict()`` (keys ``status``,
``probabilities``, ``decision``, ``review``, ``model``) and a :class:`SourceRef`. One measurement group per class
holds the calibrated probability (UCUM ``{probability}``), the decision (SCT Present/Absent), the review flag
(SCT Yes/No) and its reason (text), under the algorithm identification (name, version, model sha256 as a
parameter); the device observer context names the model; a text item says the result is advisory only.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from radiolens.errors import InputError

# highdicom logs, at INFO, the SOP Instance UID of every data set it copies modules from: the ORIGINAL source
# image here. Kept to warnings, like pydicom in the service, so no identifier reaches a log.
logging.getLogger("highdicom").setLevel(logging.WARNING)

LOCAL = "99RADIOLENS"  # private coding scheme (PS3.16 8.2: "99" prefix) for concepts with no standard code
MANUFACTURER = "radiolens"
ADVISORY = ("Advisory only: computed by a machine-learning model, not a diagnosis. "
            "A qualified reader must review the image before any clinical decision.")

PROBABILITY = Code("CALPROB", LOCAL, "Calibrated probability")
PROBABILITY_UNIT = Code("{probability}", "UCUM", "probability")
NEEDS_REVIEW = Code("NEEDSREVIEW", LOCAL, "Needs human review")
REVIEW_REASON = Code("121106", "DCM", "Comment")
PRESENT = Code("52101004", "SCT", "Present")
ABSENT = Code("2667000", "SCT", "Absent")
YES = Code("373066001", "SCT", "Yes")
NO = Code("373067005", "SCT", "No")
CHEST_XRAY = Code("399208008", "SCT", "Plain chest X-ray")
# Findings with a SNOMED CT concept; any other class name becomes a local code.
FINDINGS = {"pneumonia": Code("233604007", "SCT", "Pneumonia"),
            "pneumothorax": Code("36118008", "SCT", "Pneumothorax"),
            "effusion": Code("60046008", "SCT", "Pleural effusion"),
            "cardiomegaly": Code("8186001", "SCT", "Cardiomegaly")}


@dataclass(frozen=True)
class SourceRef:
    """The source image's identifiers and patient/study module, as the archive knows them (original values).

    Only what the IODs need is kept; every field is copied from the source data set (absent -> None), so a
    result never says more about the patient than the image it answers.
    """

    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    patient_id: str | None = None
    patient_name: str | None = None
    patient_birth_date: str | None = None
    patient_sex: str | None = None
    accession_number: str | None = None
    study_id: str | None = None
    study_date: str | None = None
    study_time: str | None = None
    referring_physician_name: str | None = None
    patient_orientation: tuple[str, ...] | None = None  # None or empty: the source did not say
    burned_in_annotation: str | None = None

    _KEYWORDS: ClassVar[dict[str, str]] = {
                 "study_instance_uid": "StudyInstanceUID", "series_instance_uid": "SeriesInstanceUID",
                 "sop_class_uid": "SOPClassUID", "sop_instance_uid": "SOPInstanceUID", "patient_id": "PatientID",
                 "patient_name": "PatientName", "patient_birth_date": "PatientBirthDate",
                 "patient_sex": "PatientSex", "accession_number": "AccessionNumber", "study_id": "StudyID",
                 "study_date": "StudyDate", "study_time": "StudyTime",
                 "referring_physician_name": "ReferringPhysicianName",
                 "patient_orientation": "PatientOrientation", "burned_in_annotation": "BurnedInAnnotation"}

    @classmethod
    def from_dataset(cls, ds: Dataset) -> SourceRef:
        values: dict[str, Any] = {}
        for f in fields(cls):
            kw = cls._KEYWORDS[f.name]
            v = ds.get(kw)
            if v is None or v == "":
                values[f.name] = None
            elif kw == "PatientOrientation":
                values[f.name] = tuple(str(x) for x in (v if isinstance(v, list | tuple) else [v]) if str(x))
            else:
                values[f.name] = str(v)
        for required in ("study_instance_uid", "series_instance_uid", "sop_class_uid", "sop_instance_uid"):
            if not values[required]:
                raise InputError(f"source data set lacks {cls._KEYWORDS[required]}: a result cannot reference it")
        return cls(**values)

    def evidence(self) -> Dataset:
        """A data set standing for the source image: what highdicom copies the patient and study modules from
        and lists as evidence (Current Requested Procedure Evidence)."""
        ds = Dataset()
        for name, kw in self._KEYWORDS.items():
            v = getattr(self, name)
            if kw not in ("PatientOrientation", "BurnedInAnnotation"):
                setattr(ds, kw, "" if v is None else v)
        return ds


def finding_code(name: str) -> Code:
    return FINDINGS.get(name.lower(), Code(name[:16].upper().replace(" ", "_"), LOCAL, name))


def _text(name: Code, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def build_sr(record: dict[str, Any], source: SourceRef, *, series_number: int = 9901,
             series_instance_uid: str | None = None, sop_instance_uid: str | None = None) -> Dataset:
    """The Comprehensive 3D SR of one prediction record (``PredictionRecord.to_dict()``) about ``source``.

    A record that was not assessed (input gate, withheld) has no probabilities: its report carries one group
    with the review flag and reason only, so the archive still learns that a reader must look.
    """
    model = record["model"]
    review = record["review"]
    algorithm = hd.sr.AlgorithmIdentification(name=model["name"], version=str(model["version"]),
                                              parameters=[f"sha256:{model['sha256']}"])
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=[model["sha256"]]), name=model["name"][:64], manufacturer_name=MANUFACTURER,
        model_name=f"{model['arch']} {model['version']}"[:64])
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(observer_type=codes.DCM.Device,
                                                      observer_identifying_attributes=device))
    image = hd.sr.SourceImageForMeasurementGroup(source.sop_class_uid, source.sop_instance_uid)
    review_flag = hd.sr.QualitativeEvaluation(NEEDS_REVIEW, YES if review["flag"] else NO)

    groups = []
    scores = record.get("probabilities") or []
    for i, score in enumerate(scores):
        finding = finding_code(score["name"])
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"finding {i + 1}"),
            finding_type=finding, algorithm_id=algorithm, source_images=[image],
            measurements=[hd.sr.Measurement(name=PROBABILITY, value=float(score["probability"]),
                                            unit=PROBABILITY_UNIT, algorithm_id=algorithm)],
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(finding, PRESENT if score["positive"] else ABSENT),
                                     review_flag]))
    if not groups:
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="not assessed"),
            algorithm_id=algorithm, source_images=[image], qualitative_evaluations=[review_flag]))
    if review.get("reason"):
        for g in groups:
            g[0].ContentSequence.append(_text(REVIEW_REASON, str(review["reason"])))
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=CHEST_XRAY,
                                     imaging_measurements=groups)
    report[0].ContentSequence.append(_text(REVIEW_REASON, ADVISORY))
    with warnings.catch_warnings():  # highdicom's person-name warnings quote the name
        warnings.simplefilter("ignore")
        sr = hd.sr.Comprehensive3DSR(
            evidence=[source.evidence()], content=report[0],
            series_instance_uid=series_instance_uid or generate_uid(), series_number=series_number,
            sop_instance_uid=sop_instance_uid or generate_uid(), instance_number=1, manufacturer=MANUFACTURER,
            is_complete=True, is_final=False, is_verified=False)
    sr.SeriesDescription = "radiolens result (advisory)"
    scheme = Dataset()  # SOP Common, Type 1C: a coding scheme not listed in PS3.16 is identified
    scheme.CodingSchemeDesignator = LOCAL
    scheme.CodingSchemeName = "radiolens concepts"
    scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
    sr.CodingSchemeIdentificationSequence = [*sr.get("CodingSchemeIdentificationSequence", []), scheme]
    return sr
