"""The PACS round trip against a real Orthanc (Debian's ``orthanc``): real chest images pushed into Orthanc are
forwarded to the radiolens gateway, which sends a TID 1500 SR and a heatmap Secondary Capture back into the SAME
study; the SR read back from Orthanc states the probability the HTTP API gives for the same image. An MR goes
the same way and gets no SR, only an audited skip. Killed while a study is queued, the gateway scores it after
a restart and the archive ends up with each result once."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import yaml
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from tests.dicom_validate import assert_valid_dicom
from tests.gateway.conftest import SECRET

from radiolens.gateway.config import GatewayConfig
from radiolens.io.writers.dicom_sr import PROBABILITY
from radiolens.serve.store import audit
from radiolens.serve.store.spool import spool_counts

SR_CLASS, SC_CLASS = "1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.7"


def sr_probabilities(sr: pydicom.Dataset) -> dict[str, float]:
    """Finding meaning -> the calibrated probability measured in the SR (TID 1500 measurement groups)."""
    out: dict[str, float] = {}

    def walk(items, finding=None):
        for c in items:
            name = c.ConceptNameCodeSequence[0]
            if name.CodeMeaning == "Finding" and "ConceptCodeSequence" in c:
                finding = c.ConceptCodeSequence[0].CodeMeaning
            if name.CodeValue == PROBABILITY.value and name.CodingSchemeDesignator == PROBABILITY.scheme_designator:
                out[finding] = float(c.MeasuredValueSequence[0].NumericValue)
            if "ContentSequence" in c:
                walk(c.ContentSequence, finding)

    walk(sr.ContentSequence)
    return out


def _gateway_config(orthanc, **kw) -> GatewayConfig:
    peers = {"pacs": {"ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}}
    return GatewayConfig.model_validate({"port": 0, "peers": peers, "send": {"backoff_s": 0.5}} | kw)


def _results_in(orthanc, study_uid: str, originals: set[str] = frozenset()) -> dict[str, list[dict]]:
    """The study's instances by SOP class, leaving out ``originals`` (SOP Instance UIDs)."""
    by_class: dict[str, list[dict]] = {}
    for inst in orthanc.study_instances(study_uid):
        if inst["SOPInstanceUID"] not in originals:
            by_class.setdefault(inst.get("SOPClassUID") or "", []).append(inst)
    return by_class


def _with_both(orthanc, study_uid: str, originals: set[str]) -> dict[str, list[dict]] | None:
    found = _results_in(orthanc, study_uid, originals)
    return found if SR_CLASS in found and SC_CLASS in found else None


def test_orthanc_forwards_chest_images_and_gets_sr_and_capture_back_in_the_same_study(
        orthanc_factory, gateway_factory, service_factory, app_factory, siim_dicom, pydicom_chest_cr, mr_image,
        tmp_path):
    orthanc = orthanc_factory()
    service = service_factory()
    gateway = gateway_factory(_gateway_config(orthanc), service)
    orthanc.set_modality("radiolens", "RADIOLENS", "127.0.0.1", gateway.port)

    sources = {p: pydicom.dcmread(p) for p in (siim_dicom, pydicom_chest_cr, mr_image)}
    ids = {p: orthanc.upload(p.read_bytes()) for p in sources}
    orthanc.send_to_modality("radiolens", list(ids.values()))  # Orthanc's C-STORE SCU -> the gateway

    app, keys = app_factory(state_dir=tmp_path / "http-state")
    from fastapi.testclient import TestClient

    http = TestClient(app)
    for path in (siim_dicom, pydicom_chest_cr):
        src = sources[path]
        study = str(src.StudyInstanceUID)
        originals = {str(src.SOPInstanceUID)}
        found = orthanc.wait_for(lambda s=study, o=originals: _with_both(orthanc, s, o), timeout=120)
        assert len(found[SR_CLASS]) == 1 and len(found[SC_CLASS]) == 1 and len(found) == 2
        assert len(orthanc.study_instances(study)) == 3  # the original and its two results
        sr = pydicom.dcmread(io.BytesIO(orthanc.instance_file(found[SR_CLASS][0]["ID"])))
        sc = pydicom.dcmread(io.BytesIO(orthanc.instance_file(found[SC_CLASS][0]["ID"])))
        for obj in (sr, sc):  # the original identifiers, since the archive must file them with the image
            assert obj.StudyInstanceUID == src.StudyInstanceUID and obj.PatientID == src.PatientID
            assert obj.SeriesInstanceUID != src.SeriesInstanceUID
        ref = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
        assert ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
        assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
        for name, obj in (("sr", sr), ("sc", sc)):  # what Orthanc stored passes dciodvfy
            out = tmp_path / f"{name}-{path.stem}.dcm"
            obj.save_as(out, enforce_file_format=True)
            assert_valid_dicom(out, path)
        # the SR states what the HTTP API answers for the same bytes
        r = http.post("/v1/predictions", params={"heatmap": "false"}, headers=keys.h("clinician"),
                      files={"file": ("x.dcm", path.read_bytes(), "application/dicom")})
        assert r.status_code == 201, r.text
        api = {p["name"]: p["probability"] for p in r.json()["probabilities"]}
        measured = sr_probabilities(sr)
        assert len(measured) == len(api) == 1
        (api_p,), (sr_p,) = api.values(), measured.values()
        assert abs(api_p - sr_p) <= 1e-9 + 1e-12 * abs(api_p), (api_p, sr_p)  # DS keeps 16 characters

    # the MR: acknowledged, not scored, no result in its study, the skip audited
    mr_study = str(sources[mr_image].StudyInstanceUID)
    deadline = time.monotonic() + 60
    while sum(spool_counts(service.settings.state_dir).values()):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert set(_results_in(orthanc, mr_study)) == {str(sources[mr_image].SOPClassUID)}
    with Session(service.engine) as s:
        rows = s.scalars(select(audit.AuditEntry).where(audit.AuditEntry.event.like("dicom_%"))).all()
        skipped = [json.loads(r.outputs_json) for r in rows if r.event == "dicom_skipped"]
        sent = [json.loads(r.outputs_json) for r in rows if r.event == "dicom_sent"]
    assert [r["reason"] for r in skipped] == ["modality MR not routed for scoring"]
    assert len(sent) == 2 and all(r["destination"] == {"kind": "dimse", "ae_title": orthanc.aet} for r in sent)


def _run_gateway(bundle: Path, config: Path, state: Path, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS")} | {"RADIOLENS_DEID_SECRET": SECRET}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "radiolens.cli", "gateway", "run", "--model", str(bundle),
                                 "--config", str(config), "--state-dir", str(state), "--mc-passes", "0"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait_log(log: Path, text: str, count: int, proc, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while log.read_text(errors="replace").count(text) < count:
        assert proc.poll() is None, log.read_text(errors="replace")
        assert time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.2)


def test_killed_with_a_study_queued_the_results_arrive_once_after_restart(orthanc_factory, bundle_path,
                                                                           pydicom_chest_cr, tmp_path):
    from tests.serve.conftest import free_port

    orthanc = orthanc_factory()
    port, state, log = free_port(), tmp_path / "state", tmp_path / "gateway.log"
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"ae_title": "RADIOLENS", "port": port, "peers": {
        "pacs": {"ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}},
        "send": {"backoff_s": 0.5}}))
    orthanc.set_modality("radiolens", "RADIOLENS", "127.0.0.1", port)
    # one study of 6 real chest CR instances (copies with their own series / instance UIDs)
    study, n = pydicom.uid.generate_uid(), 6
    ids = []
    for _ in range(n):
        ds = pydicom.dcmread(pydicom_chest_cr)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, pydicom.uid.generate_uid(), \
            pydicom.uid.generate_uid()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        ids.append(orthanc.upload(buf.getvalue()))

    proc = _run_gateway(bundle_path, config, state, log)
    try:
        _wait_log(log, "DICOM gateway RADIOLENS listening", 1, proc)
        orthanc.send_to_modality("radiolens", ids)  # every instance acknowledged, so in the spool
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown: the study is queued or being scored
        proc.wait(30)
        queued = spool_counts(state)
        assert queued["inbox"] + queued["work"] + queued["outbox"] > 0, queued  # the crash left work behind
        assert len(_results_in(orthanc, study).get(SR_CLASS, [])) < n

        proc = _run_gateway(bundle_path, config, state, log)
        _wait_log(log, "DICOM gateway RADIOLENS listening", 2, proc)
        orthanc.wait_for(lambda: len(_results_in(orthanc, study).get(SR_CLASS, [])) == n, timeout=180)
        deadline = time.monotonic() + 60
        while sum(spool_counts(state).values()):
            assert time.monotonic() < deadline, spool_counts(state)
            time.sleep(0.2)
        time.sleep(2)  # anything sent twice would have arrived by now
        found = _results_in(orthanc, study)
        assert len(found[SR_CLASS]) == n and len(found[SC_CLASS]) == n and len(found) == 3  # + n CR originals
        refs = [pydicom.dcmread(io.BytesIO(orthanc.instance_file(i["ID"])))
                .CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
                .ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in found[SR_CLASS]]
        assert len(set(refs)) == n  # one SR per original
        engine = create_engine(f"sqlite:///{state / 'radiolens.db'}")
        with Session(engine) as s:
            sent = [json.loads(r.outputs_json) for r in s.scalars(
                select(audit.AuditEntry).where(audit.AuditEntry.event == "dicom_sent"))]
        engine.dispose()
        sr_uids = [r["objects"]["sr"] for r in sent]
        assert len(sr_uids) == n and len(set(sr_uids)) == n, sr_uids  # each result delivered once
        assert "Traceback" not in log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_results_can_go_back_over_stow_rs(orthanc_factory, gateway_factory, service_factory, pydicom_chest_cr,
                                          monkeypatch):
    """destination kind "stow": dicomweb-client POSTs the SR and the capture to Orthanc's DICOMweb plugin."""
    from pynetdicom import AE
    from tests.pacs.orthanc import DICOMWEB_PLUGIN

    assert DICOMWEB_PLUGIN.is_file(), "install Debian's orthanc-dicomweb (scripts/install-system-deps.sh)"
    orthanc = orthanc_factory(dicomweb=True)
    monkeypatch.setenv("TEST_STOW_CREDENTIALS", ":".join(orthanc.auth))
    config = GatewayConfig.model_validate({
        "port": 0, "peers": {"modality": {"ae_title": "MODALITY"}},
        "destination": {"kind": "stow", "stow_url": f"{orthanc.url}/dicom-web",
                        "stow_credentials_env": "TEST_STOW_CREDENTIALS"}})
    gateway = gateway_factory(config, service_factory())
    src = pydicom.dcmread(pydicom_chest_cr)
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(str(src.SOPClassUID), str(src.file_meta.TransferSyntaxUID))
    assoc = ae.associate("127.0.0.1", gateway.port, ae_title="RADIOLENS")
    assert int(assoc.send_c_store(src).Status) == 0
    assoc.release()
    found = orthanc.wait_for(lambda: _with_both(orthanc, str(src.StudyInstanceUID), set()), timeout=120)
    assert len(found[SR_CLASS]) == 1 and len(found[SC_CLASS]) == 1
    sr = pydicom.dcmread(io.BytesIO(orthanc.instance_file(found[SR_CLASS][0]["ID"])))
    assert sr.StudyInstanceUID == src.StudyInstanceUID and sr_probabilities(sr)
