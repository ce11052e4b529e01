"""The hash-chained audit log on SQLite: append-only triggers, tamper detection, export, CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from radiolens.cli import app as cli_app
from radiolens.serve import audit


def _populate(client, kermany_samples, n=3):
    keys = client.keys
    ids = []
    for path, _ in kermany_samples[:n]:
        r = client.post("/v1/predictions", headers=keys.h("clinician"), params={"heatmap": "false"},
                        files={"file": ("u", path.read_bytes(), "image/jpeg")})
        assert r.status_code == 201
        ids.append(r.json()["id"])
    r = client.post(f"/v1/predictions/{ids[0]}/feedback", headers=keys.h("clinician"), json={"agree": True})
    assert r.status_code == 201
    return ids


def _tamper(engine, sql: str) -> None:
    """An attacker with DDL rights: drop the append-only triggers, then change history."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_update")
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_log_no_delete")
        else:
            conn.exec_driver_sql("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change")
        conn.execute(text(sql))


def test_rows_content_and_chain(client, kermany_samples):
    ids = _populate(client, kermany_samples)
    engine = client.app_.state.service.engine
    rows = list(audit.rows_between(engine))
    assert [r["event"] for r in rows] == ["prediction"] * 3 + ["feedback"]
    assert [r["prediction_id"] for r in rows[:3]] == ids and rows[3]["prediction_id"] == ids[0]
    clinician_id = client.get("/v1/me", headers=client.keys.h("clinician")).json()["user_id"]
    for r in rows:
        assert r["user_id"] == clinician_id and r["role"] == "clinician"
        assert len(r["model_sha256"]) == 64 and len(r["input_sha256"]) == 64 and r["study_uid"]
        assert r["latency_ms"] > 0
    assert set(rows[0]["outputs"]) >= {"probabilities", "decision", "review_flag", "review_reason"}
    assert rows[3]["outputs"] == {"agree": True, "corrected_label": None}
    for prev, cur in zip(rows, rows[1:], strict=False):
        assert cur["prev_hash"] == prev["row_hash"]
    report = audit.verify(engine)
    assert report.ok and report.rows == 4 and report.head_hash == rows[-1]["row_hash"]
    via_api = client.get("/v1/audit/verify", headers=client.keys.h("auditor")).json()
    assert via_api["ok"] and via_api["rows"] == 4


def test_database_refuses_update_and_delete(client, kermany_samples):
    _populate(client, kermany_samples, n=1)
    engine = client.app_.state.service.engine
    for sql in ("UPDATE audit_log SET role = 'admin'", "DELETE FROM audit_log"):
        with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
            conn.execute(text(sql))
    assert audit.verify(engine).ok


@pytest.mark.parametrize("sql, expect", [
    ("UPDATE audit_log SET outputs_json = replace(outputs_json, 'review_flag', 'review_flog') WHERE seq = 2",
     "seq 2: content does not match"),
    ("UPDATE audit_log SET user_id = user_id + 1 WHERE seq = 1", "seq 1: content does not match"),
    ("DELETE FROM audit_log WHERE seq = 2", "seq 3: expected seq 2"),
    ("DELETE FROM audit_log WHERE seq = 4", "newest rows deleted"),
])
def test_tampering_is_detected(client, kermany_samples, sql, expect):
    _populate(client, kermany_samples)
    engine = client.app_.state.service.engine
    _tamper(engine, sql)
    report = audit.verify(engine)
    assert not report.ok
    assert any(expect in p for p in report.problems), report.problems


def test_concurrent_appends_do_not_fork(client):
    import concurrent.futures as cf

    svc = client.app_.state.service

    def add(i):
        with audit.writer(svc.sessions) as s:
            audit.append(s, audit.AuditEvent("feedback", 1, "clinician", f"{i:032x}", "m" * 64, "i" * 64, "s",
                                             {"i": i}, 1.0))

    with cf.ThreadPoolExecutor(8) as pool:
        list(pool.map(add, range(40)))
    report = audit.verify(svc.engine)
    assert report.ok and report.rows == 40


def test_cli_verify_and_export(client, kermany_samples, tmp_path):
    _populate(client, kermany_samples)
    state = str(client.app_.state.service.settings.state_dir)
    runner = CliRunner()
    ok = runner.invoke(cli_app, ["audit", "verify", "--state-dir", state])
    assert ok.exit_code == 0 and "audit chain OK: 4 rows" in ok.output

    now = datetime.now(UTC)
    out = tmp_path / "audit.jsonl"
    r = runner.invoke(cli_app, ["audit", "export", "--state-dir", state, "--since",
                                (now - timedelta(hours=1)).isoformat(), "--until",
                                (now + timedelta(hours=1)).isoformat(), "--out", str(out)])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["seq"] for x in lines] == [1, 2, 3, 4]
    later = (now + timedelta(hours=1)).isoformat()
    r = runner.invoke(cli_app, ["audit", "export", "--state-dir", state, "--since", later])
    assert r.exit_code == 0 and r.output.strip() == ""
    r = runner.invoke(cli_app, ["audit", "export", "--state-dir", state, "--format", "csv"])
    assert r.exit_code == 0 and len(r.output.strip().splitlines()) == 5 and r.output.startswith("seq,created_at")
    r = runner.invoke(cli_app, ["audit", "export", "--state-dir", state, "--since", "yesterday"])
    assert r.exit_code == 2 and "ISO 8601" in r.output

    _tamper(client.app_.state.service.engine, "DELETE FROM audit_log WHERE seq = 2")
    bad = runner.invoke(cli_app, ["audit", "verify", "--state-dir", state])
    assert bad.exit_code == 1 and "BROKEN" in bad.output


def test_two_sqlite_engines_do_not_fork_the_chain(client):
    """Two engines stand in for two worker processes: BEGIN IMMEDIATE serialises their appends."""
    from sqlalchemy.orm import sessionmaker

    from radiolens.serve.db import WRITE_LOCK, make_engine

    url = client.app_.state.service.db_url
    engines = [make_engine(url), make_engine(url)]
    makers = [sessionmaker(bind=e) for e in engines]

    def add(i):
        s = makers[i % 2]()  # bypasses the per-process lock on purpose
        try:
            s.connection(execution_options={WRITE_LOCK: True})
            audit.append(s, audit.AuditEvent("feedback", 1, "clinician", f"{i:032x}", "m" * 64, "i" * 64, "s",
                                             {"i": i}, 1.0))
            s.commit()
        finally:
            s.close()

    import concurrent.futures as cf

    with cf.ThreadPoolExecutor(8) as pool:
        list(pool.map(add, range(40)))
    report = audit.verify(engines[0])
    for e in engines:
        e.dispose()
    assert report.ok and report.rows == 40
