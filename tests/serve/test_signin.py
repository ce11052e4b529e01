"""Password sign-in: argon2 accounts (``radiolens users add``), the session cookie and its CSRF token, sign out,
expiry, rate limits per username and per client address, and what the audit log keeps of it all."""

from __future__ import annotations

from datetime import timedelta

import pytest
from argon2 import PasswordHasher
from sqlalchemy import text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from radiolens.cli import app as cli_app
from radiolens.serve.store import audit
from radiolens.serve.store.accounts import create_account, hasher, verify_password
from radiolens.serve.store.tables import ApiKey

PASSWORD = "correct horse battery staple"


def _account(app, name="reader.one", role="clinician", password=PASSWORD) -> int:
    with Session(app.state.service.engine) as s, s.begin():
        return create_account(s, name, password, role).id


def _rows(app) -> list[dict]:
    return list(audit.rows_between(app.state.service.engine))


@pytest.fixture
def signin_client(app_factory):
    from fastapi.testclient import TestClient

    app, keys = app_factory(mc_dropout_passes=0, signin_max_failures_user=3, signin_max_failures_address=6)
    with TestClient(app) as c:
        yield c, keys, app


def test_signin_session_csrf_and_signout(signin_client, kermany_samples):
    c, keys, app = signin_client
    uid = _account(app)
    pid = c.post("/v1/predictions", headers=keys.h("clinician"), params={"heatmap": "false"},
                 files={"file": ("u", kermany_samples[0][0].read_bytes(), "image/jpeg")}).json()["id"]

    n = len(_rows(app))
    r = c.post("/v1/session", json={"username": "Reader.One", "password": PASSWORD})  # usernames ignore case
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_id"] == uid and body["role"] == "clinician" and body["csrf_token"]
    cookies = r.headers.get_list("set-cookie")
    session_cookie = next(x for x in cookies if x.startswith("radiolens_session="))
    csrf_cookie = next(x for x in cookies if x.startswith("radiolens_csrf="))
    assert "HttpOnly" in session_cookie and "SameSite=strict" in session_cookie and "Path=/" in session_cookie
    assert "Secure" not in session_cookie  # plain HTTP here; over TLS see below
    assert "HttpOnly" not in csrf_cookie and body["csrf_token"] in csrf_cookie
    new = _rows(app)[n:]
    assert [(x["event"], x["user_id"], x["role"]) for x in new] == [(audit.SIGNIN, uid, "clinician")]

    # the cookie authenticates reads; the reader's own identity is used
    assert c.get("/v1/me").json() == {"user_id": uid, "role": "clinician"}
    assert c.get("/v1/predictions").status_code == 200
    # a state-changing request needs the CSRF token as well as the cookie (a cross-site form has only the cookie)
    url = f"/v1/predictions/{pid}/feedback"
    for headers in ({}, {"X-CSRF-Token": "x" * 43}):
        n = len(_rows(app))
        r = c.post(url, json={"agree": True}, headers=headers)
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed", r.text
        denied = _rows(app)[n:]
        assert [(x["event"], x["user_id"], x["outputs"]["reason"]) for x in denied] == [
            (audit.ACCESS_DENIED, uid, "csrf")]
    ok = c.post(url, json={"agree": True}, headers={"X-CSRF-Token": body["csrf_token"]})
    assert ok.status_code == 201 and ok.json()["user_id"] == uid
    # an API key needs no CSRF token, with or without a cookie alongside
    assert c.put(url, json={"agree": False}, headers=keys.h("clinician")).status_code == 201

    assert c.delete("/v1/session").status_code == 403  # signing out is state-changing too
    n = len(_rows(app))
    out = c.delete("/v1/session", headers={"X-CSRF-Token": body["csrf_token"]})
    assert out.status_code == 204
    assert [(x["event"], x["user_id"], x["outputs"]["ended"]) for x in _rows(app)[n:]] == [(audit.SIGNOUT, uid, True)]
    assert not c.cookies.get("radiolens_session")  # the cookie is cleared ...
    c.cookies.set("radiolens_session", session_cookie.split(";")[0].split("=", 1)[1])
    r = c.get("/v1/predictions")  # ... and the session is over even if a copy of it is replayed
    assert r.status_code == 401 and "sign in again" in r.json()["error"]["message"]
    assert _rows(app)[-1]["outputs"]["reason"] == "session_ended"

    dumped = "".join(audit.export(app.state.service.engine, "jsonl"))
    assert PASSWORD not in dumped and "reader.one" not in dumped.lower()
    assert body["csrf_token"] not in dumped


def test_session_cookie_is_secure_over_tls_and_expires(app_factory):
    from fastapi.testclient import TestClient

    app, _ = app_factory(mc_dropout_passes=0, session_idle_s=60, session_ttl_s=3600)
    uid = _account(app)
    with TestClient(app, base_url="https://testserver") as c:
        r = c.post("/v1/session", json={"username": "reader.one", "password": PASSWORD})
        assert r.status_code == 200
        assert all("Secure" in x for x in r.headers.get_list("set-cookie"))
        assert c.get("/v1/me").json()["user_id"] == uid
        engine = app.state.service.engine
        with engine.begin() as conn:  # idle for longer than session_idle_s
            conn.execute(text("UPDATE web_sessions SET last_seen_at = :t"),
                         {"t": audit.utcnow() - timedelta(seconds=120)})
        assert c.get("/v1/me").status_code == 401
        assert _rows(app)[-1]["outputs"]["reason"] == "session_idle"
        c.post("/v1/session", json={"username": "reader.one", "password": PASSWORD})
        with engine.begin() as conn:  # past its absolute expiry
            conn.execute(text("UPDATE web_sessions SET expires_at = :t"), {"t": audit.utcnow() - timedelta(seconds=1)})
        assert c.get("/v1/me").status_code == 401
        assert _rows(app)[-1]["outputs"]["reason"] == "session_expired"
        c.post("/v1/session", json={"username": "reader.one", "password": PASSWORD})
        assert c.get("/v1/me").status_code == 200
        with engine.begin() as conn:  # the account revoked: its open sessions end with it
            conn.execute(text("UPDATE api_keys SET revoked_at = :t WHERE id = :i"), {"t": audit.utcnow(), "i": uid})
        assert c.get("/v1/me").status_code == 401
        r = c.post("/v1/session", json={"username": "reader.one", "password": PASSWORD})
        assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]


def test_failed_signins_are_audited_without_names_and_rate_limited(signin_client):
    c, keys, app = signin_client
    uid = _account(app)
    n = len(_rows(app))
    wrong = c.post("/v1/session", json={"username": "reader.one", "password": "not the password"})
    unknown = c.post("/v1/session", json={"username": "zebulon.quixotic", "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()  # the answer does not tell which usernames exist
    failed = _rows(app)[n:]
    assert [(x["event"], x["user_id"], x["outputs"]["reason"]) for x in failed] == [
        (audit.SIGNIN_FAILED, uid, "wrong_password"), (audit.SIGNIN_FAILED, 0, "unknown_user")]
    tags = [x["outputs"]["username_tag"] for x in failed]
    assert tags[0] != tags[1] and failed[0]["outputs"]["address_tag"] == failed[1]["outputs"]["address_tag"]
    dumped = "".join(audit.export(app.state.service.engine, "jsonl"))
    assert "zebulon" not in dumped and "not the password" not in dumped and "testclient" not in dumped

    # per username: 3 failures within the window, then 429 even for the right password
    c.post("/v1/session", json={"username": "reader.one", "password": "still not it"})
    c.post("/v1/session", json={"username": "READER.ONE", "password": "nor this"})
    limited = c.post("/v1/session", json={"username": "reader.one", "password": PASSWORD})
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "too_many_signins"
    assert 0 < int(limited.headers["Retry-After"]) <= 15 * 60
    row = _rows(app)[-1]
    assert row["event"] == audit.SIGNIN_LIMITED and row["user_id"] == uid and row["outputs"]["limit"] == "user"
    # per client address: 6 failures in all (4 so far, whatever the usernames), then every username is refused
    c.post("/v1/session", json={"username": "someone.else", "password": "guess one"})
    c.post("/v1/session", json={"username": "another.one", "password": "guess two"})
    r = c.post("/v1/session", json={"username": "third.name", "password": "guess three"})
    assert r.status_code == 429 and _rows(app)[-1]["outputs"]["limit"] == "addr"
    # API keys are not affected by the sign-in limits
    assert c.get("/v1/me", headers=keys.h("clinician")).status_code == 200

    with app.state.service.engine.begin() as conn:  # the window passes
        conn.execute(text("UPDATE signin_failures SET created_at = :t"), {"t": audit.utcnow() - timedelta(hours=1)})
    assert c.post("/v1/session", json={"username": "reader.one", "password": PASSWORD}).status_code == 200


def test_password_hash_is_argon2_and_upgraded_when_parameters_change(app_factory):
    app, _ = app_factory(mc_dropout_passes=0)
    engine = app.state.service.engine
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
    with Session(engine) as s, s.begin():
        uid = _account(app)
        row = s.get(ApiKey, uid)
        assert row.password_hash.startswith("$argon2id$") and PASSWORD not in row.password_hash
        row.password_hash = weak.hash(PASSWORD)  # stored by an older release with weaker parameters
    with Session(engine) as s, s.begin():
        assert verify_password(s, "reader.one", PASSWORD).user_id == uid
    with Session(engine) as s:
        stored = s.get(ApiKey, uid).password_hash
    assert not hasher().check_needs_rehash(stored) and hasher().verify(stored, PASSWORD)
    with Session(engine) as s:
        assert verify_password(s, "reader.one", "wrong").reason == "wrong_password"
        # an account's empty key hash matches no presented key
        from radiolens.serve.store.auth import check_key

        key_id = s.get(ApiKey, uid).key_id
        assert check_key(s, f"rlk_{key_id}_").reason == "malformed"
        assert check_key(s, f"rlk_{key_id}_x").reason == "wrong_secret"


def test_users_add_cli(tmp_path):
    state = str(tmp_path / "state")
    runner = CliRunner()
    pw = tmp_path / "pw.txt"
    pw.write_text(PASSWORD + "\n")
    r = runner.invoke(cli_app, ["users", "add", "Dr.Reader", "--role", "clinician", "--password-file", str(pw),
                                "--state-dir", state])
    assert r.exit_code == 0, r.output
    assert "username=dr.reader" in r.output and PASSWORD not in r.output
    listed = runner.invoke(cli_app, ["users", "list", "--state-dir", state]).output
    assert "sign-in: dr.reader" in listed
    again = runner.invoke(cli_app, ["users", "add", "dr.reader", "--password-file", str(pw), "--state-dir", state])
    assert again.exit_code != 0 and "taken" in again.output
    short = tmp_path / "short.txt"
    short.write_text("tooshort\n")
    r = runner.invoke(cli_app, ["users", "add", "other", "--password-file", str(short), "--state-dir", state])
    assert r.exit_code != 0 and "12" in r.output
    r = runner.invoke(cli_app, ["users", "add", "prompted", "--state-dir", state],
                      input=f"{PASSWORD}-2\n{PASSWORD}-2\n")
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli_app, ["users", "passwd", "prompted", "--password-file", str(pw), "--state-dir", state])
    assert r.exit_code == 0, r.output
    assert "0 open session(s) ended" in r.output

    from radiolens.serve.store.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'state' / 'radiolens.db'}")
    with Session(engine) as s:
        assert verify_password(s, "dr.reader", PASSWORD).role.value == "clinician"
        assert verify_password(s, "prompted", PASSWORD).role.value == "clinician"
    events = [r["event"] for r in audit.rows_between(engine)]
    assert events.count("account_created") == 2 and events.count("password_set") == 1
    dumped = "".join(audit.export(engine, "jsonl"))
    assert "dr.reader" not in dumped and PASSWORD not in dumped
    engine.dispose()


def test_new_password_ends_open_sessions(signin_client, tmp_path):
    """Whoever signed in with the old password is signed out when it changes (`radiolens users passwd`)."""
    from radiolens.serve.store.accounts import set_password

    c, _keys, app = signin_client
    uid = _account(app)
    other = _account(app, name="reader.two")
    assert c.post("/v1/session", json={"username": "reader.one", "password": PASSWORD}).status_code == 200
    cookie = c.cookies.get("radiolens_session")
    assert c.get("/v1/me").json()["user_id"] == uid
    from fastapi.testclient import TestClient

    with TestClient(app) as c2:  # another account's session is not touched
        assert c2.post("/v1/session", json={"username": "reader.two", "password": PASSWORD}).status_code == 200
        with Session(app.state.service.engine) as s, s.begin():
            row, ended = set_password(s, "reader.one", PASSWORD + " new")
            changed = row.id
        assert changed == uid and ended == 1
        assert c2.get("/v1/me").json()["user_id"] == other
    r = c.get("/v1/predictions")
    assert r.status_code == 401 and "sign in again" in r.json()["error"]["message"]
    assert _rows(app)[-1]["outputs"]["reason"] == "session_ended"
    c.cookies.set("radiolens_session", cookie)
    assert c.get("/v1/me").status_code == 401
    assert c.post("/v1/session", json={"username": "reader.one", "password": PASSWORD}).status_code == 401
    assert c.post("/v1/session", json={"username": "reader.one", "password": PASSWORD + " new"}).status_code == 200


def test_concurrent_failed_signins_do_not_pass_the_limit(signin_client):
    """A burst of wrong passwords sent at once gets no more verifications than the limit allows: each attempt
    counts before its (slow, argon2) password check."""
    import concurrent.futures as cf

    c, _keys, app = signin_client
    _account(app)

    def attempt(i: int) -> int:
        return c.post("/v1/session", json={"username": "reader.one", "password": f"wrong guess {i}"}).status_code

    with cf.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(attempt, range(8)))
    assert sorted(set(codes)) == [401, 429] and codes.count(401) <= 3, codes  # limit per username: 3
    failed = [r for r in _rows(app) if r["event"] == audit.SIGNIN_FAILED]
    assert len(failed) == codes.count(401)
