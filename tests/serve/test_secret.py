"""The de-identification secret: minimum length, from the environment or a file, never inside the settings
JSON handed to worker processes, and a fingerprint an operator can compare across restarts."""

from __future__ import annotations

import json

import pytest
from tests.serve.conftest import SECRET
from typer.testing import CliRunner

from radiolens.cli import app as cli_app
from radiolens.errors import ConfigError
from radiolens.serve.config import (
    DEID_SECRET_ENV,
    DEID_SECRET_FILE_ENV,
    SETTINGS_ENV,
    ServeSettings,
    secret_fingerprint,
)


@pytest.fixture
def clean_env(monkeypatch):
    for var in (DEID_SECRET_ENV, DEID_SECRET_FILE_ENV, SETTINGS_ENV):
        # setenv first so the teardown also removes what `radiolens serve` writes into os.environ (a bare
        # delenv of an unset variable records nothing to undo, and the value leaked into later tests)
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    return monkeypatch


def test_short_secret_refused(clean_env, tmp_path):
    with pytest.raises(ConfigError, match="shorter than 16 bytes") as err:
        ServeSettings(model_path=tmp_path, deid_secret="fifteen-chars!!").resolved_secret()
    assert "fifteen-chars!!" not in str(err.value)
    clean_env.setenv(DEID_SECRET_ENV, "short")
    with pytest.raises(ConfigError, match="shorter than 16"):
        ServeSettings(model_path=tmp_path).resolved_secret()
    clean_env.setenv(DEID_SECRET_ENV, "x" * 16)
    assert ServeSettings(model_path=tmp_path).resolved_secret() == "x" * 16


def test_secret_from_file(clean_env, tmp_path):
    f = tmp_path / "deid.secret"
    f.write_text(SECRET + "\n")  # as `echo ... > file` writes it
    f.chmod(0o600)  # a secret file others can read is refused (test_state_permissions.py)
    clean_env.setenv(DEID_SECRET_FILE_ENV, str(f))
    assert ServeSettings(model_path=tmp_path).resolved_secret() == SECRET
    clean_env.setenv(DEID_SECRET_ENV, SECRET)  # both set and equal: fine
    assert ServeSettings(model_path=tmp_path).resolved_secret() == SECRET
    clean_env.setenv(DEID_SECRET_ENV, SECRET + "-other")
    with pytest.raises(ConfigError, match="both set and differ"):
        ServeSettings(model_path=tmp_path).resolved_secret()
    clean_env.delenv(DEID_SECRET_ENV)
    clean_env.setenv(DEID_SECRET_FILE_ENV, str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="cannot read the secret file"):
        ServeSettings(model_path=tmp_path).resolved_secret()
    f.write_text("tooshort\n")
    clean_env.setenv(DEID_SECRET_FILE_ENV, str(f))
    with pytest.raises(ConfigError, match="shorter than 16"):
        ServeSettings(model_path=tmp_path).resolved_secret()


def test_settings_json_never_carries_the_secret(clean_env, tmp_path):
    s = ServeSettings(model_path=tmp_path, deid_secret=SECRET)
    assert SECRET not in s.to_env() and "deid_secret" not in json.loads(s.to_env())
    env = s.worker_env()
    assert SECRET not in env[SETTINGS_ENV] and env[DEID_SECRET_ENV] == SECRET
    for var, value in env.items():  # what a worker process sees
        clean_env.setenv(var, value)
    assert ServeSettings.from_env().resolved_secret() == SECRET
    # A secret that came from the environment is inherited by workers anyway: not copied again.
    assert DEID_SECRET_ENV not in ServeSettings(model_path=tmp_path).worker_env()


def test_serve_cli_hands_workers_the_secret_separately(clean_env, tmp_path, bundle_path):
    """`radiolens serve` up to the uvicorn call: what the worker processes would inherit."""
    import os

    import uvicorn

    seen = {}

    def fake_run(*args, **kwargs):
        seen.update(os.environ)

    clean_env.setattr(uvicorn, "run", fake_run)
    f = tmp_path / "deid.secret"
    f.write_text(SECRET)
    f.chmod(0o600)
    clean_env.setenv(DEID_SECRET_FILE_ENV, str(f))
    r = CliRunner().invoke(cli_app, ["serve", "--model", str(bundle_path), "--state-dir", str(tmp_path / "st")])
    assert r.exit_code == 0, r.output
    assert SECRET not in seen[SETTINGS_ENV]
    assert secret_fingerprint(SECRET) in r.stderr and SECRET not in r.output


def test_fingerprint_endpoint(app_factory, caplog):
    import logging

    from fastapi.testclient import TestClient

    caplog.set_level(logging.INFO, logger="radiolens.serve")
    app, keys = app_factory()
    fp = secret_fingerprint(SECRET)
    assert len(fp) == 16 and SECRET not in fp
    assert fp != secret_fingerprint(SECRET + "x")
    with TestClient(app) as c:
        for role in ("admin", "auditor"):
            body = c.get("/v1/service", headers=keys.h(role)).json()
            assert body["deid_secret_fingerprint"] == fp and body["database"] == "sqlite"
            assert body["schema_revision"]
        assert c.get("/v1/service", headers=keys.h("clinician")).status_code == 403
        assert c.get("/v1/service").status_code == 401
    assert any(fp in rec.getMessage() for rec in caplog.records)  # start-up log line
    assert all(SECRET not in rec.getMessage() for rec in caplog.records)
