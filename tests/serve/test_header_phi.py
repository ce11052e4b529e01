"""Free text in header attributes that de-identification keeps (Body Part Examined, Manufacturer, Manufacturer's
Model Name, View Position, Modality, Burned In Annotation) never reaches a stored record, a response, a log, the
audit log or a results file: only coded values of :mod:`radiolens.io.vocab` do.

A real chest DICOM (SIIM) gets identifying text planted into those attributes; it is uploaded to a live
service whose model has a monitoring baseline (so the gate, the monitoring records and a drift check with its
audited alert all run), scored by ``radiolens predict``, checked by ``radiolens monitor gate``, reported by
``radiolens monitor status|report``, de-identified by ``radiolens deid`` and previewed; then every file those
wrote, every response, log line and CLI output is searched for the planted words, case-insensitively (the
old code upper-cased header categories, which a case-sensitive scan would miss).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from tests.serve.conftest import SECRET
from typer.testing import CliRunner

from radiolens.cli import app as cli_app
from radiolens.io import read_image, vocab
from radiolens.io.image import ImageMeta
from radiolens.models.bundle import ModelBundle
from radiolens.monitor import MonitorConfig, build_profile, register

pytestmark = pytest.mark.realdata

#: Planted into attributes Annex E keeps (every word is a distinctive token searched on its own).
HEADER_PHI = {
    "BodyPartExamined": "ZEBULONIA 4417",
    "Manufacturer": "Wexleyford Larkspurton",
    "ManufacturerModelName": "Quixotica Fernhollow",
    "ViewPosition": "OTTOLINEX",
    "Modality": "VARGASSO",
    "BurnedInAnnotation": "HARLOWE",
}
#: Variant B keeps a chest body part and a radiograph modality, so the gate's header rules pass it.
HEADER_PHI_B = {k: HEADER_PHI[k] for k in ("Manufacturer", "ManufacturerModelName", "ViewPosition")}


def _needles() -> list[bytes]:
    words = {w for v in HEADER_PHI.values() for w in v.split() if len(w) >= 5}
    return sorted({v.lower().encode() for v in HEADER_PHI.values()} | {w.lower().encode() for w in words})


def _leaks(blobs: dict[str, bytes]) -> list[tuple[str, str]]:
    return [(where, n.decode()) for where, data in blobs.items() for n in _needles() if n in data.lower()]


def _planted(src: Path, values: dict[str, str], **extra) -> bytes:
    ds = pydicom.dcmread(str(src))
    for kw, value in {**values, **extra}.items():
        setattr(ds, kw, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    for value in values.values():
        assert value.encode() in data  # really in the upload
    return data


@pytest.fixture(scope="module")
def monitored_bundle(bundle_path: Path, kermany_dir: Path, tmp_path_factory) -> Path:
    """The service test model with a monitoring baseline from 60 Kermany validation images."""
    with open(kermany_dir / "manifest.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "val"][:60]
    bundle = ModelBundle.load(bundle_path)
    profile = build_profile(bundle, (read_image(kermany_dir / r["path"]) for r in rows),
                            np.array([int(r["label_int"]) for r in rows]), source="kermany val")
    register(bundle, profile)
    path = tmp_path_factory.mktemp("monitored") / "monitored.pt"
    bundle.save(path)
    return path


def test_header_free_text_never_stored_logged_or_audited(live, monitored_bundle, siim_dicom, tmp_path, caplog,
                                                         capfd):
    caplog.set_level(logging.DEBUG)
    cfg = MonitorConfig.model_validate({"drift": {"window": 6, "min_window": 5, "check_every": 3,
                                                  "consecutive": 1}})
    state = tmp_path / "state"
    srv, keys = live(model_path=monitored_bundle, monitor=cfg, state_dir=state)
    # free text in BurnedInAnnotation is not a single NO: refused (pixels may show text), quoting none of it
    refused = httpx.post(f"{srv.url}/v1/predictions", headers=keys.h("clinician"),
                         files={"file": ("upload.dcm", _planted(siim_dicom, HEADER_PHI), "application/dicom")},
                         timeout=60)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "burned_in_annotation", refused.text
    header_phi_a = {k: v for k, v in HEADER_PHI.items() if k != "BurnedInAnnotation"}
    uploads = [_planted(siim_dicom, header_phi_a), _planted(siim_dicom, HEADER_PHI_B, BodyPartExamined="CHEST",
                                                            Modality="CR")]
    responses: list[bytes] = [refused.content]
    statuses = []
    for i in range(6):
        r = httpx.post(f"{srv.url}/v1/predictions", headers=keys.h("clinician"),
                       files={"file": ("upload.dcm", uploads[i % 2], "application/dicom")}, timeout=60)
        assert r.status_code == 201, r.text
        body = r.json()
        statuses.append(body["status"])
        responses.append(r.content)
        responses.append(httpx.post(f"{srv.url}/v1/predictions/{body['id']}/feedback", headers=keys.h("clinician"),
                                    json={"agree": False}, timeout=30).content)
        responses.append(httpx.get(f"{srv.url}/v1/predictions/{body['id']}", headers=keys.h("auditor"),
                                   timeout=30).content)
    monitoring = httpx.get(f"{srv.url}/v1/monitoring", headers=keys.h("admin"), params={"refresh": "true"},
                           timeout=60)
    assert monitoring.status_code == 200
    alerts = monitoring.json()["active_alerts"]
    # the Kermany baseline has no DICOM header at all: the header signals drift, and their alerts are audited
    assert any(a["signal"] == "header:manufacturer" for a in alerts), monitoring.json()["window"]
    responses.append(monitoring.content)
    for params in ({}, {"fmt": "csv"}):
        responses.append(httpx.get(f"{srv.url}/v1/audit", headers=keys.h("auditor"), params=params,
                                   timeout=30).content)
    responses.append(httpx.get(f"{srv.url}/metrics", headers=keys.h("auditor"), timeout=30).content)

    service = srv.server.config.app.state.service
    service.engine.dispose()
    files = [p for p in state.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".db") for p in files)
    blobs = {str(p.relative_to(state)): p.read_bytes() for p in files}
    blobs["<file names>"] = " ".join(str(p.relative_to(state)) for p in files).encode()
    blobs["<logs>"] = "\n".join(r.getMessage() for r in caplog.records).encode()
    captured = capfd.readouterr()
    blobs["<stdout+stderr>"] = (captured.out + captured.err).encode()
    blobs.update({f"<response {i}>": b for i, b in enumerate(responses)})
    assert not _leaks(blobs), _leaks(blobs)
    # variant A is refused by the header rules: the reasons name the coded values, not the planted text
    first = json.loads(responses[1])  # responses[0] is the refusal above
    assert statuses[0] == "out_of_distribution"
    reasons = " ".join(first["monitoring"]["gate"]["reasons"])
    assert f"modality {vocab.OTHER}" in reasons and f"body part {vocab.OTHER}" in reasons, reasons
    # what was stored is the code: the vendor is not one radiolens knows, so OTHER
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from radiolens.serve.store.tables import MonitoringRecord

    with Session(service.engine) as s:
        headers = [json.loads(r.record_json)["header"] for r in s.scalars(select(MonitoringRecord))]
    assert len(headers) == 6 and {h["manufacturer"] for h in headers} == {vocab.OTHER}
    assert {h["view_position"] for h in headers} == {vocab.OTHER}
    assert {h["body_part"] for h in headers} == {vocab.OTHER, "CHEST"}


def test_header_free_text_never_reaches_cli_outputs(monitored_bundle, siim_dicom, tmp_path, monkeypatch):
    monkeypatch.setenv("RADIOLENS_DEID_SECRET", SECRET)
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.dcm").write_bytes(_planted(siim_dicom, HEADER_PHI))
    (src / "b.dcm").write_bytes(_planted(siim_dicom, HEADER_PHI_B, BodyPartExamined="CHEST", Modality="CR"))
    # claims to be de-identified, with text in its SOP Instance UID: previews are named by that UID
    (src / "c.dcm").write_bytes(_planted(siim_dicom, {"SOPInstanceUID": "Zebuloniaview"},
                                         PatientIdentityRemoved="YES"))
    runner = CliRunner()
    outputs: dict[str, bytes] = {}
    out = tmp_path / "out"

    def run(args: list[str], ok=(0,)) -> None:
        r = runner.invoke(cli_app, args)
        assert r.exit_code in ok, r.output
        outputs[" ".join(args[:2])] = r.output.encode()

    def scan() -> list[tuple[str, str]]:
        # The de-identified DICOM copies themselves keep these attributes (Annex E retains them; docs/deid.md):
        # what is scanned is every record radiolens wrote about them (reports, results, previews, outputs).
        files = [p for p in out.rglob("*") if p.is_file() and p.suffix != ".dcm"]
        blobs = {str(p.relative_to(out)): p.read_bytes() for p in files}
        blobs["<file names>"] = " ".join(str(p.relative_to(out)) for p in files).encode()
        blobs.update({f"<output of {k}>": v for k, v in outputs.items()})
        needles = _needles() + [b"zebuloniaview"]
        return [(w, n.decode()) for w, d in blobs.items() for n in needles if n in d.lower()]

    run(["predict", str(src), "--model", str(monitored_bundle), "--out", str(out / "results.csv"),
         "--no-progress", "--heatmaps-for-flagged", str(out / "heat")])
    run(["monitor", "gate", str(src / "a.dcm"), str(src / "b.dcm"), "--model", str(monitored_bundle), "--json"])
    run(["deid", str(src / "a.dcm"), str(src / "b.dcm"), str(out / "deid"), "--allow-burned-in"], ok=(0, 1))
    run(["preview", str(src / "c.dcm"), "--out", str(out / "previews")])
    assert len([p for p in out.rglob("*") if p.is_file()]) >= 5
    assert not scan(), scan()
    run(["predict", str(src), "--model", str(monitored_bundle), "--out", str(out / "results.parquet"),
         "--no-progress"])
    assert not scan(), scan()

    import pyarrow.parquet as pq

    by_path = {Path(r["path"]).name: r for r in pq.read_table(out / "results.parquet").to_pylist()}
    assert by_path["a.dcm"]["status"] == "out_of_distribution"
    assert f"body part {vocab.OTHER}" in by_path["a.dcm"]["flag_reason"]
    assert float(by_path["b.dcm"]["ood_score"]) > 0  # the gate's score, also in Parquet
    report = list(csv.DictReader(open(out / "deid" / "deid_report.csv")))
    assert {r["modality"] for r in report} == {vocab.OTHER, "CR"}
    assert [p.name.startswith("img-") for p in (out / "previews").iterdir()] == [True]


@pytest.mark.parametrize("field, raw, code", [
    ("modality", " cr ", "CR"), ("modality", "Zebulon", vocab.OTHER), ("modality", "", None),
    ("body_part", "Chest", "CHEST"), ("body_part", "WHOLE BODY", "WHOLEBODY"), ("body_part", "Mr Smith", "OTHER"),
    ("view_position", "pa", "PA"), ("view_position", "Ward 7", vocab.OTHER), ("view_position", None, None),
    ("manufacturer", "G.E. Medical Systems", "GE"), ("manufacturer", "Philips Medical Systems", "PHILIPS"),
    ("manufacturer", "FUJI PHOTO FILM CO. LTD.", "FUJIFILM"), ("manufacturer", "Dr Gerald's clinic", vocab.OTHER),
    ("manufacturer", "Generalist Imaging", vocab.OTHER),
    ("photometric_interpretation", "monochrome1", "MONOCHROME1"),
    ("photometric_interpretation", "Zebulon", vocab.OTHER),
    ("patient_sex", "F", "F"), ("patient_sex", "Zebulon", vocab.OTHER),
    ("burned_in_annotation", "no", "NO"), ("burned_in_annotation", "see Dr Wexley", vocab.OTHER),
    ("sop_instance_uid", "1.2.840.99.1", "1.2.840.99.1"), ("sop_instance_uid", "Zebulon 1.2", None),
    ("transfer_syntax_uid", "Zebulon", None),
])
def test_image_meta_holds_only_coded_header_values(field, raw, code):
    assert getattr(ImageMeta(source_format="dicom", **{field: raw}), field) == code


def test_gate_config_refuses_values_outside_the_vocabulary():
    from pydantic import ValidationError

    from radiolens.monitor import GateConfig

    assert GateConfig(allowed_body_parts=["chest", "thorax"]).allowed_body_parts == ["CHEST", "THORAX"]
    with pytest.raises(ValidationError, match="BRUSTKORB"):
        GateConfig(allowed_body_parts=["CHEST", "Brustkorb"])


def test_transfer_syntax_text_is_not_quoted_in_errors(siim_dicom, tmp_path):
    from radiolens.errors import RadiolensError
    from radiolens.io.dicom import read_dicom

    data = siim_dicom.read_bytes()
    ts = str(pydicom.dcmread(str(siim_dicom), stop_before_pixels=True).file_meta.TransferSyntaxUID).encode()
    text = b"Zebulonia" + b"x" * (len(ts) - 9)  # same length: the file meta's element lengths stay right
    assert data.count(ts) == 1
    path = tmp_path / "x.dcm"
    path.write_bytes(data.replace(ts, text))
    with pytest.raises(RadiolensError) as err:
        read_dicom(path)
    assert "zebulonia" not in str(err.value).lower()
