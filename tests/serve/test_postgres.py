"""The service against a REAL PostgreSQL server started by the fixture (Debian's postgresql package)."""

from __future__ import annotations

import concurrent.futures as cf

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from tests.serve.conftest import START_ROWS
from tests.serve.test_audit import (
    REFUSED_WITHOUT_DDL,
    TAMPERING_WITH_DDL,
    _populate,
    _tamper,
    api_export_seqs,
    append_n,
    cli_export_seqs,
    head_row,
    window_checks,
)
from typer.testing import CliRunner

from radiolens.cli import app as cli_app
from radiolens.serve.store import audit
from radiolens.serve.store.db import head_revision, make_engine

pytestmark = pytest.mark.postgres


def test_migrations_and_cli_on_postgres(pg_url):
    runner = CliRunner()
    for _ in range(2):  # idempotent
        r = runner.invoke(cli_app, ["db", "upgrade", "--db-url", pg_url])
        assert r.exit_code == 0 and f"revision {head_revision()}" in r.output
    r = runner.invoke(cli_app, ["users", "create", "--role", "auditor", "--db-url", pg_url])
    assert r.exit_code == 0 and r.stdout.strip().splitlines()[-1].startswith("rlk_")
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from radiolens.serve.store.tables import Base

    engine = make_engine(pg_url)
    with engine.connect() as conn:
        tables = set(conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname='public'")).scalars())
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()
    assert {"api_keys", "predictions", "feedback", "audit_log", "audit_head", "alembic_version"} <= tables
    assert runner.invoke(cli_app, ["audit", "verify", "--db-url", pg_url]).exit_code == 0


def test_predictions_audit_and_tampering_on_postgres(app_factory, pg_url, kermany_samples, siim_dicom):
    app, keys = app_factory(db_url=pg_url)
    engine = app.state.service.engine
    assert engine.dialect.name == "postgresql"
    with TestClient(app) as c:
        ids = []
        for path, _ in kermany_samples[:2]:
            r = c.post("/v1/predictions", headers=keys.h("clinician"), params={"heatmap": "false"},
                       files={"file": ("u", path.read_bytes(), "image/jpeg")})
            assert r.status_code == 201
            ids.append(r.json()["id"])
        r = c.post("/v1/predictions", headers=keys.h("clinician"),
                   files={"file": ("u", siim_dicom.read_bytes(), "application/dicom")})
        assert r.status_code == 201
        assert c.post(f"/v1/predictions/{ids[0]}/feedback", headers=keys.h("clinician"),
                      json={"agree": True}).status_code == 201
        assert c.get(f"/v1/predictions/{ids[0]}", headers=keys.h("auditor")).json()["feedback"][0]["agree"]
        before = audit.verify(engine).head_hash  # the API verifies, then audits its own read
        assert c.get("/v1/audit/verify", headers=keys.h("auditor")).json() | {"problems": []} == \
            {"ok": True, "rows": START_ROWS + 5, "head_seq": START_ROWS + 5,  # 3 predictions, feedback, 1 read
             "head_hash": before, "problems": []}

    # The database itself refuses changes to history...
    for sql in ("UPDATE audit_log SET role = 'admin'", "DELETE FROM audit_log WHERE seq = 1"):
        with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
            conn.execute(text(sql))
    # ...and an attacker who disables the trigger is caught by the chain.
    _tamper(engine, "UPDATE audit_log SET latency_ms = latency_ms + 1 WHERE seq = 2")
    report = audit.verify(engine)
    assert not report.ok and any("seq 2: content does not match" in p for p in report.problems)


def test_delete_detected_on_postgres(app_factory, pg_url):
    app, _ = app_factory(db_url=pg_url)
    svc = app.state.service
    for i in range(5):
        with audit.writer(svc.sessions) as s:
            audit.append(s, audit.AuditEvent("feedback", 1, "clinician", f"{i:032x}", "m" * 64, "i" * 64, "s",
                                             {"i": i}, 1.0))
    assert audit.verify(svc.engine).ok
    _tamper(svc.engine, "DELETE FROM audit_log WHERE seq = 3")
    report = audit.verify(svc.engine)
    assert not report.ok and any("expected seq 3" in p for p in report.problems)


def test_two_writers_do_not_fork_the_chain(pg_url, app_factory):
    """Two engines stand in for two worker processes: the advisory lock serialises their appends."""
    from sqlalchemy.orm import sessionmaker

    app, _ = app_factory(db_url=pg_url)  # creates the schema
    engines = [make_engine(pg_url), make_engine(pg_url)]
    makers = [sessionmaker(bind=e) for e in engines]

    def add(i):
        # Bypass the per-process lock on purpose: only the database lock protects these.
        s = makers[i % 2]()
        try:
            with s.begin():
                audit.append(s, audit.AuditEvent("feedback", 1, "clinician", f"{i:032x}", "m" * 64, "i" * 64,
                                                 "s", {"i": i}, 1.0))
        finally:
            s.close()

    with cf.ThreadPoolExecutor(8) as pool:
        list(pool.map(add, range(60)))
    report = audit.verify(engines[0])
    for e in engines:
        e.dispose()
    assert report.ok and report.rows == START_ROWS + 60


# ---------------------------------------------------------------------- integrity guards (migration 0003)
@pytest.fixture
def pg_service(app_factory, pg_url):
    app, _ = app_factory(db_url=pg_url)
    return app.state.service


def test_truncate_refused_on_postgres(pg_service):
    append_n(pg_service, 3)
    for table in ("audit_log", "audit_head", "audit_log, audit_head"):
        with pytest.raises(Exception, match="append-only \\(TRUNCATE refused\\)"), pg_service.engine.begin() as conn:
            conn.exec_driver_sql(f"TRUNCATE {table}")
    report = audit.verify(pg_service.engine)
    assert report.ok and report.rows == START_ROWS + 3


def test_guards_refuse_without_ddl_on_postgres(pg_service):
    append_n(pg_service, 3, one_transaction=True)  # several rows in one transaction pass the guards
    before = audit.verify(pg_service.engine)
    assert before.ok and head_row(pg_service.engine) == (START_ROWS + 3, before.head_hash)
    for sql, message in REFUSED_WITHOUT_DDL:
        with pytest.raises(Exception, match=message), pg_service.engine.begin() as conn:
            conn.execute(text(sql))
    after = audit.verify(pg_service.engine)
    assert after.ok and (after.rows, after.head_hash) == (START_ROWS + 3, before.head_hash)


@pytest.mark.parametrize("sql, expect", TAMPERING_WITH_DDL)
def test_tampering_with_ddl_detected_on_postgres(pg_service, sql, expect):
    append_n(pg_service, 5)
    _tamper(pg_service.engine, sql, restore=True)
    report = audit.verify(pg_service.engine)
    assert not report.ok and any(expect in p for p in report.problems), report.problems


def test_disabled_guards_and_rewind_on_postgres(pg_service):
    engine = pg_service.engine
    append_n(pg_service, 4)
    n = START_ROWS + 4
    recorded = head_row(engine)
    _tamper(engine, "SELECT 1")  # triggers disabled (ALTER TABLE ... DISABLE TRIGGER USER), data untouched
    missing = {p.split()[2] for p in audit.verify(engine).problems if p.startswith("guard trigger")}
    assert missing == set(audit.GUARD_TRIGGERS["postgresql"])
    with engine.begin() as conn:
        for table in ("audit_log", "audit_head"):
            conn.exec_driver_sql(f"ALTER TABLE {table} ENABLE TRIGGER USER")
    assert audit.verify(engine).ok
    # Consistent rewind of the newest row, triggers re-enabled: only the externally recorded head tells.
    with engine.connect() as conn:
        prev = conn.execute(text(f"SELECT row_hash FROM audit_log WHERE seq = {n - 1}")).scalar_one()
    _tamper(engine, f"DELETE FROM audit_log WHERE seq = {n}; UPDATE audit_head SET seq = {n - 1}, row_hash = '{prev}'",
            restore=True)
    assert audit.verify(engine).ok
    report = audit.verify(engine, expect_head=recorded)
    assert not report.ok and f"before the externally recorded head seq {n}" in report.problems[0]
    runner = CliRunner()
    db = ["--db-url", engine.url.render_as_string(hide_password=False)]
    r = runner.invoke(cli_app, ["audit", "verify", *db, "--expect-head", f"{recorded[0]}:{recorded[1]}"])
    assert r.exit_code == 1 and "externally recorded head" in r.output
    r = runner.invoke(cli_app, ["audit", "head", *db])
    assert r.exit_code == 0 and r.stdout.strip() == f"{n - 1}:{prev}"


def test_export_window_on_postgres(app_factory, pg_url, kermany_samples):
    app, keys = app_factory(db_url=pg_url)
    with TestClient(app) as c:
        c.keys, c.app_ = keys, app
        _populate(c, kermany_samples)
        rows = list(audit.rows_between(app.state.service.engine))
        window_checks(rows, cli_export_seqs(["--db-url", pg_url]))
        window_checks(rows, api_export_seqs(c))
        window_checks(rows, api_export_seqs(c, "csv"))
