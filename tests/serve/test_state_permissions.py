"""The service's state is private (folders 0700, files 0600), on a fresh folder and on one an earlier version
left world-readable; and the de-identification secret is refused from a file others can read, refused as a
published demo value by the service (unless --insecure-demo-secret), and warned about on a command line."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import httpx
import pytest
from tests.serve.conftest import SECRET
from typer.testing import CliRunner

from radiolens.cli import app as cli_app
from radiolens.errors import ConfigError
from radiolens.io.deid import PUBLIC_SECRETS, SECRET_ENV, SECRET_FILE_ENV
from radiolens.serve.config import ServeSettings

DEMO_SECRET = "demo-secret-change-me"  # what scripts/demo.sh and the docs used to export


def _modes(root: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(os.stat(root).st_mode)}
    for p in root.rglob("*"):
        out[str(p.relative_to(root))] = stat.S_IMODE(os.lstat(p).st_mode)
    return out


def _assert_private(root: Path) -> dict[str, int]:
    modes = _modes(root)
    loose = {name: oct(m) for name, m in modes.items()
             if m & 0o077 or (Path(root, name).is_dir() and m != 0o700)}
    assert not loose, loose
    return modes


@pytest.fixture
def clean_env(monkeypatch):
    for var in (SECRET_ENV, SECRET_FILE_ENV, "RADIOLENS_SERVE_SETTINGS", "RADIOLENS_DB_URL"):
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    return monkeypatch


def _predict(srv, keys, data: bytes) -> None:
    r = httpx.post(f"{srv.url}/v1/predictions", headers=keys.h("clinician"),
                   files={"file": ("upload.dcm", data, "application/dicom")}, timeout=60)
    assert r.status_code == 201, r.text


def test_live_service_state_is_private(live, phi_dicom_bytes, tmp_path):
    old_umask = os.umask(0o022)  # the usual umask, under which Python and SQLite create 0755 / 0644
    try:
        state = tmp_path / "state"
        srv, keys = live(state_dir=state)
        _predict(srv, keys, phi_dicom_bytes)
        modes = _assert_private(state)
    finally:
        os.umask(old_umask)
    names = set(modes)
    # what was checked: the database with its WAL, and the de-identified image and heatmap of the prediction
    assert {"radiolens.db", "radiolens.db-wal", "artefacts"} <= names
    assert any(n.endswith(".image.png") for n in names) and any(n.endswith(".heatmap.png") for n in names)
    assert all(modes[n] == 0o600 for n in names if n.endswith(".png") or n.startswith("radiolens.db"))


def test_world_readable_state_of_an_earlier_run_is_tightened(live, phi_dicom_bytes, tmp_path, caplog):
    state = tmp_path / "state"
    srv, keys = live(state_dir=state)
    _predict(srv, keys, phi_dicom_bytes)
    for p in [state, *state.rglob("*")]:  # as versions before this check left it
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    (state / "notes.txt").write_text("left here by an operator")
    os.chmod(state / "notes.txt", 0o666)
    caplog.set_level(logging.WARNING, logger="radiolens.serve")
    srv2, keys2 = live(state_dir=state)
    _predict(srv2, keys2, phi_dicom_bytes)
    modes = _assert_private(state)
    assert modes["notes.txt"] == 0o600
    assert any("tightened the permissions" in r.getMessage() for r in caplog.records)


def test_state_owned_by_another_user_is_refused(tmp_path, monkeypatch):
    from radiolens.serve.store.state import secure_state_dir

    state = tmp_path / "state"
    state.mkdir()
    owner = os.stat(state).st_uid
    monkeypatch.setattr(os, "getuid", lambda: owner + 1)
    with pytest.raises(ConfigError, match="owned by another user"):
        secure_state_dir(state)


def test_serve_cli_creates_private_state_and_restores_umask(clean_env, bundle_path, tmp_path):
    """`radiolens serve` up to the uvicorn call (workers=2: the Prometheus folder too), on a fresh folder and on
    an existing world-readable one; uvicorn's workers inherit the umask it sets."""
    import uvicorn

    seen = {}

    def fake_run(*args, **kwargs):
        seen["umask"] = os.umask(0o077)
        os.umask(seen["umask"])
        seen["metrics"] = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        seen["modes"] = _modes(tmp_path / "st")

    clean_env.setattr(uvicorn, "run", fake_run)
    clean_env.setenv(SECRET_ENV, SECRET)
    old = os.umask(0o022)
    try:
        for prepare in (lambda: None, lambda: [os.chmod(p, 0o755 if p.is_dir() else 0o644)
                                               for p in [tmp_path / "st", *(tmp_path / "st").rglob("*")]]):
            prepare()
            r = CliRunner().invoke(cli_app, ["serve", "--model", str(bundle_path), "--state-dir",
                                             str(tmp_path / "st"), "--workers", "2"])
            assert r.exit_code == 0, r.output
            assert seen["umask"] == 0o077 and os.umask(0o022) == 0o022  # restored after the run
            loose = {n: oct(m) for n, m in seen["modes"].items() if m & 0o077}
            assert not loose and "radiolens.db" in seen["modes"], seen["modes"]
            assert "prometheus-multiproc" in seen["modes"] and seen["metrics"]
    finally:
        os.umask(old)


# ---------------------------------------------------------------------- the de-identification secret
def test_secret_file_readable_by_others_is_refused(clean_env, tmp_path, bundle_path):
    f = tmp_path / "deid.secret"
    f.write_text(SECRET + "\n")
    clean_env.setenv(SECRET_FILE_ENV, str(f))
    for mode in (0o644, 0o640, 0o604, 0o620):
        os.chmod(f, mode)
        with pytest.raises(ConfigError, match="too open") as err:
            ServeSettings(model_path=tmp_path).resolved_secret()
        assert SECRET not in str(err.value) and "chmod 600" in str(err.value)
    r = CliRunner().invoke(cli_app, ["serve", "--model", str(bundle_path), "--state-dir", str(tmp_path / "st")])
    assert r.exit_code == 2 and "too open" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(cli_app, ["deid", str(tmp_path / "none.dcm"), str(tmp_path / "o")])
    assert r.exit_code == 2 and "too open" in r.output
    for mode in (0o600, 0o400):
        os.chmod(f, mode)
        assert ServeSettings(model_path=tmp_path).resolved_secret() == SECRET


def test_published_demo_secret_refused_by_the_service(clean_env, tmp_path, bundle_path, settings_factory):
    assert DEMO_SECRET in PUBLIC_SECRETS
    with pytest.raises(ConfigError, match="published demo value"):
        settings_factory(deid_secret=DEMO_SECRET).resolved_secret()
    from radiolens.serve import create_app

    with pytest.raises(ConfigError, match="--insecure-demo-secret"):
        create_app(settings_factory(deid_secret=DEMO_SECRET))
    clean_env.setenv(SECRET_ENV, DEMO_SECRET.upper())
    r = CliRunner().invoke(cli_app, ["serve", "--model", str(bundle_path), "--state-dir", str(tmp_path / "st")])
    assert r.exit_code == 2 and "published demo value" in r.output and "Traceback" not in r.output
    assert DEMO_SECRET.upper() not in r.output
    # explicitly asked for: started, with a warning
    import uvicorn

    clean_env.setattr(uvicorn, "run", lambda *a, **k: None)
    r = CliRunner().invoke(cli_app, ["serve", "--model", str(bundle_path), "--state-dir", str(tmp_path / "st"),
                                     "--insecure-demo-secret"])
    assert r.exit_code == 0, r.output
    assert "never upload real patient data" in r.stderr


def test_deid_cli_warns_about_demo_and_command_line_secrets(clean_env, tmp_path, siim_dicom):
    runner = CliRunner()
    r = runner.invoke(cli_app, ["deid", str(siim_dicom), str(tmp_path / "a"), "--secret", SECRET])
    assert r.exit_code == 0, r.output
    assert "on the command line" in r.stderr and SECRET not in r.output
    clean_env.setenv(SECRET_ENV, SECRET)
    r = runner.invoke(cli_app, ["deid", str(siim_dicom), str(tmp_path / "b")])
    assert r.exit_code == 0 and "warning" not in r.stderr, r.stderr
    clean_env.setenv(SECRET_ENV, DEMO_SECRET)
    r = runner.invoke(cli_app, ["deid", str(siim_dicom), str(tmp_path / "c")])
    assert r.exit_code == 0 and "published demo value" in r.stderr and "command line" not in r.stderr
