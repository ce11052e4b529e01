"""What clinicians are shown is bound to the audit chain: the stored result, its feedback and the artefact files
of a prediction are checked against its chained rows on every read and by `audit verify`.

Tampering is done as an attacker would: plain SQL on the (unguarded) predictions and feedback tables, files
swapped or removed in the artefact folder, and, with DDL rights, a chained row rewritten with a recomputed hash.
SQLite and the real PostgreSQL fixture."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session
from tests.serve.test_audit import _tamper
from typer.testing import CliRunner

from radiolens.cli import app as cli_app
from radiolens.serve.store import audit
from radiolens.serve.store.tables import AuditEntry


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def served(request, app_factory, kermany_samples):
    """A running app with 6 predictions (3 with feedback, 2 with heatmaps); yields (client, keys, ids, svc)."""
    kw = {} if request.param == "sqlite" else {"db_url": request.getfixturevalue("pg_url")}
    app, keys = app_factory(**kw)
    with TestClient(app) as c:
        ids = []
        for i, (path, _) in enumerate(kermany_samples[:6]):
            r = c.post("/v1/predictions", headers=keys.h("clinician"), params={"heatmap": str(i < 2).lower()},
                       files={"file": ("u", path.read_bytes(), "image/jpeg")})
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        for pid in ids[2:5]:
            assert c.post(f"/v1/predictions/{pid}/feedback", headers=keys.h("clinician"),
                          json={"agree": True}).status_code == 201
        yield c, keys, ids, app.state.service


def _sql(engine, stmt: str, **params) -> None:
    with engine.begin() as conn:
        conn.execute(text(stmt), params)


def _flip_to_pneumonia_no_review(engine, pid: str) -> None:
    """The attack of the report: the served result says pneumonia, positive, no review."""
    with engine.connect() as conn:
        result = json.loads(conn.execute(text("SELECT result_json FROM predictions WHERE id = :p"), {"p": pid})
                            .scalar_one())
    for p in result["probabilities"]:
        p["probability"], p["positive"] = 0.97, True
    result["decision"].update(label="pneumonia", positive_classes=["pneumonia"])
    result["review"].update(flag=False, reason="")
    _sql(engine, "UPDATE predictions SET result_json = :j WHERE id = :p", j=audit.canonical_json(result), p=pid)


def _rechain(engine, seq: int) -> None:
    """With DDL rights: recompute a row's own hash after editing it (the next row still links the old one)."""
    with Session(engine) as s:
        row = s.get(AuditEntry, seq)
        new = audit.chain_hash(row.prev_hash, audit.content_of(row))
    _tamper(engine, f"UPDATE audit_log SET row_hash = '{new}' WHERE seq = {seq}")


def _assert_withheld(c, keys, svc, pid: str, url: str, part: str) -> None:
    before = audit.verify(svc.engine).rows
    r = c.get(url, headers=keys.h("clinician"))
    assert r.status_code == 409, (url, r.status_code, r.text[:200])
    err = r.json()["error"]
    assert err["code"] == "integrity_check_failed" and part in err["message"] and pid in err["message"]
    assert "pneumonia" not in r.text  # nothing of the tampered data is served
    last = list(audit.rows_between(svc.engine))[-1]  # the failed read is audited
    assert (last["event"], last["prediction_id"], last["outputs"]["resource"]) == \
        (audit.INTEGRITY_FAILED, pid, url.rsplit("/", 1)[-1].removesuffix(".png") if url.endswith(".png")
         else "prediction")
    assert part in last["outputs"]["failed"] and audit.verify(svc.engine).rows == before + 1


def test_tampered_results_feedback_and_files_are_withheld_and_reported(served, tmp_path):
    c, keys, ids, svc = served
    engine = svc.engine
    for pid in ids:  # untampered: served, and every read is audited
        assert c.get(f"/v1/predictions/{pid}", headers=keys.h("clinician")).status_code == 200
        assert c.get(f"/v1/predictions/{pid}/image.png", headers=keys.h("auditor")).status_code == 200
    assert audit.verify(engine, artefact_dir=svc.artefact_dir).ok

    art = svc.artefact_dir
    _flip_to_pneumonia_no_review(engine, ids[0])  # result rewritten with plain SQL
    shutil.copyfile(art / f"{ids[5]}.image.png", art / f"{ids[1]}.image.png")  # another patient's image
    (art / f"{ids[0]}.heatmap.png").unlink()  # heatmap removed
    shutil.copyfile(art / f"{ids[0]}.image.png", art / f"{ids[1]}.heatmap.png")  # heatmap replaced
    _sql(engine, "UPDATE feedback SET agree = NOT agree WHERE prediction_id = :p", p=ids[2])  # flipped
    _sql(engine, "DELETE FROM feedback WHERE prediction_id = :p", p=ids[3])  # removed
    _sql(engine, "INSERT INTO feedback (prediction_id, created_at, user_id, agree, corrected_label) "
         "VALUES (:p, :t, 1, false, 'pneumonia')", p=ids[5], t=audit.utcnow())  # forged, unaudited

    _assert_withheld(c, keys, svc, ids[0], f"/v1/predictions/{ids[0]}", "result")
    _assert_withheld(c, keys, svc, ids[0], f"/v1/predictions/{ids[0]}/heatmap.png", "heatmap")
    _assert_withheld(c, keys, svc, ids[1], f"/v1/predictions/{ids[1]}/image.png", "image")
    _assert_withheld(c, keys, svc, ids[1], f"/v1/predictions/{ids[1]}/heatmap.png", "heatmap")
    for pid in ids[2], ids[3], ids[5]:
        _assert_withheld(c, keys, svc, pid, f"/v1/predictions/{pid}", "feedback")
    # an untampered prediction is still served (the check is per prediction)
    r = c.get(f"/v1/predictions/{ids[4]}", headers=keys.h("clinician"))
    assert r.status_code == 200 and r.json()["feedback"][0]["agree"] is True

    report = audit.verify(engine, artefact_dir=art)
    assert not report.ok
    tampered = {p.split(":")[0].removeprefix("prediction ") for p in report.problems}
    assert tampered == {ids[0], ids[1], ids[2], ids[3], ids[5]}, report.problems
    for needle in ("result does not match", "heatmap file is missing", "image file does not match",
                   "heatmap file does not match", "feedback"):
        assert any(needle in p for p in report.problems), (needle, report.problems)
    # the database part of the check runs without the files too; the API runs all of it
    assert not audit.verify(engine).ok
    api = c.get("/v1/audit/verify", headers=keys.h("auditor")).json()
    assert not api["ok"] and len(api["problems"]) == len(report.problems)

    args = ["--state-dir", str(svc.settings.state_dir)] + (
        ["--db-url", svc.db_url] if engine.dialect.name == "postgresql" else [])
    cli = CliRunner().invoke(cli_app, ["audit", "verify", *args])
    assert cli.exit_code == 1 and "BROKEN" in cli.output
    assert f"prediction {ids[1]}: image file does not match" in cli.output
    assert f"prediction {ids[0]}: stored result does not match" in cli.output
    no_files = CliRunner().invoke(cli_app, ["audit", "verify", "--no-artefacts", *args])
    assert no_files.exit_code == 1 and "image file" not in no_files.output


def test_rewritten_chained_row_is_refused(served):
    """An attacker with DDL rights changes the result AND the hash in its chained row AND that row's own hash:
    the next row still links the old hash, so the read is refused and verify reports the chain."""
    c, keys, ids, svc = served
    engine = svc.engine
    with Session(engine) as s:
        row = s.query(AuditEntry).filter_by(prediction_id=ids[0], event="prediction").one()
        seq, outputs = row.seq, json.loads(row.outputs_json)
    _flip_to_pneumonia_no_review(engine, ids[0])
    with engine.connect() as conn:
        forged = conn.execute(text("SELECT result_json FROM predictions WHERE id = :p"), {"p": ids[0]}).scalar_one()
    outputs["result_sha256"] = audit.sha256_hex(forged)
    as_sql = audit.canonical_json(outputs).replace(":", "\\:")  # text() would read ":name" as a parameter
    _tamper(engine, f"UPDATE audit_log SET outputs_json = '{as_sql}' WHERE seq = {seq}")
    _rechain(engine, seq)
    _assert_withheld(c, keys, svc, ids[0], f"/v1/predictions/{ids[0]}", "chain")
    report = audit.verify(engine)
    assert any(f"seq {seq + 1}: prev_hash does not match" in p for p in report.problems), report.problems


def test_a_second_chained_result_for_a_prediction_is_refused(served):
    """Plain DML can append a well-formed row at the head (the chain is unkeyed); a second "prediction" row
    claiming another result for an existing prediction is refused by the database (migration 0005)."""
    c, keys, ids, svc = served
    engine = svc.engine
    with Session(engine) as s:
        head = s.get(audit.AuditHead, 1)
        row = AuditEntry(seq=head.seq + 1, created_at=audit.utcnow(), event="prediction", user_id=1,
                         role="clinician", prediction_id=ids[0], model_sha256="m", input_sha256="i", study_uid="s",
                         outputs_json="{}", latency_ms=1.0, prev_hash=head.row_hash, row_hash="")
        row.row_hash = audit.chain_hash(row.prev_hash, audit.content_of(row))
        s.add(row)
        with pytest.raises(Exception, match="(?i)unique"):
            s.commit()
    assert c.get(f"/v1/predictions/{ids[0]}", headers=keys.h("clinician")).status_code == 200


def test_predictions_inserted_or_deleted_outside_the_service(served):
    c, keys, ids, svc = served
    engine = svc.engine
    fake = "f" * 32
    _sql(engine, "INSERT INTO predictions (id, created_at, user_id, model_sha256, input_sha256, study_ref, "
         "result_json, has_heatmap) SELECT :f, created_at, user_id, model_sha256, input_sha256, study_ref, "
         "result_json, has_heatmap FROM predictions WHERE id = :p", f=fake, p=ids[5])
    _assert_withheld(c, keys, svc, fake, f"/v1/predictions/{fake}", "prediction")
    _sql(engine, "DELETE FROM monitoring_records WHERE prediction_id = :p", p=ids[1])
    _sql(engine, "DELETE FROM predictions WHERE id = :p", p=ids[1])
    _assert_withheld(c, keys, svc, ids[1], f"/v1/predictions/{ids[1]}", "prediction")
    problems = audit.verify(engine).problems
    assert f"prediction {fake}: no chained prediction row (inserted outside the service)" in problems
    assert f"prediction {ids[1]}: stored prediction row is missing (deleted)" in problems
    # an id that never existed is a plain, audited 404
    r = c.get(f"/v1/predictions/{'0' * 32}", headers=keys.h("clinician"))
    assert r.status_code == 404 and list(audit.rows_between(engine))[-1]["outputs"] == {
        "resource": "prediction", "found": False}


def test_artefact_bytes_served_are_the_checked_ones(served):
    c, keys, ids, svc = served
    img = c.get(f"/v1/predictions/{ids[0]}/image.png", headers=keys.h("clinician"))
    heat = c.get(f"/v1/predictions/{ids[0]}/heatmap.png", headers=keys.h("clinician"))
    with Session(svc.engine) as s:
        bound = json.loads(s.query(AuditEntry).filter_by(prediction_id=ids[0], event="prediction").one()
                           .outputs_json)["artefacts"]
    assert audit.sha256_hex(img.content) == bound["image"] and audit.sha256_hex(heat.content) == bound["heatmap"]
    assert Path(svc.artefact_dir / f"{ids[0]}.image.png").read_bytes() == img.content
    # no heatmap was computed for ids[2]: none is chained, so a planted file is never served
    shutil.copyfile(svc.artefact_dir / f"{ids[0]}.heatmap.png", svc.artefact_dir / f"{ids[2]}.heatmap.png")
    r = c.get(f"/v1/predictions/{ids[2]}/heatmap.png", headers=keys.h("clinician"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
