"""What the receiver refuses and what the processor skips, each with a DICOM status or an audited, PHI-free
reason, while the receiver keeps serving: unknown calling AE, a corrupt data set, a data set that does not match
its request, an MR and an extremity CR (routing rules), a secondary capture that may show burned-in text."""

from __future__ import annotations

import json

import pydicom
import pytest
from pynetdicom import AE
from sqlalchemy import select
from sqlalchemy.orm import Session
from tests.gateway.conftest import MODALITY_AE, c_store, config_for

from radiolens.serve.store import audit
from radiolens.serve.store.spool import spool_counts


def _rows(service, event: str) -> list[dict]:
    with Session(service.engine) as s:
        rows = s.scalars(select(audit.AuditEntry).where(audit.AuditEntry.event == event)
                         .order_by(audit.AuditEntry.seq)).all()
        return [json.loads(r.outputs_json) | {"_study": r.study_uid, "_role": r.role} for r in rows]


def _wait_for_rows(service, event: str, n: int, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while len(_rows(service, event)) < n:
        assert time.monotonic() < deadline, f"fewer than {n} {event} rows"
        time.sleep(0.05)


def _wait_idle(gateway, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while spool_counts(gateway.service.settings.state_dir)["inbox"] or \
            spool_counts(gateway.service.settings.state_dir)["work"] or not gateway.processor.idle.is_set():
        assert time.monotonic() < deadline, "the processor did not finish"
        time.sleep(0.05)


def test_unknown_calling_ae_is_rejected_and_audited(gateway_factory, service_factory, archive, chest_cr):
    service = service_factory()
    gateway = gateway_factory(config_for(archive), service)
    assert c_store(gateway.port, [chest_cr], calling="STRANGER") == []  # A-ASSOCIATE-RJ
    # pynetdicom announces the rejection after sending it, so the audit row may land just after the reply
    _wait_for_rows(service, "dicom_refused", 1)
    rows = _rows(service, "dicom_refused")
    assert rows and rows[-1]["reason"] == "calling AE title not allowed" and rows[-1]["calling_ae"] == "STRANGER"
    assert c_store(gateway.port, [chest_cr], called="SOMEONE_ELSE") == []  # addressed to another AE
    assert c_store(gateway.port, [chest_cr]) == [0]  # still serving the allowed peer
    archive.wait_for(1)


def _corrupt_store(port: int, ds: pydicom.Dataset, monkeypatch) -> list[int]:
    """C-STORE whose encoded data set is cut short on the wire (what a broken sender does)."""
    import pynetdicom.association as association

    real = association.encode

    def truncated(*args, **kwargs):
        data = real(*args, **kwargs)
        return data[: len(data) // 3 + 1] if data else data

    ae = AE(ae_title=MODALITY_AE)
    ae.add_requested_context(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
    assoc = ae.associate("127.0.0.1", port, ae_title="RADIOLENS")
    assert assoc.is_established
    try:
        with monkeypatch.context() as m:
            m.setattr(association, "encode", truncated)
            return [int(assoc.send_c_store(ds).Status)]
    finally:
        assoc.release()


def test_corrupt_and_mismatched_data_sets_get_failure_statuses(gateway_factory, service_factory, archive, chest_cr,
                                                               monkeypatch):
    service = service_factory()
    gateway = gateway_factory(config_for(archive), service)
    ds = pydicom.dcmread(chest_cr)
    assert _corrupt_store(gateway.port, ds, monkeypatch) == [0xC000]
    other = pydicom.dcmread(chest_cr)
    other.SOPClassUID = pydicom.uid.SecondaryCaptureImageStorage  # says SC inside a CR request? no: mismatch
    ae = AE(ae_title=MODALITY_AE)
    ae.add_requested_context(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
    assoc = ae.associate("127.0.0.1", gateway.port, ae_title="RADIOLENS")
    # pynetdicom takes the request's SOP class from the data set, so mismatch the instance UID on the wire
    import pynetdicom.association as association

    real = association.encode

    def swapped(obj, *args, **kwargs):
        clone = pydicom.dcmread(chest_cr)
        clone.SOPInstanceUID = pydicom.uid.generate_uid()
        return real(clone, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(association, "encode", swapped)
        assert int(assoc.send_c_store(ds).Status) == 0xA900
    assoc.release()
    reasons = [r["reason"] for r in _rows(service, "dicom_refused")]
    assert any(r.startswith("cannot parse the data set") for r in reasons)
    assert "data set does not match the request's SOP class or instance" in reasons
    assert c_store(gateway.port, [chest_cr]) == [0]  # the receiver keeps serving
    archive.wait_for(1)
    assert spool_counts(service.settings.state_dir)["dead-letter"] == 0


@pytest.mark.parametrize("which,reason", [("mr_image", "modality MR not routed for scoring"),
                                          ("extremity_cr", "body part EXTREMITY not routed for scoring")])
def test_images_outside_the_routing_rules_are_acknowledged_skipped_and_audited(
        request, which, reason, gateway_factory, service_factory, archive):
    service = service_factory()
    gateway = gateway_factory(config_for(archive), service)
    path = request.getfixturevalue(which)
    assert c_store(gateway.port, [path]) == [0]  # acknowledged: the sender must not retry it
    _wait_idle(gateway)
    rows = _rows(service, "dicom_skipped")
    assert [r["reason"] for r in rows] == [reason] and rows[0]["_role"] == "dicom"
    original = pydicom.dcmread(path, stop_before_pixels=True)
    assert rows[0]["_study"] and rows[0]["_study"] != original.StudyInstanceUID  # the de-identified study
    assert _rows(service, "prediction") == [] and archive.calls == 0
    assert sum(spool_counts(service.settings.state_dir).values()) == 0  # the original is deleted


def test_possibly_burned_in_capture_is_refused_with_the_reason_audited(gateway_factory, service_factory, archive,
                                                                        siim_original):
    service = service_factory()
    gateway = gateway_factory(config_for(archive), service)
    assert c_store(gateway.port, [siim_original]) == [0]
    _wait_idle(gateway)
    rows = _rows(service, "dicom_refused")
    assert len(rows) == 1 and "BurnedInAnnotationError" in rows[0]["reason"] and rows[0]["via"] == "dimse"
    assert archive.calls == 0 and _rows(service, "prediction") == []
