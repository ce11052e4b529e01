"""The hash-chained audit log on SQLite: append-only triggers, tamper detection, export, CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from tests.serve.conftest import START_ROWS
from typer.testing import CliRunner

from radiolens.cli import app as cli_app
from radiolens.serve.store import audit


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


def _tamper(engine, sql: str, restore: bool = False) -> None:
    """An attacker with DDL rights: drop (or disable) every guard trigger, change history with one or more
    ``;``-separated statements, and with ``restore`` put the triggers back to cover their tracks."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            saved = list(conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                                              "AND tbl_name IN ('audit_log', 'audit_head')"))
            for name, _ in saved:
                conn.exec_driver_sql(f"DROP TRIGGER {name}")
        else:
            for table in ("audit_log", "audit_head"):
                conn.exec_driver_sql(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        for stmt in filter(None, (x.strip() for x in sql.split(";"))):
            conn.execute(text(stmt))
        if restore:
            if engine.dialect.name == "sqlite":
                for _, ddl in saved:
                    conn.exec_driver_sql(ddl)
            else:
                for table in ("audit_log", "audit_head"):
                    conn.exec_driver_sql(f"ALTER TABLE {table} ENABLE TRIGGER USER")


def append_n(svc, n: int, one_transaction: bool = False) -> None:
    """``n`` chained rows through the real writer (several in one transaction when asked)."""
    def event(i):
        return audit.AuditEvent("feedback", 1, "clinician", f"{i:032x}", "m" * 64, "i" * 64, "s", {"i": i}, 1.0)

    if one_transaction:
        with audit.writer(svc.sessions) as s:
            for i in range(n):
                audit.append(s, event(i))
        return
    for i in range(n):
        with audit.writer(svc.sessions) as s:
            audit.append(s, event(i))


def head_row(engine) -> tuple[int, str]:
    with engine.connect() as conn:
        return tuple(conn.execute(text("SELECT seq, row_hash FROM audit_head WHERE id = 1")).one())


FLIP_HEAD_HASH = "UPDATE audit_head SET row_hash = CASE WHEN substr(row_hash, 1, 1) = 'f' THEN 'e' ELSE 'f' END " \
    "|| substr(row_hash, 2)"

# Changes a client with plain SQL rights (no DDL) might try; the database must refuse each one.
REFUSED_WITHOUT_DDL = [
    ("DELETE FROM audit_head", "audit_head can only advance"),
    ("UPDATE audit_head SET seq = seq - 1", "audit_head can only advance"),  # rewind
    ("UPDATE audit_head SET seq = seq + 1", "audit_head can only advance"),  # jump past the rows
    (FLIP_HEAD_HASH, "audit_head can only advance"),
    ("INSERT INTO audit_head (id, seq, row_hash) VALUES (2, 0, 'x')", "audit_head can only advance"),
    ("INSERT INTO audit_log (seq, created_at, event, user_id, role, prediction_id, model_sha256, input_sha256, "
     "study_uid, outputs_json, latency_ms, prev_hash, row_hash) VALUES (99, '2026-01-01 00:00:00', 'feedback', 1, "
     "'clinician', 'p', 'm', 'i', 's', '{}', 1.0, 'x', 'y')", "append-only"),
    ("UPDATE audit_log SET role = 'admin'", "append-only"),
    ("DELETE FROM audit_log", "append-only"),
]

# Tampering by someone who can drop the triggers: (statements, problem verify must report). The head-hash edit
# always changes the first hex digit ('f' || ... was a no-op, hence undetected, for the 1 in 16 hashes that
# already started with 'f').
TAMPERING_WITH_DDL = [
    ("DELETE FROM audit_log; DELETE FROM audit_head", "audit_head is missing"),
    ("DELETE FROM audit_head", "audit_head is missing"),
    (f"DELETE FROM audit_log WHERE seq = {START_ROWS + 5}", "newest rows deleted"),  # after append_n(svc, 5)
    (FLIP_HEAD_HASH, "recorded head hash does not match"),
    ("DELETE FROM audit_log WHERE seq = 2", "seq 3: expected seq 2"),
]


def test_rows_content_and_chain(client, kermany_samples):
    ids = _populate(client, kermany_samples)
    engine = client.app_.state.service.engine
    every = list(audit.rows_between(engine))
    assert [r["event"] for r in every[:START_ROWS]] == ["deid_key_set"]  # the service's first start
    rows = every[START_ROWS:]
    assert [r["event"] for r in rows] == ["prediction"] * 3 + ["feedback"]
    assert [r["prediction_id"] for r in rows[:3]] == ids and rows[3]["prediction_id"] == ids[0]
    clinician_id = client.get("/v1/me", headers=client.keys.h("clinician")).json()["user_id"]
    for r in rows:
        assert r["user_id"] == clinician_id and r["role"] == "clinician"
        assert len(r["model_sha256"]) == 64 and len(r["input_sha256"]) == 64 and r["study_uid"]
        assert r["latency_ms"] > 0
    assert set(rows[0]["outputs"]) >= {"probabilities", "decision", "review_flag", "review_reason"}
    fb = client.get(f"/v1/predictions/{ids[0]}", headers=client.keys.h("clinician")).json()["feedback"][0]
    assert rows[3]["outputs"] == {"agree": True, "corrected_label": None, "feedback_id": fb["id"],
                                  "created_at": fb["created_at"].removesuffix("Z").replace("+00:00", "")}
    for prev, cur in zip(every, every[1:], strict=False):
        assert cur["prev_hash"] == prev["row_hash"]
    report = audit.verify(engine)
    # + the two reads above (/v1/me, the prediction), each audited
    assert report.ok and report.rows == START_ROWS + 6 and report.head_seq == START_ROWS + 6
    assert report.head_hash != rows[-1]["row_hash"] and rows[-1]["seq"] == START_ROWS + 4
    via_api = client.get("/v1/audit/verify", headers=client.keys.h("auditor")).json()
    assert via_api["ok"] and via_api["rows"] == START_ROWS + 6


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
    (f"DELETE FROM audit_log WHERE seq = {START_ROWS + 4}", "newest rows deleted"),
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
    assert report.ok and report.rows == START_ROWS + 40


def test_cli_verify_and_export(client, kermany_samples, tmp_path):
    _populate(client, kermany_samples)
    state = str(client.app_.state.service.settings.state_dir)
    runner = CliRunner()
    ok = runner.invoke(cli_app, ["audit", "verify", "--state-dir", state])
    assert ok.exit_code == 0 and f"audit chain OK: {START_ROWS + 4} rows" in ok.output

    now = datetime.now(UTC)
    out = tmp_path / "audit.jsonl"
    r = runner.invoke(cli_app, ["audit", "export", "--state-dir", state, "--since",
                                (now - timedelta(hours=1)).isoformat(), "--until",
                                (now + timedelta(hours=1)).isoformat(), "--out", str(out)])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["seq"] for x in lines] == list(range(1, START_ROWS + 5))
    later = (now + timedelta(hours=1)).isoformat()
    r = runner.invoke(cli_app, ["audit", "export", "--state-dir", state, "--since", later])
    assert r.exit_code == 0 and r.output.strip() == ""
    r = runner.invoke(cli_app, ["audit", "export", "--state-dir", state, "--format", "csv"])
    assert r.exit_code == 0 and len(r.output.strip().splitlines()) == START_ROWS + 5
    assert r.output.startswith("seq,created_at")
    r = runner.invoke(cli_app, ["audit", "export", "--state-dir", state, "--since", "yesterday"])
    assert r.exit_code == 2 and "ISO 8601" in r.output

    _tamper(client.app_.state.service.engine, "DELETE FROM audit_log WHERE seq = 2")
    bad = runner.invoke(cli_app, ["audit", "verify", "--state-dir", state])
    assert bad.exit_code == 1 and "BROKEN" in bad.output


def test_two_sqlite_engines_do_not_fork_the_chain(client):
    """Two engines stand in for two worker processes: BEGIN IMMEDIATE serialises their appends."""
    from sqlalchemy.orm import sessionmaker

    from radiolens.serve.store.db import WRITE_LOCK, make_engine

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
    assert report.ok and report.rows == START_ROWS + 40


# ---------------------------------------------------------------------- integrity guards (migration 0003)
def test_fresh_database_has_a_genesis_head(tmp_path):
    from radiolens.serve.store.db import make_engine, upgrade

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgrade(url)  # migrated only: the service has not started (it would register the secret's fingerprint)
    engine = make_engine(url)
    try:
        head = head_row(engine)
        report = audit.verify(engine)
    finally:
        engine.dispose()
    assert head == (0, audit.GENESIS)
    assert report.ok and report.rows == 0 and (report.head_seq, report.head_hash) == (0, audit.GENESIS)


def test_several_rows_in_one_transaction(client):
    svc = client.app_.state.service
    append_n(svc, 5, one_transaction=True)
    report = audit.verify(svc.engine)
    assert report.ok and report.rows == START_ROWS + 5 and head_row(svc.engine) == (START_ROWS + 5, report.head_hash)


@pytest.mark.parametrize("sql, message", REFUSED_WITHOUT_DDL)
def test_guards_refuse_without_ddl(client, sql, message):
    svc = client.app_.state.service
    append_n(svc, 3)
    before = audit.verify(svc.engine)
    with pytest.raises(Exception, match=message), svc.engine.begin() as conn:
        conn.execute(text(sql))
    after = audit.verify(svc.engine)
    assert after.ok and (after.rows, after.head_hash) == (START_ROWS + 3, before.head_hash)


@pytest.mark.parametrize("sql, expect", TAMPERING_WITH_DDL)
def test_tampering_with_ddl_is_detected(client, sql, expect):
    svc = client.app_.state.service
    append_n(svc, 5)
    _tamper(svc.engine, sql, restore=True)  # triggers back in place: only the data tells
    report = audit.verify(svc.engine)
    assert not report.ok and any(expect in p for p in report.problems), report.problems


def test_dropped_guards_are_reported(client):
    svc = client.app_.state.service
    append_n(svc, 2)
    _tamper(svc.engine, "SELECT 1")  # triggers dropped, data untouched
    report = audit.verify(svc.engine)
    missing = {p.split()[2] for p in report.problems if p.startswith("guard trigger")}
    assert not report.ok and missing == set(audit.GUARD_TRIGGERS["sqlite"])


def test_consistent_rewind_needs_the_external_head(client):
    """Delete the newest row AND rewind the head consistently, then restore the triggers: nothing inside the
    database can tell; the head recorded outside it earlier can."""
    svc = client.app_.state.service
    append_n(svc, 4)
    n = START_ROWS + 4
    recorded = head_row(svc.engine)
    with svc.engine.connect() as conn:
        prev = conn.execute(text(f"SELECT row_hash FROM audit_log WHERE seq = {n - 1}")).scalar_one()
    _tamper(svc.engine, f"DELETE FROM audit_log WHERE seq = {n}; "
            f"UPDATE audit_head SET seq = {n - 1}, row_hash = '{prev}'", restore=True)
    assert audit.verify(svc.engine).ok  # the documented limit of an internal check
    report = audit.verify(svc.engine, expect_head=recorded)
    assert not report.ok and f"before the externally recorded head seq {n}" in report.problems[0]
    # Rewind to empty (all rows, head back to genesis): same story.
    _tamper(svc.engine, f"DELETE FROM audit_log; UPDATE audit_head SET seq = 0, row_hash = '{audit.GENESIS}'",
            restore=True)
    assert audit.verify(svc.engine).ok
    assert not audit.verify(svc.engine, expect_head=f"{recorded[0]}:{recorded[1]}").ok
    # A head that IS in the chain passes; a forged hash at an existing seq does not.
    append_n(svc, 2)
    seq1 = list(audit.rows_between(svc.engine))[0]["row_hash"]
    assert audit.verify(svc.engine, expect_head=(1, seq1)).ok
    bad = audit.verify(svc.engine, expect_head=(1, "a" * 64))
    assert not bad.ok and "does not match the externally recorded head hash" in bad.problems[0]


def test_append_refuses_when_head_was_deleted(client):
    svc = client.app_.state.service
    append_n(svc, 1)
    _tamper(svc.engine, "DELETE FROM audit_head", restore=True)
    with pytest.raises(audit.AuditIntegrityError, match="audit_head is missing"):
        append_n(svc, 1)


def test_cli_head_and_expect_head(client, tmp_path):
    svc = client.app_.state.service
    append_n(svc, 3)
    state = str(svc.settings.state_dir)
    runner = CliRunner()
    r = runner.invoke(cli_app, ["audit", "head", "--state-dir", state])
    assert r.exit_code == 0, r.output
    recorded = r.stdout.strip()
    assert recorded == f"{START_ROWS + 3}:" + audit.verify(svc.engine).head_hash
    assert runner.invoke(cli_app, ["audit", "verify", "--state-dir", state, "--expect-head", recorded]).exit_code == 0
    r = runner.invoke(cli_app, ["audit", "verify", "--state-dir", state, "--expect-head", "3:nothex"])
    assert r.exit_code == 2 and "SEQ:HASH" in r.output and "Traceback" not in r.output
    r = runner.invoke(cli_app, ["audit", "verify", "--state-dir", state, "--expect-head", "7:" + "0" * 64])
    assert r.exit_code == 1 and "before the externally recorded head seq 7" in r.output
    via_api = client.get("/v1/audit/verify", params={"expect_head": recorded}, headers=client.keys.h("auditor"))
    assert via_api.status_code == 200 and via_api.json()["ok"]
    via_api = client.get("/v1/audit/verify", params={"expect_head": "9:" + "0" * 64},
                         headers=client.keys.h("auditor"))
    assert not via_api.json()["ok"]
    bad = client.get("/v1/audit/verify", params={"expect_head": "x"}, headers=client.keys.h("auditor"))
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"  # by the schema pattern
    # A broken chain is never printed as a head to anchor.
    _tamper(svc.engine, "DELETE FROM audit_log WHERE seq = 3")
    r = runner.invoke(cli_app, ["audit", "head", "--state-dir", state])
    assert r.exit_code == 1 and "BROKEN" in r.output and r.stdout.strip() == ""


def test_upgrade_from_0002_keeps_existing_chain(tmp_path):
    """A database written before 0003 (head created lazily) upgrades in place and keeps appending."""
    from alembic import command
    from sqlalchemy.orm import sessionmaker

    from radiolens.serve.store.db import alembic_config, head_revision, make_engine, upgrade
    from radiolens.serve.store.tables import AuditEntry, AuditHead

    for n_rows in (0, 3):
        url = f"sqlite:///{tmp_path / f'old{n_rows}.db'}"
        engine = make_engine(url)
        cfg = alembic_config(url)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0002")
        with sessionmaker(bind=engine)() as s, s.begin():  # what the 0002-era writer did, row by row
            prev = audit.GENESIS
            for i in range(1, n_rows + 1):
                row = AuditEntry(seq=i, created_at=audit.utcnow(), event="feedback", user_id=1, role="clinician",
                                 prediction_id=f"{i:032x}", model_sha256="m", input_sha256="i", study_uid="s",
                                 outputs_json="{}", latency_ms=1.0, prev_hash=prev, row_hash="")
                row.row_hash = prev = audit.chain_hash(prev, audit.content_of(row))
                s.add(row)
            if n_rows:
                s.add(AuditHead(id=1, seq=n_rows, row_hash=prev))
        assert upgrade(url, engine) == head_revision()
        assert head_row(engine)[0] == n_rows
        with audit.writer(sessionmaker(bind=engine)) as s:
            audit.append(s, audit.AuditEvent("feedback", 1, "clinician", "p" * 32, "m", "i", "s", {}, 1.0))
        report = audit.verify(engine)
        engine.dispose()
        assert report.ok and report.rows == n_rows + 1, report.problems


# ---------------------------------------------------------------------- export time windows
def window_checks(rows: list[dict], export_seqs) -> None:
    """``export_seqs(since, until) -> [seq, ...]``: since is inclusive, until exclusive, any UTC offset."""
    from datetime import timezone

    assert len(rows) >= 4 and len({r["created_at"] for r in rows}) == len(rows)
    t = [r["created_at"] for r in rows]  # ISO 8601 with "Z"
    assert export_seqs(t[1], t[3]) == [rows[1]["seq"], rows[2]["seq"]]  # row 2 included, row 4 excluded
    later = export_seqs(t[1], None)  # open-ended: also the rows written since (e.g. the exports' own reads)
    assert later[:len(rows) - 1] == [r["seq"] for r in rows[1:]] and all(x > rows[-1]["seq"] for x in
                                                                        later[len(rows) - 1:])
    assert export_seqs(None, t[1]) == [rows[0]["seq"]]
    assert export_seqs(t[2], t[2]) == []
    # The same instant written with another offset and without "Z" (naive = UTC) selects the same rows.
    plus2 = datetime.fromisoformat(t[1]).astimezone(timezone(timedelta(hours=2))).isoformat()
    naive = t[3].removesuffix("Z")
    assert export_seqs(plus2, naive) == [rows[1]["seq"], rows[2]["seq"]]


def cli_export_seqs(db_args: list[str]):
    runner = CliRunner()

    def run(since, until):
        args = ["audit", "export", *db_args]
        args += ["--since", since] if since else []
        args += ["--until", until] if until else []
        r = runner.invoke(cli_app, args)
        assert r.exit_code == 0, r.output
        return [json.loads(x)["seq"] for x in r.stdout.splitlines() if x.strip()]

    return run


def api_export_seqs(client, fmt: str = "jsonl"):
    import csv
    import io

    def run(since, until):
        params = {"fmt": fmt} | ({"since": since} if since else {}) | ({"until": until} if until else {})
        r = client.get("/v1/audit", params=params, headers=client.keys.h("auditor"))
        assert r.status_code == 200, r.text
        if fmt == "csv":
            return [int(x["seq"]) for x in csv.DictReader(io.StringIO(r.text))]
        return [json.loads(x)["seq"] for x in r.text.splitlines() if x.strip()]

    return run


def test_export_window_splits_rows(client, kermany_samples):
    _populate(client, kermany_samples)
    engine = client.app_.state.service.engine
    rows = list(audit.rows_between(engine))
    state = str(client.app_.state.service.settings.state_dir)
    window_checks(rows, cli_export_seqs(["--state-dir", state]))
    window_checks(rows, api_export_seqs(client))
    window_checks(rows, api_export_seqs(client, "csv"))


# ---------------------------------------------------------------------- key management is audited
def test_key_management_via_api_is_audited(client):
    keys = client.keys
    admin_id = client.get("/v1/me", headers=keys.h("admin")).json()["user_id"]
    r = client.post("/v1/keys", headers=keys.h("admin"), json={"role": "auditor", "label": "Dr Quixotic, ward 3"})
    assert r.status_code == 201
    new = r.json()
    assert client.delete(f"/v1/keys/{new['key_id']}", headers=keys.h("admin")).status_code == 200
    assert client.delete(f"/v1/keys/{new['key_id']}", headers=keys.h("admin")).status_code == 200  # already revoked
    engine = client.app_.state.service.engine
    rows = [r for r in audit.rows_between(engine) if r["event"].startswith("key_")]
    assert [r["event"] for r in rows] == ["key_created", "key_revoked"]  # a no-op revoke is not a new event
    for row in rows:
        assert (row["user_id"], row["role"]) == (admin_id, "admin")
        assert row["outputs"] == {"key_user_id": new["id"], "key_role": "auditor"}
    dumped = "".join(audit.export(engine, "jsonl")) + "".join(audit.export(engine, "csv"))
    secret = new["api_key"].split("_", 2)[2]
    assert secret not in dumped and "Quixotic" not in dumped and new["api_key"] not in dumped
    assert audit.verify(engine).ok
    # A request refused before the handler runs (invalid body) writes nothing.
    n = audit.verify(engine).rows
    assert client.post("/v1/keys", headers=keys.h("admin"), json={"role": "root"}).status_code == 422
    assert audit.verify(engine).rows == n
