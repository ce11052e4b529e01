"""``radiolens users create|list|revoke`` and ``db upgrade``: keys shown once, stored hashed."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from radiolens.cli import app as cli_app
from radiolens.serve.store.db import head_revision


def test_users_lifecycle(tmp_path):
    state = str(tmp_path / "state")
    runner = CliRunner()
    assert f"revision {head_revision()}" in runner.invoke(cli_app, ["db", "upgrade", "--state-dir", state]).output
    r = runner.invoke(cli_app, ["users", "create", "--role", "clinician", "--label", "ward 3", "--state-dir", state])
    assert r.exit_code == 0, r.output
    key = r.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"rlk_[0-9a-f]{16}_[A-Za-z0-9_-]{40,}", key)
    key_id = key.split("_")[1]

    db_bytes = (tmp_path / "state" / "radiolens.db").read_bytes()
    wal = tmp_path / "state" / "radiolens.db-wal"
    db_bytes += wal.read_bytes() if wal.exists() else b""
    secret = key.split("_", 2)[2]
    assert secret.encode() not in db_bytes  # only its hash is stored

    listed = runner.invoke(cli_app, ["users", "list", "--state-dir", state]).output
    assert key_id in listed and "active" in listed and secret not in listed

    from sqlalchemy.orm import Session

    from radiolens.serve.store.auth import authenticate
    from radiolens.serve.store.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'state' / 'radiolens.db'}")
    with Session(engine) as s:
        assert authenticate(s, key).role.value == "clinician"
    assert runner.invoke(cli_app, ["users", "revoke", key_id, "--state-dir", state]).exit_code == 0
    with Session(engine) as s:
        assert authenticate(s, key) is None
    engine.dispose()
    assert "revoked" in runner.invoke(cli_app, ["users", "list", "--state-dir", state]).output

    bad = runner.invoke(cli_app, ["users", "create", "--role", "superuser", "--state-dir", state],
                        env={"COLUMNS": "200"})
    assert bad.exit_code == 2 and "Invalid value for '--role'" in bad.output and "superuser" in bad.output
    missing = runner.invoke(cli_app, ["users", "revoke", "nosuchkey", "--state-dir", state])
    assert missing.exit_code == 2 and "no such key" in missing.output
    again = runner.invoke(cli_app, ["users", "revoke", key_id, "--state-dir", state])  # already revoked: no event
    assert again.exit_code == 0

    # Key management is audited (as user 0, role "cli"), without the key, its hash or its label.
    import json

    exported = runner.invoke(cli_app, ["audit", "export", "--state-dir", state]).stdout
    rows = [json.loads(x) for x in exported.splitlines()]
    user_id = int(r.stderr.split("user_id=")[1].split()[0])
    assert [(x["event"], x["user_id"], x["role"], x["outputs"]) for x in rows] == [
        ("key_created", 0, "cli", {"key_user_id": user_id, "key_role": "clinician"}),
        ("key_revoked", 0, "cli", {"key_user_id": user_id, "key_role": "clinician"})]
    assert secret not in exported and "ward 3" not in exported and key_id not in exported
    assert runner.invoke(cli_app, ["audit", "verify", "--state-dir", state]).exit_code == 0


def test_serve_refuses_bad_setup_with_one_line(tmp_path, monkeypatch, bundle_path):
    runner = CliRunner()
    monkeypatch.delenv("RADIOLENS_DEID_SECRET", raising=False)
    r = runner.invoke(cli_app, ["serve", "--model", str(bundle_path), "--state-dir", str(tmp_path)])
    assert r.exit_code == 2 and "RADIOLENS_DEID_SECRET" in r.output and "Traceback" not in r.output
    monkeypatch.setenv("RADIOLENS_DEID_SECRET", "s" * 15)
    r = runner.invoke(cli_app, ["serve", "--model", str(bundle_path), "--state-dir", str(tmp_path)])
    assert r.exit_code == 2 and "shorter than 16 bytes" in r.output and "Traceback" not in r.output
    assert "s" * 15 not in r.output
    monkeypatch.setenv("RADIOLENS_DEID_SECRET", "s" * 16)
    r = runner.invoke(cli_app, ["serve", "--model", str(tmp_path / "missing.pt"), "--state-dir", str(tmp_path),
                                "--db-url", "mysql://nope"])
    assert r.exit_code == 2 and "unsupported database backend" in r.output


READ_ONLY = [["audit", "verify"], ["audit", "head"], ["audit", "export"], ["users", "list"],
             ["users", "revoke", "0123456789abcdef"]]  # revoke changes only what exists: nothing to revoke


def _one_line_error(r, needle: str) -> None:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and (r.exception is None or isinstance(r.exception, SystemExit))
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.output


def test_read_only_commands_never_create_a_store(tmp_path):
    runner = CliRunner()
    state = tmp_path / "state"
    for cmd in READ_ONLY:  # a folder (and database) that does not exist
        _one_line_error(runner.invoke(cli_app, [*cmd, "--state-dir", str(state)]), "no radiolens database")
        assert not state.exists()  # nothing was created, not even the folder
    state.mkdir()
    (state / "radiolens.db").touch()  # an empty file, as an earlier version's read-only commands left behind
    for cmd in READ_ONLY:
        _one_line_error(runner.invoke(cli_app, [*cmd, "--state-dir", str(state)]), "no radiolens database")
        assert (state / "radiolens.db").stat().st_size == 0
    import sqlite3

    (state / "radiolens.db").unlink()
    with sqlite3.connect(state / "radiolens.db") as conn:  # some other SQLite database
        conn.execute("CREATE TABLE t (x)")
    for cmd in READ_ONLY:
        _one_line_error(runner.invoke(cli_app, [*cmd, "--state-dir", str(state)]), "no radiolens schema")
    # once initialised, the same commands work (an empty chain is a fresh install)
    assert runner.invoke(cli_app, ["db", "upgrade", "--state-dir", str(tmp_path / "ok")]).exit_code == 0
    r = runner.invoke(cli_app, ["audit", "verify", "--state-dir", str(tmp_path / "ok")])
    assert r.exit_code == 0 and "audit chain OK: 0 rows" in r.output


@pytest.mark.postgres
def test_read_only_commands_refuse_a_missing_or_empty_postgres_store(pg_url):
    runner = CliRunner()
    for cmd in READ_ONLY:  # the database exists but was never initialised
        _one_line_error(runner.invoke(cli_app, [*cmd, "--db-url", pg_url]), "no radiolens schema")
    missing = pg_url.rsplit("/", 1)[0] + "/no_such_database"
    for cmd in READ_ONLY:
        r = runner.invoke(cli_app, [*cmd, "--db-url", missing])
        _one_line_error(r, "cannot open the database")
        assert "no_such_database" not in r.output and "127.0.0.1" not in r.output  # never the URL
    from radiolens.serve.store.db import make_engine

    engine = make_engine(pg_url)
    with engine.connect() as conn:
        tables = conn.exec_driver_sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").scalar()
    engine.dispose()
    assert tables == 0  # nothing was created
