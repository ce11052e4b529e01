"""The de-identification secret is checked against the database at every start: registered (audited) on the
first, refused when it differs, replaced (audited) only when asked to, and safe when several processes start
at once. Fingerprints only: the secret itself never reaches the database, the audit log, logs or messages."""

from __future__ import annotations

import json
import logging
import multiprocessing
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from tests.serve.conftest import SECRET
from typer.testing import CliRunner

from radiolens.cli import app as cli_app
from radiolens.errors import ConfigError
from radiolens.serve.config import DEID_SECRET_ENV, DEID_SECRET_FILE_ENV, SETTINGS_ENV, secret_fingerprint
from radiolens.serve.runtime import service as service_mod
from radiolens.serve.runtime.service import DEID_REGISTERED, DEID_ROTATED, Service, check_deid_secret
from radiolens.serve.store import audit
from radiolens.serve.store.db import make_engine, session_factory, upgrade
from radiolens.serve.store.tables import Base, ServiceState

OTHER = "a-different-deid-secret-4417-planted"
FP, FP_OTHER = secret_fingerprint(SECRET), secret_fingerprint(OTHER)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'radiolens.db'}"
    return request.getfixturevalue("pg_url")


def _events(engine) -> list[tuple[str, int, str, dict]]:
    return [(r["event"], r["user_id"], r["role"], r["outputs"]) for r in audit.rows_between(engine)]


def _everything_stored(engine) -> str:
    """Every row of every table, as text (what an attacker reading the database would see)."""
    with Session(engine) as s:
        return "\n".join(repr(tuple(row)) for table in Base.metadata.sorted_tables
                         for row in s.execute(select(table)).all())


def _sqlite_bytes(url: str) -> bytes:
    db = Path(url.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))  # the DB, its -wal and -shm


def _assert_no_secret(*texts: str | bytes) -> None:
    for secret in (SECRET, OTHER):
        for t in texts:
            assert (secret.encode() if isinstance(t, bytes) else secret) not in t


def _stored(engine) -> str | None:
    with Session(engine) as s:
        row = s.get(ServiceState, service_mod.DEID_FINGERPRINT_KEY)
        return None if row is None else row.value


def test_service_start_registers_refuses_and_rotates(settings_factory, db_url, caplog):
    caplog.set_level(logging.DEBUG)

    def start(secret: str, **kw) -> Service:
        svc = Service(settings_factory(db_url=db_url, deid_secret=secret, mc_dropout_passes=0, **kw))
        svc.close()
        return svc

    svc = start(SECRET)  # first start: fingerprint stored and audited
    engine = make_engine(db_url)
    try:
        assert _stored(engine) == FP
        assert _events(engine) == [(DEID_REGISTERED, 0, "system", {"fingerprint": FP, "earlier_predictions": 0})]
        start(SECRET)  # same secret: nothing new
        assert len(_events(engine)) == 1

        with pytest.raises(ConfigError) as refused:
            start(OTHER)
        msg = str(refused.value)
        assert "\n" not in msg and f"fingerprint {FP_OTHER}" in msg and f"fingerprint {FP}" in msg
        assert "study refs and remapped UIDs" in msg and "--accept-new-deid-secret" in msg
        assert "restore the previous secret" in msg
        assert _stored(engine) == FP and len(_events(engine)) == 1  # a refused start changes nothing

        start(OTHER, accept_new_deid_secret=True)  # rotation on purpose: audited with both fingerprints
        assert _stored(engine) == FP_OTHER
        assert _events(engine)[1] == (DEID_ROTATED, 0, "system", {"old_fingerprint": FP, "new_fingerprint": FP_OTHER})
        start(OTHER)  # the new secret is now the database's
        start(OTHER, accept_new_deid_secret=True)  # accepting what is already stored: no second rotation
        with pytest.raises(ConfigError, match=f"fingerprint {FP}\\).*fingerprint {FP_OTHER}\\)"):
            start(SECRET)  # and the old one is refused
        assert [e[0] for e in _events(engine)] == [DEID_REGISTERED, DEID_ROTATED]
        report = audit.verify(engine)
        assert report.ok and report.rows == 2, report.problems
        stored = _everything_stored(engine)
        assert FP in stored and FP_OTHER in stored
        _assert_no_secret(stored, msg, *(r.getMessage() for r in caplog.records))
        if db_url.startswith("sqlite"):
            _assert_no_secret(_sqlite_bytes(db_url))
        assert any(FP in r.getMessage() for r in caplog.records)  # the logs name the fingerprint, not the secret
        assert svc.ingestor.secret_fingerprint == FP
    finally:
        engine.dispose()


def test_serve_cli_checks_the_secret_before_uvicorn(tmp_path, bundle_path, monkeypatch):
    """`radiolens serve` up to the uvicorn call: refusal is one line and exit 2; acceptance is audited as the CLI
    and never handed on to the worker processes."""
    import os

    import uvicorn

    workers_got: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: workers_got.append(json.loads(os.environ[SETTINGS_ENV])))
    monkeypatch.delenv(DEID_SECRET_FILE_ENV, raising=False)
    monkeypatch.setenv(SETTINGS_ENV, "")  # restored afterwards (the command sets it for the workers)
    state = tmp_path / "state"
    runner = CliRunner()

    def serve(secret: str, *extra: str):
        monkeypatch.setenv(DEID_SECRET_ENV, secret)
        return runner.invoke(cli_app, ["serve", "--model", str(bundle_path), "--state-dir", str(state), *extra])

    outputs = []
    for secret, extra, code, outcome in [
            (SECRET, (), 0, "registered"), (SECRET, (), 0, "unchanged"), (OTHER, (), 2, None),
            (OTHER, ("--accept-new-deid-secret",), 0, "rotated"), (OTHER, (), 0, "unchanged"), (SECRET, (), 2, None)]:
        r = serve(secret, *extra)
        outputs.append(r.output)
        assert r.exit_code == code, r.output
        assert "Traceback" not in r.output
        if outcome:
            fp = secret_fingerprint(secret)
            assert f"de-identification secret fingerprint {fp} ({outcome} for this database" in r.stderr
        else:
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: the de-identification secret")
            assert FP in lines[0] and FP_OTHER in lines[0] and "--accept-new-deid-secret" in lines[0]
    assert len(workers_got) == 4 and not any(w["accept_new_deid_secret"] for w in workers_got)
    _assert_no_secret(*outputs, *(json.dumps(w) for w in workers_got))

    r = runner.invoke(cli_app, ["audit", "verify", "--state-dir", str(state)])
    assert r.exit_code == 0 and "audit chain OK: 2 rows" in r.output
    rows = [json.loads(x) for x in runner.invoke(cli_app, ["audit", "export", "--state-dir", str(state)]).stdout
            .splitlines()]
    assert [(x["event"], x["user_id"], x["role"], x["outputs"]) for x in rows] == [
        (DEID_REGISTERED, audit.CLI_USER_ID, audit.CLI_ROLE, {"fingerprint": FP, "earlier_predictions": 0}),
        (DEID_ROTATED, audit.CLI_USER_ID, audit.CLI_ROLE, {"old_fingerprint": FP, "new_fingerprint": FP_OTHER})]
    _assert_no_secret(_sqlite_bytes(f"sqlite:///{state / 'radiolens.db'}"))


# ---------------------------------------------------------------------- several processes starting at once
def _start_in_child(url: str, secret: str, barrier, results) -> None:
    engine = make_engine(url)
    try:
        barrier.wait(30)
        try:
            results.put((secret, check_deid_secret(session_factory(engine), secret_fingerprint(secret))))
        except ConfigError as exc:
            results.put((secret, "refused" if FP in str(exc) and FP_OTHER in str(exc) else str(exc)))
        except Exception as exc:  # reported, not lost: the parent would otherwise wait for a result in vain
            results.put((secret, f"crashed: {type(exc).__name__}"))
    finally:
        engine.dispose()


def _race(url: str, secrets: list[str]) -> list[tuple[str, str]]:
    """Real processes (as uvicorn workers are), released together by a barrier, each running the start-up check."""
    ctx = multiprocessing.get_context("fork")  # the children need only SQLAlchemy: no re-import of torch
    barrier, results = ctx.Barrier(len(secrets)), ctx.Queue()
    procs = [ctx.Process(target=_start_in_child, args=(url, s, barrier, results)) for s in secrets]
    for p in procs:
        p.start()
    out = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    return out


def test_concurrent_first_starts_register_once(db_url):
    upgrade(db_url)
    out = _race(db_url, [SECRET] * 4)
    assert sorted(r for _, r in out) == ["registered"] + ["unchanged"] * 3
    engine = make_engine(db_url)
    try:
        assert [e[0] for e in _events(engine)] == [DEID_REGISTERED] and _stored(engine) == FP
        assert audit.verify(engine).ok
    finally:
        engine.dispose()


def test_concurrent_starts_with_different_secrets(db_url):
    upgrade(db_url)
    out = _race(db_url, [SECRET, OTHER, SECRET, OTHER])
    winners = [s for s, r in out if r == "registered"]
    assert len(winners) == 1, out
    for secret, result in out:  # the winner's secret starts, the other one is refused, whichever came second
        assert result in (("registered", "unchanged") if secret == winners[0] else ("refused",)), out
    engine = make_engine(db_url)
    try:
        assert _stored(engine) == secret_fingerprint(winners[0]) and len(_events(engine)) == 1
    finally:
        engine.dispose()


def test_losing_a_race_rereads_and_compares(db_url, monkeypatch):
    """Deterministically, the two races: another process inserted (or rotated) between our read and our write."""
    upgrade(db_url)
    engine = make_engine(db_url)
    sessions = session_factory(engine)
    real = service_mod._stored_fingerprint

    def stale_once(value):
        calls = []

        def fake(s):
            calls.append(1)
            return value if len(calls) == 1 else real(s)

        return fake

    try:
        assert check_deid_secret(sessions, FP) == "registered"
        # We read "nothing stored", but someone registered meanwhile: the INSERT fails, we re-read and compare.
        monkeypatch.setattr(service_mod, "_stored_fingerprint", stale_once(None))
        assert check_deid_secret(sessions, FP) == "unchanged"
        monkeypatch.setattr(service_mod, "_stored_fingerprint", stale_once(None))
        with pytest.raises(ConfigError, match="differs from the one this database was used with"):
            check_deid_secret(sessions, FP_OTHER)
        # Two processes rotating to the same new secret: the second one's compare-and-set matches nothing.
        assert check_deid_secret(sessions, FP_OTHER, accept_new=True) == "rotated"
        monkeypatch.setattr(service_mod, "_stored_fingerprint", stale_once(FP))
        assert check_deid_secret(sessions, FP_OTHER, accept_new=True) == "unchanged"
        monkeypatch.undo()
        assert [e[0] for e in _events(engine)] == [DEID_REGISTERED, DEID_ROTATED] and _stored(engine) == FP_OTHER
        assert audit.verify(engine).ok
    finally:
        engine.dispose()


def test_unmigrated_database_is_a_config_error(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        with pytest.raises(ConfigError, match="radiolens db upgrade"):
            check_deid_secret(session_factory(engine), FP)
    finally:
        engine.dispose()


def test_database_error_while_recording_is_a_typed_one_line_error(tmp_path, monkeypatch):
    """A lock timeout (or any driver error) while writing the fingerprint: ConfigError naming the error type,
    nothing half-written, and the next start registers normally."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    url = f"sqlite:///{tmp_path / 'locked.db'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)

    def locked(*_args, **_kwargs):
        raise OperationalError("INSERT INTO audit_log ...", {}, sqlite3.OperationalError("database is locked"))

    try:
        monkeypatch.setattr(audit, "append", locked)
        with pytest.raises(ConfigError, match=r"cannot record .* \(OperationalError\); start again") as err:
            check_deid_secret(sessions, FP)
        assert "\n" not in str(err.value) and "INSERT" not in str(err.value)
        assert _stored(engine) is None and _events(engine) == []  # rolled back together
        monkeypatch.undo()
        assert check_deid_secret(sessions, FP) == "registered" and audit.verify(engine).ok
    finally:
        engine.dispose()
