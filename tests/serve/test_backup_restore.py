"""Backup and restore of the service database (`radiolens db backup|restore`) and upgrades from the first
migration: a store with real predictions is backed up while the service runs, the original destroyed, the
backup restored into a new place, and the real `radiolens audit verify --expect-head` run on it: it passes with
the head recorded at backup time, and fails (exit 1, saying why) on a restored copy that was tampered with or
on a head newer than the backup. SQLite and the real PostgreSQL fixture (pg_dump / pg_restore)."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from tests.serve.test_audit import _tamper
from typer.testing import CliRunner

from radiolens.cli import app as cli_app
from radiolens.serve.store import audit
from radiolens.serve.store.backup import manifest_path
from radiolens.serve.store.db import make_engine

runner = CliRunner()


def _cli(*args: str):
    return runner.invoke(cli_app, list(args))


def _new_pg_db(postgres_server: str) -> str:
    import psycopg

    name = "r_" + uuid.uuid4().hex[:12]
    with psycopg.connect(postgres_server.replace("+psycopg", "") + "/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{postgres_server}/{name}"


def _predict(c: TestClient, keys, path: Path, heatmap: bool) -> str:
    r = c.post("/v1/predictions", headers=keys.h("clinician"), params={"heatmap": str(heatmap).lower()},
               files={"file": ("u", path.read_bytes(), "image/jpeg")})
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.mark.parametrize("dialect", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_backup_restore_verify_with_recorded_head(request, dialect, app_factory, kermany_samples, tmp_path):
    pg = dialect == "postgresql"
    source_kw = {"db_url": request.getfixturevalue("pg_url")} if pg else {}
    app, keys = app_factory(**source_kw)
    svc = app.state.service
    state = svc.settings.state_dir
    source = ["--db-url", source_kw["db_url"]] if pg else []
    source += ["--state-dir", str(state)]  # the artefacts are always in the state folder
    out = tmp_path / "backups" / ("radiolens.dump" if pg else "radiolens.db")
    with TestClient(app) as c:  # the service keeps running during the backup
        ids = [_predict(c, keys, path, heatmap=i < 2) for i, (path, _) in enumerate(kermany_samples[:4])]
        assert c.post(f"/v1/predictions/{ids[2]}/feedback", headers=keys.h("clinician"),
                      json={"agree": False, "corrected_label": "pneumonia"}).status_code == 201
        done = _cli("db", "backup", "--out", str(out), *source)
        assert done.exit_code == 0, done.output
        backup_head = done.stdout.strip().splitlines()[-1]
        # a prediction after the backup: the live chain moves on, the backup keeps its own head
        _predict(c, keys, kermany_samples[4][0], heatmap=True)
        live_head = _cli("audit", "head", *source).stdout.strip()
    assert _cli("audit", "verify", "--expect-head", backup_head, *source).exit_code == 0  # a head of the live chain
    manifest = json.loads(manifest_path(out).read_text())
    assert f"{manifest['head_seq']}:{manifest['head_hash']}" == backup_head
    assert manifest["dialect"] == dialect and manifest["head_seq"] < int(live_head.split(":")[0])
    assert out.stat().st_mode & 0o077 == 0 and manifest_path(out).stat().st_mode & 0o077 == 0
    assert not any(v in out.read_bytes() for v in (keys.clinician.encode(), keys.admin.encode()))  # hashes only

    # the original is gone: the database destroyed, only the artefact files (copied after the backup) remain
    new_state = tmp_path / "restored-state"
    shutil.copytree(state / "artefacts", new_state / "artefacts")
    if pg:
        busy = _cli("db", "restore", str(out), *source)  # over the live database
        assert busy.exit_code == 2 and "the target database is not empty" in busy.output
        gone = _cli("db", "restore", str(out), "--db-url", "postgresql+psycopg://radiolens:pw@127.0.0.1:1/none")
        assert gone.exit_code == 2 and "cannot open the target database" in gone.output
        assert "pw@" not in gone.output
        svc.engine.dispose()
        with make_engine(source_kw["db_url"]).begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA public CASCADE")
        target = ["--db-url", _new_pg_db(request.getfixturevalue("postgres_server"))]
    else:
        for p in state.glob("radiolens.db*"):
            p.write_bytes(b"\0" * 4096)  # corrupted in place
        target = []
    target += ["--state-dir", str(new_state)]
    assert _cli("audit", "verify", *source).exit_code != 0  # the original really is unusable

    done = _cli("db", "restore", str(out), *target)
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == backup_head
    ok = _cli("audit", "verify", "--expect-head", backup_head, *target)
    assert ok.exit_code == 0, ok.output
    assert f"audit chain OK: {manifest['head_seq']} rows" in ok.output
    # every prediction of the backup is there and its files check out against the chain
    url = target[1] if pg else f"sqlite:///{new_state / 'radiolens.db'}"
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert set(conn.execute(text("SELECT id FROM predictions")).scalars()) == set(ids)
        # the newer head (the one recorded after the backup) is not in the restored chain: data after it is lost
        newer = _cli("audit", "verify", "--expect-head", live_head, *target)
        assert newer.exit_code == 1
        assert f"before the externally recorded head seq {live_head.split(':')[0]}" in newer.output

        # someone with DDL rights edits an audit row of the restored copy and puts the guards back
        _tamper(engine, "UPDATE audit_log SET outputs_json = '{}' WHERE seq = 2", restore=True)
        bad = _cli("audit", "verify", "--expect-head", backup_head, *target)
        assert bad.exit_code == 1
        assert "audit chain BROKEN" in bad.output
        assert "seq 2: content does not match its hash (row edited)" in bad.output
    finally:
        engine.dispose()


def test_sqlite_backup_is_a_consistent_snapshot_while_rows_are_written(tmp_path):
    """Backups taken while another connection keeps appending audit rows: each copy is one snapshot, so its
    chain verifies and ends exactly at the head its manifest recorded."""
    import threading

    from radiolens.serve.store.db import session_factory

    state = tmp_path / "state"
    assert _cli("users", "create", "--role", "admin", "--state-dir", str(state)).exit_code == 0
    engine = make_engine(f"sqlite:///{state / 'radiolens.db'}")
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            with audit.writer(session_factory(engine)) as s:
                for _ in range(5):  # several rows per transaction: a torn copy would end mid-transaction
                    i += 1
                    audit.append(s, audit.AuditEvent("drift_alert", 0, "system", "", "", "", "", {"i": i}, 0.0))

    writer = threading.Thread(target=write)
    writer.start()
    try:
        heads = []
        for n in range(3):
            out = tmp_path / f"b{n}.db"
            done = _cli("db", "backup", "--out", str(out), "--state-dir", str(state))
            assert done.exit_code == 0, done.output
            heads.append(done.stdout.strip())
            check = _cli("audit", "verify", "--db-url", f"sqlite:///{out}", "--no-artefacts", "--expect-head",
                         heads[-1])
            assert check.exit_code == 0, check.output
            assert f"head seq {heads[-1].split(':')[0]}," in check.output  # the copy ends at the recorded head
            assert (int(heads[-1].split(":")[0]) - 1) % 5 == 0  # whole transactions only (1 row: key_created)
    finally:
        stop.set()
        writer.join()
        engine.dispose()
    assert len({h.split(":")[0] for h in heads}) == 3  # the writer moved on between the backups


def test_backup_refusals(tmp_path):
    """A backup never overwrites; a damaged or changed backup is not restored; a restore never writes over a
    database; a missing manifest or a backup of another kind says so. One line and exit 2 each."""
    state = tmp_path / "state"
    assert _cli("users", "create", "--role", "admin", "--state-dir", str(state)).exit_code == 0
    out = tmp_path / "b.db"
    assert _cli("db", "backup", "--out", str(out), "--state-dir", str(state)).exit_code == 0
    again = _cli("db", "backup", "--out", str(out), "--state-dir", str(state))
    assert again.exit_code == 2 and "already exists" in again.output

    over = _cli("db", "restore", str(out), "--state-dir", str(state))  # onto the live database
    assert over.exit_code == 2 and "radiolens.db already exists" in over.output

    pg_target = _cli("db", "restore", str(out), "--db-url", "postgresql+psycopg://u@127.0.0.1:1/x")
    assert pg_target.exit_code == 2 and "this is a sqlite backup" in pg_target.output

    damaged = tmp_path / "damaged.db"
    shutil.copy(out, damaged)
    shutil.copy(manifest_path(out), manifest_path(damaged))
    with damaged.open("r+b") as fh:
        fh.seek(200)
        fh.write(b"\xff")
    refused = _cli("db", "restore", str(damaged), "--state-dir", str(tmp_path / "fresh"))
    assert refused.exit_code == 2 and "does not match the sha256 in its manifest" in refused.output
    assert not (tmp_path / "fresh" / "radiolens.db").exists()

    manifest_path(damaged).unlink()
    lost = _cli("db", "restore", str(damaged), "--state-dir", str(tmp_path / "fresh"))
    assert lost.exit_code == 2 and "damaged.db.manifest.json is missing" in lost.output

    nothing = _cli("db", "backup", "--out", str(tmp_path / "c.db"), "--state-dir", str(tmp_path / "nope"))
    assert nothing.exit_code == 2 and not (tmp_path / "c.db").exists() and not (tmp_path / "nope").exists()


def test_upgrade_from_first_migration_keeps_the_chain(tmp_path):
    """A database made at revision 0001, with a key, a prediction and its audit rows written as that version
    did (the chain head created on the first append), upgraded to head with `radiolens db upgrade`: the chain
    verifies against the head recorded before the upgrade, and the migrations added no row to it."""
    from alembic import command
    from sqlalchemy.orm import sessionmaker

    from radiolens.serve.store.db import alembic_config, head_revision

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    url = f"sqlite:///{state / 'radiolens.db'}"
    engine = make_engine(url)
    cfg = alembic_config(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(text("INSERT INTO api_keys (key_id, key_hash, role, label, created_at) VALUES "
                          "('0011223344556677', :h, 'clinician', '', :t)"), {"h": "ab" * 32, "t": audit.utcnow()})
        conn.execute(text("INSERT INTO audit_head (id, seq, row_hash) VALUES (1, 0, :g)"), {"g": audit.GENESIS})
    result = {"status": "ok", "model": {"backend": "torch"}, "heatmap_url": None, "monitoring": {},
              "probabilities": [{"name": "pneumonia", "probability": 0.83, "threshold": 0.5, "positive": True}],
              "decision": {"label": "pneumonia"}, "review": {"flag": False, "reason": "", "spread": 0.01}}
    pid = "cd" * 16
    with audit.writer(sessionmaker(bind=engine)) as s:
        # plain SQL: the ORM describes today's columns, which a 0001 database does not have yet
        s.execute(text("INSERT INTO predictions (id, created_at, user_id, model_sha256, input_sha256, study_ref, "
                       "result_json, has_heatmap) VALUES (:id, :t, 1, :m, :i, 's', :r, 0)"),
                  {"id": pid, "t": audit.utcnow(), "m": "m" * 64, "i": "i" * 64, "r": audit.canonical_json(result)})
        audit.append(s, audit.AuditEvent("prediction", 1, "clinician", pid, "m" * 64, "i" * 64, "s",
                                         audit.served_fields(result), 12.5))
        audit.append(s, audit.AuditEvent("read", 1, "clinician", pid, "", "", "s", {"resource": "prediction"}, 0))
    # the head as that version recorded it (read directly: `audit verify` reads today's schema, so a database
    # this old is verified after `db upgrade`, which is what this test does)
    with engine.connect() as conn:
        seq, head_hash = conn.execute(text("SELECT seq, row_hash FROM audit_head")).one()
        assert conn.execute(text("SELECT COUNT(*) FROM audit_log")).scalar_one() == 2 == seq
    engine.dispose()
    recorded = f"{seq}:{head_hash}"

    up = _cli("db", "upgrade", "--state-dir", str(state))
    assert up.exit_code == 0 and f"revision {head_revision()}" in up.output
    verified = _cli("audit", "verify", "--expect-head", recorded, "--state-dir", str(state))
    assert verified.exit_code == 0, verified.output
    assert _cli("audit", "head", "--state-dir", str(state)).stdout.strip() == recorded
