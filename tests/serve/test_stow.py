"""DICOMweb STOW-RS on a live server: real instances sent by the real dicomweb-client land, encrypted and byte
for byte, in the DICOM spool the gateway reads; bad parts fail per PS3.18 and are audited without identifiers;
planted PHI and the original UIDs reach neither the database, the state folder nor the logs."""

from __future__ import annotations

import io
import logging

import httpx
import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from tests.serve.conftest import SECRET, dataset_without_pixels
from tests.serve.test_phi import _needles

from radiolens.serve.store.spool import INBOX, SPOOL_SUBDIR, Spool
from radiolens.serve.store.tables import AuditEntry

BOUNDARY = "radiolens-test-boundary-5f1c"
RELATED = f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"'
#: Loggers of the SENDING side in this test process (dicomweb-client names the study it sends to, urllib3 the
#: URL): what the sender logs about its own instances is its business, the server's records are checked.
CLIENT_LOGGERS = ("dicomweb_client", "urllib3", "requests", "httpx", "httpcore")


@pytest.fixture(scope="module")
def cr_dicom(pydicom_data_files):
    return next(p for p in pydicom_data_files if p.name == "RG1_UNCR.dcm")


def _client(srv, keys=None, statuses: list | None = None) -> DICOMwebClient:
    session = requests.Session()
    if statuses is not None:
        session.hooks["response"].append(lambda r, *a, **k: statuses.append(r.status_code))
    headers = keys.h("clinician") if keys is not None else None
    return DICOMwebClient(url=f"{srv.url}/dicomweb", session=session, headers=headers, timeout=120)


def _encoded(ds: pydicom.Dataset) -> bytes:
    """The bytes dicomweb-client sends for ``ds`` (it writes each data set with ``pydicom.dcmwrite``)."""
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds)
    return buf.getvalue()


def _related(*parts: bytes) -> bytes:
    """A multipart/related body on the wire (RFC 2387), for parts no DICOM client would send."""
    out = b""
    for data in parts:
        out += f"\r\n--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data
    return out + f"\r\n--{BOUNDARY}--".encode()


def _post(srv, keys, body: bytes, content_type: str = RELATED, path: str = "/dicomweb/studies") -> httpx.Response:
    return httpx.post(f"{srv.url}{path}", content=body, timeout=120,
                      headers={**keys.h("clinician"), "Content-Type": content_type})


def _spool(srv) -> Spool:
    return Spool(srv.server.config.app.state.service.settings.state_dir / SPOOL_SUBDIR, SECRET)


def _claim_all(spool: Spool) -> list:
    items = []
    while (item := spool.claim()) is not None:
        items.append(item)
    return items


def _refused_rows(srv) -> list[AuditEntry]:
    with Session(srv.server.config.app.state.service.engine) as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.event == "dicom_refused")))


def _seq(ds: pydicom.Dataset, keyword: str) -> list:
    return list(ds.get(keyword, []))


def test_stow_queues_real_instances_byte_for_byte(live, siim_dicom, cr_dicom):
    srv, keys = live(dicomweb_stow=True)
    sent = [pydicom.dcmread(siim_dicom), pydicom.dcmread(cr_dicom)]
    statuses: list[int] = []
    answer = _client(srv, keys, statuses).store_instances(sent)

    assert statuses == [200]
    refs = _seq(answer, "ReferencedSOPSequence")
    assert [(str(r.ReferencedSOPClassUID), str(r.ReferencedSOPInstanceUID)) for r in refs] == \
        [(str(d.SOPClassUID), str(d.SOPInstanceUID)) for d in sent]
    assert "FailedSOPSequence" not in answer

    spool = _spool(srv)
    assert spool.count(INBOX) == 2
    items = _claim_all(spool)  # opens (decrypts) each item with the de-identification secret
    by_uid = {str(pydicom.dcmread(io.BytesIO(i.parts["instance"])).SOPInstanceUID): i for i in items}
    assert set(by_uid) == {str(d.SOPInstanceUID) for d in sent}
    for ds in sent:
        item = by_uid[str(ds.SOPInstanceUID)]
        assert item.parts["instance"] == _encoded(ds)  # the instance as sent, not a re-encoding
        assert item.meta == {"via": "stow"}
    assert _refused_rows(srv) == []  # accepted parts are audited when the gateway scores them

    metrics = httpx.get(f"{srv.url}/metrics", headers=keys.h("auditor")).text
    assert 'radiolens_stow_instances_total{outcome="queued"} 2.0' in metrics


def test_stow_corrupt_part_next_to_a_good_one_is_202_and_audited(live, siim_dicom, cr_dicom):
    srv, keys = live(dicomweb_stow=True)
    good = siim_dicom.read_bytes()
    corrupt = cr_dicom.read_bytes()[:5000]  # a real CR cut off inside its pixel data
    r = _post(srv, keys, _related(good, corrupt))
    assert r.status_code == 202, r.text
    assert r.headers["content-type"] == "application/dicom+json"
    answer = pydicom.Dataset.from_json(r.json())
    good_ds = pydicom.dcmread(siim_dicom)
    assert [str(x.ReferencedSOPInstanceUID) for x in _seq(answer, "ReferencedSOPSequence")] == \
        [str(good_ds.SOPInstanceUID)]
    failed = _seq(answer, "FailedSOPSequence")
    assert len(failed) == 1 and failed[0].FailureReason == 0xC000
    assert "ReferencedSOPInstanceUID" not in failed[0]  # nothing could be read from it

    rows = _refused_rows(srv)
    assert len(rows) == 1
    import hashlib
    import json

    outputs = json.loads(rows[0].outputs_json)
    assert outputs["via"] == "stow" and outputs["status"] == "0xC000" and outputs["reason"]
    assert rows[0].input_sha256 == hashlib.sha256(corrupt).hexdigest()
    assert rows[0].role == "clinician"
    items = _claim_all(_spool(srv))
    assert [i.parts["instance"] for i in items] == [good]


def test_stow_all_parts_bad_is_409(live, siim_dicom):
    srv, keys = live(dicomweb_stow=True)
    data = siim_dicom.read_bytes()
    no_preamble = data[132:]  # the data set without the Part-10 preamble and file meta
    r = _post(srv, keys, _related(b"not dicom at all", no_preamble, data[: len(data) // 2]))
    assert r.status_code == 409, r.text
    failed = _seq(pydicom.Dataset.from_json(r.json()), "FailedSOPSequence")
    assert [f.FailureReason for f in failed] == [0xC000] * 3
    assert len(_refused_rows(srv)) == 3
    assert _spool(srv).count(INBOX) == 0

    no_uid = pydicom.dcmread(io.BytesIO(dataset_without_pixels()))
    del no_uid.SOPInstanceUID
    with pytest.raises(requests.HTTPError) as err:  # what a DICOMweb client sees
        _client(srv, keys).store_instances([no_uid])
    assert err.value.response.status_code == 409
    assert len(_refused_rows(srv)) == 4


def test_stow_study_route_fails_instances_of_other_studies(live, siim_dicom, cr_dicom):
    srv, keys = live(dicomweb_stow=True)
    siim, cr = pydicom.dcmread(siim_dicom), pydicom.dcmread(cr_dicom)
    assert siim.StudyInstanceUID != cr.StudyInstanceUID
    statuses: list[int] = []
    answer = _client(srv, keys, statuses).store_instances([siim, cr], study_instance_uid=siim.StudyInstanceUID)
    assert statuses == [202]
    assert [str(x.ReferencedSOPInstanceUID) for x in _seq(answer, "ReferencedSOPSequence")] == \
        [str(siim.SOPInstanceUID)]
    failed = _seq(answer, "FailedSOPSequence")
    assert [(str(f.ReferencedSOPInstanceUID), f.FailureReason) for f in failed] == [(str(cr.SOPInstanceUID), 0xA900)]
    assert len(_refused_rows(srv)) == 1 and _spool(srv).count(INBOX) == 1


def test_stow_refusals_of_the_whole_request(live, siim_dicom):
    srv, keys = live(dicomweb_stow=True, max_upload_bytes=64 * 1024)
    data = siim_dicom.read_bytes()  # 124 KiB: over this server's limit
    small = pydicom.dcmread(io.BytesIO(dataset_without_pixels()))
    with pytest.raises(requests.HTTPError) as err:
        _client(srv).store_instances([small])  # no key
    assert err.value.response.status_code == 401

    wrong = _post(srv, keys, dataset_without_pixels(), content_type="application/dicom")
    assert wrong.status_code == 415 and wrong.json()["error"]["code"] == "unsupported_media_type"
    other_type = _post(srv, keys, _related(b"{}"), content_type=RELATED.replace("application/dicom",
                                                                                 "application/dicom+json"))
    assert other_type.status_code == 415

    for body in (b"", b"no boundary in here", _related(b"x")[:-len(BOUNDARY) - 4]):  # empty, none, unclosed
        bad = _post(srv, keys, body)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request", body[:40]

    too_big = _post(srv, keys, _related(data))
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "payload_too_large"
    bad_study = _post(srv, keys, _related(b"x"), path="/dicomweb/studies/not-a-uid")
    assert bad_study.status_code == 422
    assert _spool(srv).count(INBOX) == 0 and _refused_rows(srv) == []
    paths = httpx.get(f"{srv.url}/openapi.json").json()["paths"]
    assert "post" in paths["/dicomweb/studies"] and "post" in paths["/dicomweb/studies/{study}"]


def test_stow_is_404_when_off(live, siim_dicom):
    srv, keys = live()
    r = _post(srv, keys, _related(siim_dicom.read_bytes()))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert not (srv.server.config.app.state.service.settings.state_dir / SPOOL_SUBDIR).exists()
    assert "/dicomweb/studies" not in httpx.get(f"{srv.url}/openapi.json").json()["paths"]


def test_stow_planted_phi_and_uids_stay_out_of_db_state_and_logs(live, phi_dicom_bytes, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    srv, keys = live(dicomweb_stow=True)
    caplog.set_level(logging.INFO, logger="uvicorn.access")  # the access log prints request paths
    ds = pydicom.dcmread(io.BytesIO(phi_dicom_bytes))
    uids = [str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]
    statuses: list[int] = []
    answer = _client(srv, keys, statuses).store_instances([ds], study_instance_uid=uids[0])
    assert statuses == [200] and len(_seq(answer, "ReferencedSOPSequence")) == 1
    broken = phi_dicom_bytes[: len(phi_dicom_bytes) // 2]  # refused: its reason is audited and logged
    r = _post(srv, keys, _related(phi_dicom_bytes, broken), path=f"/dicomweb/studies/{uids[0]}")
    assert r.status_code == 202, r.text
    assert len(_refused_rows(srv)) == 1

    svc = srv.server.config.app.state.service
    svc.engine.dispose()  # the WAL's content on disk either way
    state = svc.settings.state_dir
    spool_root = state / SPOOL_SUBDIR
    files = [p for p in state.rglob("*") if p.is_file()]
    spooled = [p for p in files if spool_root in p.parents]
    others = {str(p.relative_to(state)): p.read_bytes() for p in files if spool_root not in p.parents}
    assert len(spooled) == 2 and any(name.endswith(".db") for name in others)
    captured = capfd.readouterr()
    server_logs = [rec.getMessage() for rec in caplog.records if not rec.name.startswith(CLIENT_LOGGERS)]
    assert any("refused" in line or "not stored" in line for line in server_logs)  # logging was on
    # uvicorn's access log (its own handler, on stdout) prints request paths: the study UID is redacted there
    assert "/dicomweb/studies/[REDACTED]" in captured.out + captured.err
    blobs = {**others, "<logs>": "\n".join(server_logs).encode(),
             "<stdout+stderr>": (captured.out + captured.err).encode()}
    needles = _needles() + [u.encode() for u in uids]
    leaks = [(where, n) for where, data in blobs.items() for n in needles if n in data]
    assert not leaks, leaks
    for p in spooled:  # the spool holds the original instance, sealed: no plaintext PHI or UID in its files
        raw = p.read_bytes()
        assert not [n for n in needles if n in raw], p.name
        assert not any(u in p.name for u in uids)
    items = _claim_all(_spool(srv))
    assert sorted(i.parts["instance"] for i in items) == sorted([_encoded(ds), phi_dicom_bytes])


def test_upload_admission_counts_stow_routes_with_a_study_in_the_path():
    """The pending-upload bound covers ``/dicomweb/studies/{study}`` too (a prefix, the UID varies)."""
    import anyio

    from radiolens.serve.http.middleware import UploadAdmission
    from radiolens.serve.http.routers.dicomweb import ADMISSION_PATHS, ADMISSION_PREFIXES

    release = anyio.Event()
    sent: list[dict] = []

    async def held_app(scope, receive, send):  # an upload still being received
        await release.wait()

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    gate = UploadAdmission(held_app, max_pending=1, retry_after_s=3, paths=("/v1/predictions", *ADMISSION_PATHS),
                           prefixes=ADMISSION_PREFIXES)

    def scope(path: str, method: str = "POST") -> dict:
        return {"type": "http", "method": method, "path": path, "headers": []}

    async def main():
        async with anyio.create_task_group() as tg:
            tg.start_soon(gate, scope("/dicomweb/studies/1.2.840.99"), receive, send)
            while gate.pending < 1:
                await anyio.sleep(0.01)
            await gate(scope("/dicomweb/studies"), receive, send)  # a second upload: refused at once
            await gate(scope("/dicomweb/studies/1.2.840.98"), receive, send)
            assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [503, 503]
            release.set()
        assert gate.pending == 0 and gate.refused == 2

    anyio.run(main)


def _receiver(tmp_path):
    from radiolens.serve.runtime.stow import StowReceiver

    spool = Spool(tmp_path / SPOOL_SUBDIR, SECRET)
    return StowReceiver(spool), spool


def test_stow_spool_write_failure_is_0xA700_and_audited(tmp_path, siim_dicom):
    import shutil

    from radiolens.serve.store.spool import TMP

    receiver, spool = _receiver(tmp_path)
    shutil.rmtree(spool.root / TMP)  # every write goes through tmp/: the spool cannot take the instance
    rows: list[tuple] = []
    result = receiver.store(RELATED, _related(siim_dicom.read_bytes()), lambda *row: rows.append(row))
    assert result.status == 409
    failed = _seq(pydicom.Dataset.from_json(result.response()), "FailedSOPSequence")
    ds = pydicom.dcmread(siim_dicom)
    assert [(str(f.ReferencedSOPInstanceUID), f.FailureReason) for f in failed] == [(str(ds.SOPInstanceUID), 0xA700)]
    assert len(rows) == 1 and rows[0][0] == "dicom_refused" and rows[0][1]["status"] == "0xA700"
    assert str(ds.SOPInstanceUID) not in repr(rows)


def test_stow_abandoned_request_stores_no_further_part(tmp_path, siim_dicom):
    import threading

    receiver, spool = _receiver(tmp_path)
    abandon = threading.Event()
    abandon.set()  # the request timed out before its parts were stored
    result = receiver.store(RELATED, _related(siim_dicom.read_bytes()), lambda *row: None, abandon=abandon)
    assert result.parts == [] and spool.count(INBOX) == 0
