"""API keys: never in a log line (real `radiolens serve` output over a socket), optional expiry (401, audited),
and the last active admin key can never be revoked (API 409, CLI error), also by two revocations at once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session
from tests.serve.conftest import SECRET, free_port, wait_until_ready
from typer.testing import CliRunner

from radiolens.cli import app as cli_app
from radiolens.serve.store import audit
from radiolens.serve.store import auth as auth_mod
from radiolens.serve.store.auth import LastAdminError, create_key, revoke_key_audited
from radiolens.serve.store.db import WRITE_LOCK, make_engine, session_factory, upgrade


def _cli_key(state, role: str, *extra: str) -> str:
    r = CliRunner().invoke(cli_app, ["users", "create", "--role", role, "--state-dir", str(state), *extra])
    assert r.exit_code == 0, r.output
    return r.stdout.strip().splitlines()[-1]


def test_keys_in_urls_and_headers_never_reach_the_log(bundle_path, tmp_path):
    state = tmp_path / "state"
    key, other = _cli_key(state, "clinician"), _cli_key(state, "auditor")
    port = free_port()
    log_path = tmp_path / "server.log"
    env = dict(os.environ, RADIOLENS_DEID_SECRET=SECRET)
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "radiolens.cli", "serve", "--model", str(bundle_path),
                                 "--state-dir", str(state), "--port", str(port), "--log-level", "debug"],
                                env=env, stdout=log_file, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(url, proc, 120, why=log_path.read_text)
            bearer = {"Authorization": f"Bearer {key}"}
            statuses = [
                httpx.get(f"{url}/v1/me?api_key={key}").status_code,  # a key in the query: not accepted
                httpx.get(f"{url}/v1/models?x=1&token={other}&access_token={other}", headers=bearer).status_code,
                httpx.get(f"{url}/v1/predictions/{other}", headers=bearer).status_code,  # a key pasted in a path
                httpx.get(f"{url}/v1/me?key={key}&Authorization=Bearer%20{other}").status_code,
                httpx.get(f"{url}/v1/me", headers={"Authorization": f"Bearer {key}x"}).status_code,  # wrong key
                httpx.get(f"{url}/v1/me", headers={"X-API-Key": other}).status_code,
            ]
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    assert statuses == [401, 200, 422, 401, 401, 200]  # a key pasted as a prediction id is not one (422)
    log = log_path.read_text(errors="replace")
    assert '"GET /v1/me?api_key=[REDACTED] HTTP/1.1" 401' in log, log  # the access log is on, and redacted
    assert "GET /v1/models?x=1&token=[REDACTED]&access_token=[REDACTED]" in log
    assert "GET /v1/predictions/rlk_[REDACTED]" in log
    for k in (key, other):
        key_id, secret = k.split("_", 2)[1:]
        assert secret not in log and secret[:12] not in log, "a key secret reached the log"
        assert key_id not in log
    assert "Traceback" not in log


def test_redaction_filter_keeps_uvicorn_access_format():
    import logging

    from uvicorn.logging import AccessFormatter

    from radiolens.serve.http.middleware import RedactingFilter

    rec = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                            ("127.0.0.1:5", "GET", "/v1/me?api_key=rlk_0a1b2c3d4e5f6a7b_S3cr3t-value_x", "1.1", 401),
                            None)
    assert RedactingFilter().filter(rec)
    line = AccessFormatter('%(client_addr)s "%(request_line)s" %(status_code)s', use_colors=False).format(rec)
    assert line == '127.0.0.1:5 "GET /v1/me?api_key=[REDACTED] HTTP/1.1" 401 Unauthorized' and "S3cr3t" not in line


def test_key_expiry_api_and_cli(client, tmp_path):
    c, keys = client, client.keys
    engine = c.app_.state.service.engine
    r = c.post("/v1/keys", headers=keys.h("admin"), json={"role": "clinician", "expires_in": "30d"})
    assert r.status_code == 201, r.text
    new = r.json()
    expires = datetime.fromisoformat(new["expires_at"]).replace(tzinfo=UTC)
    assert abs(expires - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=1)
    assert new["status"] == "active"
    assert c.get("/v1/me", headers={"Authorization": f"Bearer {new['api_key']}"}).status_code == 200
    created = [x for x in audit.rows_between(engine) if x["event"] == "key_created"][-1]
    assert created["outputs"]["expires_at"].startswith(expires.strftime("%Y-%m-%dT%H:%M"))
    for bad in ("30x", "0d", "-1d", "99999w"):
        r = c.post("/v1/keys", headers=keys.h("admin"), json={"role": "clinician", "expires_in": bad})
        assert r.status_code == 422 and "expires_in" in r.json()["error"]["message"], bad  # refused by the schema

    # time passes: the key is refused from its expiry on, and the refusal is audited with its user id
    with engine.begin() as conn:
        conn.execute(text("UPDATE api_keys SET expires_at = :t WHERE key_id = :k"),
                     {"t": datetime.now(UTC) - timedelta(seconds=1), "k": new["key_id"]})
    r = c.get("/v1/me", headers={"Authorization": f"Bearer {new['api_key']}"})
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
    last = list(audit.rows_between(engine))[-1]
    assert (last["event"], last["user_id"], last["outputs"]["reason"]) == (audit.AUTH_FAILED, new["id"], "expired")
    listed = {k["key_id"]: k for k in c.get("/v1/keys", headers=keys.h("admin")).json()}
    assert listed[new["key_id"]]["status"] == "expired" and listed[new["key_id"]]["expires_at"]

    state = tmp_path / "cli-state"
    runner = CliRunner()
    r = runner.invoke(cli_app, ["users", "create", "--role", "auditor", "--expires-in", "2w", "--state-dir",
                                str(state)])
    assert r.exit_code == 0 and " expires=" in r.stderr
    key_id = r.stdout.strip().splitlines()[-1].split("_")[1]
    row = next(x for x in runner.invoke(cli_app, ["users", "list", "--state-dir", str(state)]).output.splitlines()
               if key_id in x)
    assert "active" in row and (datetime.now(UTC) + timedelta(weeks=2)).strftime("%Y-%m-%d") in row
    bad = runner.invoke(cli_app, ["users", "create", "--role", "auditor", "--expires-in", "soon", "--state-dir",
                                  str(state)])
    assert bad.exit_code == 2 and "expiry must be" in bad.output and "Traceback" not in bad.output


def test_last_admin_key_is_never_revoked(client, tmp_path):
    c, keys = client, client.keys
    engine = c.app_.state.service.engine
    me = c.get("/v1/keys", headers=keys.h("admin")).json()
    own = next(k for k in me if k["role"] == "admin")
    r = c.delete(f"/v1/keys/{own['key_id']}", headers=keys.h("admin"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "last_admin"
    assert c.get("/v1/me", headers=keys.h("admin")).status_code == 200  # still works
    # an admin key that has expired does not count as a second admin
    second = c.post("/v1/keys", headers=keys.h("admin"), json={"role": "admin", "expires_in": "1d"}).json()
    with engine.begin() as conn:
        conn.execute(text("UPDATE api_keys SET expires_at = :t WHERE key_id = :k"),
                     {"t": datetime.now(UTC) - timedelta(seconds=1), "k": second["key_id"]})
    assert c.delete(f"/v1/keys/{own['key_id']}", headers=keys.h("admin")).status_code == 409
    # with another active admin, revoking one is fine; the other is then the last
    third = c.post("/v1/keys", headers=keys.h("admin"), json={"role": "admin"}).json()
    assert c.delete(f"/v1/keys/{own['key_id']}", headers=keys.h("admin")).status_code == 200
    h3 = {"Authorization": f"Bearer {third['api_key']}"}
    assert c.delete(f"/v1/keys/{third['key_id']}", headers=h3).status_code == 409
    assert [x["event"] for x in audit.rows_between(engine)].count("key_revoked") == 1

    state = tmp_path / "cli-state"
    runner = CliRunner()
    only = _cli_key(state, "admin").split("_")[1]
    r = runner.invoke(cli_app, ["users", "revoke", only, "--state-dir", str(state)])
    assert r.exit_code == 2 and "last active admin key" in r.output and "Traceback" not in r.output
    _cli_key(state, "admin")
    assert runner.invoke(cli_app, ["users", "revoke", only, "--state-dir", str(state)]).exit_code == 0


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'radiolens.db'}"
    return request.getfixturevalue("pg_url")


def test_two_concurrent_revocations_leave_one_admin(db_url, monkeypatch):
    """Two processes (two engines, no shared in-process lock) each revoke the other's admin key at once; the
    count of active admins is made slow so both would count 2 without the database lock. One must be refused."""
    upgrade(db_url)
    engines = [make_engine(db_url), make_engine(db_url)]
    with Session(engines[0]) as s, s.begin():
        key_ids = [create_key(s, "admin")[0].key_id for _ in range(2)]
    real = auth_mod.active_admins

    def slow(session, now=None):
        rows = real(session, now)
        time.sleep(0.5)
        return rows

    monkeypatch.setattr(auth_mod, "active_admins", slow)
    barrier, results = threading.Barrier(2), [None, None]

    def revoke(i: int) -> None:
        s = session_factory(engines[i])()
        try:
            barrier.wait()
            s.connection(execution_options={WRITE_LOCK: True})  # what audit.writer does, minus its process lock
            revoke_key_audited(s, key_ids[1 - i], 1, "admin")
            s.commit()
            results[i] = "revoked"
        except LastAdminError:
            s.rollback()
            results[i] = "refused"
        finally:
            s.close()

    threads = [threading.Thread(target=revoke, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    with Session(engines[0]) as s:
        active = real(s)
    for e in engines:
        e.dispose()
    assert sorted(results) == ["refused", "revoked"] and len(active) == 1
