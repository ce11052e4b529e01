"""The library behind ``radiolens serve`` and ``radiolens users|audit|db``: the start-up sequence up to
uvicorn (``serve.http.launch``) and the store operations (``serve.store.admin``), called without the CLI."""

from __future__ import annotations

import os

import pytest
from sqlalchemy.orm import Session

from radiolens.errors import ConfigError
from radiolens.serve.config import DEID_SECRET_ENV, SETTINGS_ENV, ServeSettings
from radiolens.serve.store.admin import (
    StoreLocation,
    create_user,
    export_audit,
    list_users,
    revoke_user,
    upgrade_store,
    verify_audit,
)
from radiolens.serve.store.auth import LastAdminError, authenticate
from radiolens.serve.store.db import StoreMissing, head_revision, make_engine

SECRET = "a-long-enough-launch-test-secret"


def test_store_operations_round_trip(tmp_path):
    where = StoreLocation(None, tmp_path / "state")
    with pytest.raises(StoreMissing):
        list_users(where)  # read-only: never creates a database
    assert not (tmp_path / "state" / "radiolens.db").exists()

    admin = create_user(where, "admin", "ops")
    clinician = create_user(where, "clinician", "ward 3")
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert upgrade_store(where) == head_revision()
    assert [(k.user_id, k.role, k.status) for k in list_users(where)] == [
        (admin.listing.user_id, "admin", "active"), (clinician.listing.user_id, "clinician", "active")]
    with Session(make_engine(where.url())) as s:
        assert authenticate(s, clinician.key).role.value == "clinician"

    assert revoke_user(where, clinician.listing.key_id).status == "revoked"
    with pytest.raises(LastAdminError):
        revoke_user(where, admin.listing.key_id)

    report = verify_audit(where)
    assert report.ok and report.rows == 3  # two keys created, one revoked
    events = [line for line in export_audit(where, "jsonl") if line.strip()]
    assert len(events) == report.rows and '"key_revoked"' in events[-1]
    assert not verify_audit(where, expect_head=f"{report.head_seq}:{'0' * 64}").ok


@pytest.fixture
def recorded_run(monkeypatch):
    """uvicorn.run replaced by a recorder of its arguments and of the environment the workers would inherit."""
    import uvicorn

    for var in (SETTINGS_ENV, DEID_SECRET_ENV):
        monkeypatch.setenv(var, "")  # the teardown then undoes what run_server writes into os.environ
        monkeypatch.delenv(var)
    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, kw=kw, env=dict(os.environ)))
    return seen


def test_run_server_prepares_state_then_runs_uvicorn(recorded_run, bundle_path, tmp_path):
    from radiolens.serve.http.launch import APP_FACTORY, run_server
    from radiolens.serve.http.server import HEADER_TIMEOUT_ENV, HeaderTimeoutH11Protocol

    settings = ServeSettings(model_path=bundle_path, state_dir=tmp_path / "st", deid_secret=SECRET,
                             header_timeout_s=7.5)
    lines: list[str] = []
    run_server(settings, host="127.0.0.1", port=8123, workers=1, log_level="info", echo=lines.append)

    assert recorded_run["app"] == APP_FACTORY and recorded_run["kw"]["http"] is HeaderTimeoutH11Protocol
    assert recorded_run["kw"]["port"] == 8123 and recorded_run["kw"]["ssl_keyfile"] is None
    env = recorded_run["env"]
    assert env[HEADER_TIMEOUT_ENV] == "7.5" and env[DEID_SECRET_ENV] == SECRET
    assert SECRET not in env[SETTINGS_ENV]  # the secret never travels inside the settings JSON
    assert ServeSettings.model_validate_json(env[SETTINGS_ENV]).model_path == bundle_path
    assert len(lines) == 2 and "registered for this database" in lines[0] and SECRET not in "".join(lines)
    assert lines[1].startswith("web viewer: http://127.0.0.1:8123/viewer/")
    assert (tmp_path / "st" / "radiolens.db").is_file()

    run_server(settings, host="127.0.0.1", port=8123, workers=1, log_level="info", echo=lines.append)
    assert "unchanged for this database" in lines[-2]
    other = settings.model_copy(update={"deid_secret": SECRET[::-1]})
    with pytest.raises(ConfigError):
        run_server(other, host="127.0.0.1", port=8123, workers=1, log_level="info", echo=lines.append)


def test_run_server_refuses_half_tls_before_anything(recorded_run, bundle_path, tmp_path):
    from radiolens.serve.http.launch import run_server

    settings = ServeSettings(model_path=bundle_path, state_dir=tmp_path / "st", deid_secret=SECRET)
    with pytest.raises(ConfigError, match="--ssl-certfile"):
        run_server(settings, host="127.0.0.1", port=8123, workers=1, log_level="info",
                   ssl_keyfile=bundle_path)
    assert not recorded_run and not (tmp_path / "st").exists()
