"""No PHI leaves the gateway except towards the archive; the spool is sealed; delivery retries, dead-letters
and requeues, each attempt audited."""

from __future__ import annotations

import io
import json
import logging
import time

import pydicom
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from tests.gateway.conftest import SECRET, Archive, c_store, config_for
from tests.serve.conftest import PHI, PRIVATE_VALUE

from radiolens.serve.store import audit
from radiolens.serve.store.spool import INBOX, Spool, SpoolError, spool_counts


def _needles(extra: list[str]) -> list[bytes]:
    out = set()
    for v in list(PHI.values()) + [PRIVATE_VALUE] + extra:
        out.add(v.encode())
        out.update(p.encode() for p in v.replace("^", " ").split() if len(p) >= 5)
    return sorted(out)


def _events(service) -> list[tuple[str, dict]]:
    with Session(service.engine) as s:
        return [(r.event, json.loads(r.outputs_json)) for r in s.scalars(
            select(audit.AuditEntry).where(audit.AuditEntry.event.like("dicom_%")).order_by(audit.AuditEntry.seq))]


def _wait(cond, timeout: float = 90.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_planted_phi_reaches_the_archive_only(gateway_factory, service_factory, archive, phi_dicom_bytes, caplog,
                                              capfd):
    caplog.set_level(logging.DEBUG)
    service = service_factory()
    gateway = gateway_factory(config_for(archive), service)
    ds = pydicom.dcmread(io.BytesIO(phi_dicom_bytes))
    originals = [str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]
    assert c_store(gateway.port, [ds]) == [0]
    got = archive.wait_for(2)
    # the results go back with the patient module and original UIDs: that is their purpose
    assert all(str(r.PatientName) == PHI["PatientName"] and r.StudyInstanceUID == originals[0] for r in got)
    _wait(lambda: sum(spool_counts(service.settings.state_dir).values()) == 0, what="spool not emptied")
    service.engine.dispose()
    state = service.settings.state_dir
    files = [p for p in state.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files) and any(p.name.endswith(".heatmap.png") for p in files)
    captured = capfd.readouterr()
    blobs = {str(p.relative_to(state)): p.read_bytes() for p in files}
    blobs["<logs>"] = "\n".join(r.getMessage() for r in caplog.records).encode()
    blobs["<stdout+stderr>"] = (captured.out + captured.err).encode()
    blobs["<file names>"] = " ".join(str(p) for p in files).encode()
    leaks = [(where, n) for where, data in blobs.items() for n in _needles(originals) if n in data]
    leaks += [(r.name, r.getMessage()[:200]) for r in caplog.records if originals[2] in r.getMessage()]
    assert not leaks, leaks
    assert len(caplog.records) > 0


def test_the_spool_is_sealed_and_bound_to_its_secret(tmp_path, phi_dicom_bytes):
    spool = Spool(tmp_path / "spool", SECRET)
    item_id = spool.put(phi_dicom_bytes, {"via": "dimse", "calling_ae": "MODALITY"})
    raw = (tmp_path / "spool" / INBOX / f"{item_id}.item").read_bytes()
    assert not [n for n in _needles([]) if n in raw]
    assert phi_dicom_bytes[-4096:] not in raw  # the pixels are not there in the clear either
    assert (tmp_path / "spool").stat().st_mode & 0o777 == 0o700
    with pytest.raises(SpoolError, match="another de-identification secret"):
        Spool(tmp_path / "spool", SECRET + "-other").claim()
    assert spool_counts(tmp_path)["inbox"] == 0  # what cannot be opened is set aside, not retried forever
    again = Spool(tmp_path / "spool2", SECRET)
    item_id = again.put(phi_dicom_bytes, {"via": "stow"})
    got = again.claim()
    assert got.id == item_id and got.parts["instance"] == phi_dicom_bytes and got.meta == {"via": "stow"}
    assert again.claim() is None and again.recover() == 1 and again.claim().id == item_id  # crash -> requeued


def test_failed_deliveries_retry_then_dead_letter_then_requeue(gateway_factory, service_factory, chest_cr):
    archive = Archive(status=0xA700)  # out of resources: refuses every object
    try:
        service = service_factory()
        gateway = gateway_factory(config_for(archive), service)
        assert c_store(gateway.port, [chest_cr]) == [0]
        state = service.settings.state_dir
        _wait(lambda: spool_counts(state)["dead-letter"] == 1, what="not dead-lettered")
        events = [e for e, _ in _events(service)]
        assert events == ["dicom_send_retry", "dicom_send_retry", "dicom_deadletter"]  # max_attempts 3
        outputs = [o for _, o in _events(service)]
        assert [o["attempt"] for o in outputs] == [1, 2, 3] and outputs[0]["error"] == "C-STORE status 0xA700"
        assert archive.received == [] and archive.calls >= 3

        archive.status = 0x0000  # the archive is fixed
        assert gateway.spool.requeue_dead() == 1
        gateway.sender.wake.set()
        got = archive.wait_for(2)
        assert {str(d.Modality) for d in got} == {"SR", "OT"}
        _wait(lambda: _events(service)[-1][0] == "dicom_sent", what="no dicom_sent row")
        sent = _events(service)[-1][1]
        assert sent["attempt"] == 1 and set(sent["objects"]) == {"sr", "sc"}
        assert sum(spool_counts(state).values()) == 0
    finally:
        archive.stop()


def test_an_instance_that_fails_unexpectedly_is_dead_lettered_then_requeued(gateway_factory, service_factory,
                                                                             archive, chest_cr, monkeypatch, caplog):
    service = service_factory()
    real = service.predict_served

    def broken(*args, **kwargs):
        raise RuntimeError(f"failure quoting {PHI['PatientName']}")  # as a library message might

    monkeypatch.setattr(service, "predict_served", broken)
    gateway = gateway_factory(config_for(archive), service)
    assert c_store(gateway.port, [chest_cr]) == [0]
    state = service.settings.state_dir
    _wait(lambda: spool_counts(state)["dead-letter"] == 1, what="not dead-lettered")
    assert [o["reason"] for e, o in _events(service) if e == "dicom_refused"] == \
        ["internal error (RuntimeError); dead-lettered"]
    assert PHI["PatientName"] not in caplog.text and spool_counts(state)["work"] == 0  # not retried in a loop

    monkeypatch.setattr(service, "predict_served", real)  # fixed
    assert gateway.spool.requeue_dead() == 1
    gateway.processor.wake.set()
    assert {str(d.Modality) for d in archive.wait_for(2)} == {"SR", "OT"}
