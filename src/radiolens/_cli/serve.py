"""CLI commands of the serve layer: ``serve``, ``users ...``, ``audit verify|head|export``,
``db upgrade|backup|restore``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Literal

import typer

from radiolens._cli.common import (
    AUDIT_FORMATS,
    LOG_LEVELS,
    PIXEL_TEXT_POLICIES,
    ROLES,
    SERVE_BACKENDS,
    TEXT_DETECTOR_USES,
    friendly_errors,
)

_DB_HELP = "SQLAlchemy URL (default: SQLite file radiolens.db in --state-dir); env RADIOLENS_DB_URL"
_STATE_HELP = "folder for the SQLite DB and stored artefacts (heatmaps, de-identified display images)"


def _store(db_url: str | None, state_dir: Path):
    from radiolens.serve.store.admin import StoreLocation

    return StoreLocation(db_url, state_dir)


def _backend(kind: str | None, onnx: Path | None, model: Path) -> dict:
    from radiolens.errors import ConfigError

    model_is_onnx = model.suffix.lower() == ".onnx"
    if kind not in (None, "torch", "onnx"):
        raise ConfigError(f"--backend must be torch or onnx (got '{kind}')")
    if model_is_onnx and (kind == "torch" or onnx is not None):
        raise ConfigError(f"--model {model.name} is an ONNX export: it is served on its own (no --backend torch, "
                          "no --onnx)")
    if kind == "onnx" and onnx is None and not model_is_onnx:
        raise ConfigError("--backend onnx needs --onnx FILE.onnx (an export of --model: `radiolens export`), "
                          "or give the export itself as --model")
    if onnx is not None and not onnx.is_file():
        raise ConfigError(f"--onnx: file not found: {onnx.name}")
    return {"backend": kind, "onnx_path": onnx}


def _monitor_settings(path: Path | None, webhook: str | None):
    from pydantic import ValidationError

    from radiolens.errors import ConfigError
    from radiolens.monitor.config import MonitorConfig, load_monitor_config

    cfg = load_monitor_config(path) if path else MonitorConfig()
    if webhook:
        try:
            cfg.drift = cfg.drift.model_validate({**cfg.drift.model_dump(), "webhook_url": webhook})
        except ValidationError as exc:
            raise ConfigError(f"--alert-webhook: {exc.errors()[0].get('msg', 'invalid')}") from exc
    return cfg


def _settings(**values):
    """ServeSettings from options; an out-of-range value is one line (option name and bound), no traceback."""
    from pydantic import ValidationError

    from radiolens.errors import ConfigError
    from radiolens.serve.config import ServeSettings

    try:
        return ServeSettings(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = "--" + "-".join(str(x) for x in err.get("loc", ())).replace("_", "-")
        raise ConfigError(f"{where}: {err.get('msg', 'invalid value')}") from None


def serve_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="ModelBundle .pt file, or its ONNX export (`radiolens "
                               "export`), served with ONNX Runtime alone: no PyTorch, no heatmaps or MC-dropout"),
    host: str = typer.Option("127.0.0.1", help="bind address"),
    port: int = typer.Option(8000, help="TCP port"),
    db_url: str = typer.Option(None, "--db-url", help=_DB_HELP),
    state_dir: Path = typer.Option(Path("radiolens-state"), "--state-dir", help=_STATE_HELP),
    workers: int = typer.Option(1, help="uvicorn worker processes"),
    inference_workers: int = typer.Option(2, "--inference-workers", help="concurrent inferences per process"),
    batch_max_size: int = typer.Option(8, "--batch-max-size", help="micro-batching: concurrent requests' images "
                                       "run as one forward pass of up to this many (1 = off)"),
    batch_max_wait_ms: float = typer.Option(5.0, "--batch-max-wait-ms", help="micro-batching: the longest an "
                                            "image waits in the queue for batch neighbours"),
    max_upload_mb: float = typer.Option(64.0, "--max-upload-mb", help="request size limit (413 above)"),
    timeout_s: float = typer.Option(60.0, "--timeout", help="per-request timeout in seconds (504 above)"),
    max_pending_uploads: int = typer.Option(6, "--max-pending-uploads", help="uploads in progress per process "
                                            "(received, queued or predicted); 503 + Retry-After above"),
    header_timeout_s: float = typer.Option(10.0, "--header-timeout", help="seconds a connection has to send "
                                           "a complete request head (closed after)"),
    no_heatmaps: bool = typer.Option(False, "--no-heatmaps", help="never compute Grad-CAM overlays"),
    mc_passes: int = typer.Option(8, "--mc-passes", help="MC-dropout passes for the review spread (0 = off)"),
    monitor_config: Path = typer.Option(None, "--monitor-config",
                                        help="monitoring YAML: input-gate rules and drift thresholds"),
    alert_webhook: str = typer.Option(None, "--alert-webhook", help="POST drift alerts (JSON) to this URL"),
    backend: Literal[SERVE_BACKENDS] | None = typer.Option(None, "--backend", help="onnx: ONNX Runtime runs "
                                                           "--onnx; heatmaps and MC-dropout stay on PyTorch "
                                                           "(default: torch for a .pt --model, onnx for .onnx)"),
    onnx: Path = typer.Option(None, "--onnx", help="an export of --model (`radiolens export`, fp32 or INT8)"),
    onnx_threads: int = typer.Option(None, "--onnx-threads", help="ONNX Runtime threads per process"),
    accept_new_deid_secret: bool = typer.Option(
        False, "--accept-new-deid-secret", help="start with a de-identification secret other than the one "
        "this database was used with, on purpose (audited; study refs from now on do not match earlier ones)"),
    ssl_keyfile: Path = typer.Option(None, "--ssl-keyfile", help="serve HTTPS with this private key (PEM); "
                                     "with --ssl-certfile. Usually TLS ends at a reverse proxy instead"),
    ssl_certfile: Path = typer.Option(None, "--ssl-certfile", help="certificate chain (PEM) for --ssl-keyfile"),
    insecure_demo_secret: bool = typer.Option(
        False, "--insecure-demo-secret", help="accept a de-identification secret published in radiolens' demo "
        "script or docs (a throw-away demo only: anyone can recompute remapped UIDs made with it)"),
    dicomweb_stow: bool = typer.Option(
        False, "--dicomweb-stow", help="accept DICOMweb STOW-RS at /dicomweb/studies (clinician keys): instances "
        "are queued in STATE_DIR/dicom-spool and scored by a DICOM gateway on the same state folder"),
    pixel_text: Literal[PIXEL_TEXT_POLICIES] = typer.Option(
        "refuse", "--pixel-text", help="text burned into uploaded DICOM pixels, read by Tesseract OCR: refuse "
        "(422), mask (black boxes, a new instance) or off (the header's BurnedInAnnotation rule alone)"),
    text_detector: Literal[TEXT_DETECTOR_USES] = typer.Option(
        "auto", "--text-detector", help="which uploads the learned text detector also reads for burned-in "
        "text: auto (ultrasound and colour pictures, and images where text was found), all (every image: about "
        "0.5 s more per 1024-pixel image on two cores) or off"),
    log_level: Literal[LOG_LEVELS] = typer.Option("info", "--log-level", case_sensitive=False),
) -> None:
    """Run the inference API and web viewer (advisory only: never a diagnosis)."""
    from radiolens.io.deid_ocr import PixelTextConfig
    from radiolens.serve.http.launch import run_server

    settings = _settings(model_path=model, db_url=db_url or os.environ.get("RADIOLENS_DB_URL", ""),
                         state_dir=state_dir, max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                         request_timeout_s=timeout_s, inference_workers=inference_workers,
                         batch_max_size=batch_max_size, batch_max_wait_ms=batch_max_wait_ms,
                         max_pending_uploads=max_pending_uploads, header_timeout_s=header_timeout_s,
                         heatmaps=not no_heatmaps, mc_dropout_passes=mc_passes, auto_migrate=False,
                         monitor=_monitor_settings(monitor_config, alert_webhook), **_backend(backend, onnx, model),
                         onnx_threads=onnx_threads, accept_new_deid_secret=accept_new_deid_secret,
                         insecure_demo_secret=insecure_demo_secret, dicomweb_stow=dicomweb_stow,
                         pixel_text=PixelTextConfig(policy=pixel_text, text_detector=text_detector))
    run_server(settings, host=host, port=port, workers=workers, log_level=log_level, ssl_keyfile=ssl_keyfile,
               ssl_certfile=ssl_certfile, echo=lambda line: typer.echo(line, err=True))


def users_create_cmd(
    role: Literal[ROLES] = typer.Option(..., help="what the key may do"),
    label: str = typer.Option("", help="who holds the key (for admins; never written to the audit log)"),
    expires_in: str = typer.Option(None, "--expires-in", help="key lifetime, e.g. 30d, 12h, 2w (m|h|d|w); "
                                   "refused with 401 afterwards (default: never expires)"),
    db_url: str = typer.Option(None, "--db-url", help=_DB_HELP),
    state_dir: Path = typer.Option(Path("radiolens-state"), "--state-dir", help=_STATE_HELP),
) -> None:
    """Create a key and print it ONCE (only its hash is stored)."""
    from radiolens.serve.store.admin import create_user
    from radiolens.serve.store.auth import parse_expiry

    created = create_user(_store(db_url, state_dir), role, label, parse_expiry(expires_in))
    row = created.listing
    until = f" expires={row.expires_at.isoformat(timespec='seconds')}" if row.expires_at else ""
    typer.echo(f"user_id={row.user_id} key_id={row.key_id} role={role}{until}", err=True)
    typer.echo("store this key now; it cannot be shown again:", err=True)
    typer.echo(created.key)


def _read_password(password_file: Path | None) -> str:
    """From a file (its first line; keep it private) or typed at a hidden prompt, twice."""
    from radiolens.errors import InputError

    if password_file is not None:
        try:
            lines = password_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"--password-file: cannot read {password_file.name} ({type(exc).__name__})") from None
        if not lines or not lines[0]:
            raise InputError("--password-file: the first line (the password) is empty")
        return lines[0]
    return typer.prompt("password", hide_input=True, confirmation_prompt=True)


def users_add_cmd(
    username: str = typer.Argument(..., help="sign-in name (letters, digits, . _ - @; stored lower-case)"),
    role: Literal[ROLES] = typer.Option("clinician", help="what the account may do"),
    password_file: Path = typer.Option(None, "--password-file", help="read the password from the first line of "
                                       "this file (else it is asked for, hidden); at least 12 characters"),
    label: str = typer.Option("", help="who holds the account (for admins; never written to the audit log)"),
    expires_in: str = typer.Option(None, "--expires-in", help="account lifetime, e.g. 90d (default: never)"),
    db_url: str = typer.Option(None, "--db-url", help=_DB_HELP),
    state_dir: Path = typer.Option(Path("radiolens-state"), "--state-dir", help=_STATE_HELP),
) -> None:
    """Add a reader account that signs in at the viewer with a username and password (argon2id-hashed)."""
    from radiolens.serve.store.admin import add_account
    from radiolens.serve.store.auth import parse_expiry

    row = add_account(_store(db_url, state_dir), username, _read_password(password_file), role, label,
                      parse_expiry(expires_in))
    typer.echo(f"user_id={row.user_id} username={row.username} role={row.role}")


def users_passwd_cmd(
    username: str = typer.Argument(..., help="the account's sign-in name"),
    password_file: Path = typer.Option(None, "--password-file", help="read the new password from this file's "
                                       "first line (else it is asked for, hidden)"),
    db_url: str = typer.Option(None, "--db-url", help=_DB_HELP),
    state_dir: Path = typer.Option(Path("radiolens-state"), "--state-dir", help=_STATE_HELP),
) -> None:
    """Set a new password for an account; its open browser sessions end (signed in again with the new one)."""
    from radiolens.serve.store.admin import set_account_password

    row, ended = set_account_password(_store(db_url, state_dir), username, _read_password(password_file))
    typer.echo(f"password set for user_id={row.user_id} username={row.username}; {ended} open session(s) ended")


def users_list_cmd(
    db_url: str = typer.Option(None, "--db-url", help=_DB_HELP),
    state_dir: Path = typer.Option(Path("radiolens-state"), "--state-dir", help=_STATE_HELP),
) -> None:
    """List keys (never the keys themselves)."""
    from radiolens.serve.store.admin import list_users

    rows = list_users(_store(db_url, state_dir))  # read-only: never creates a database
    typer.echo(f"{'user_id':>7}  {'key_id':16}  {'role':9}  {'status':8}  {'expires (UTC)':19}  label")
    for r in rows:
        exp = r.expires_at.strftime("%Y-%m-%d %H:%M:%S") if r.expires_at else "never"
        who = f"{r.label} (sign-in: {r.username})".strip() if r.username else r.label
        typer.echo(f"{r.user_id:>7}  {r.key_id:16}  {r.role:9}  {r.status:8}  {exp:19}  {who}")


def users_revoke_cmd(
    key_id: str = typer.Argument(..., help="key id (or user id) from `radiolens users list`"),
    db_url: str = typer.Option(None, "--db-url", help=_DB_HELP),
    state_dir: Path = typer.Option(Path("radiolens-state"), "--state-dir", help=_STATE_HELP),
) -> None:
    """Revoke a key; requests using it get 401 from then on. The last active admin key is never revoked."""
    from radiolens.serve.store.admin import revoke_user

    row = revoke_user(_store(db_url, state_dir), key_id)  # nothing to revoke in a store that does not exist
    typer.echo(f"revoked key_id={row.key_id} (user_id={row.user_id})")


def audit_verify_cmd(
    db_url: str = typer.Option(None, "--db-url", help=_DB_HELP),
    state_dir: Path = typer.Option(Path("radiolens-state"), "--state-dir", help=_STATE_HELP),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    expect_head: str = typer.Option(None, "--expect-head", help="SEQ:HASH recorded outside the database "
                                    "earlier (`radiolens audit head`); fail if the chain lacks it"),
    artefacts: bool = typer.Option(True, "--artefacts/--no-artefacts", help="also check every stored image "
                                   "and heatmap in STATE_DIR/artefacts against its chained sha256"),
) -> None:
    """Recompute the hash chain and check every stored result, feedback and artefact against it; exit 1 on
    any mismatch (a row edited or deleted, a result or file changed)."""
    from radiolens.serve.store.admin import verify_audit

    report = verify_audit(_store(db_url, state_dir), expect_head=expect_head, artefacts=artefacts)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        state = "OK" if report.ok else "BROKEN"
        typer.echo(f"audit chain {state}: {report.rows} rows, head seq {report.head_seq}, "
                   f"head hash {report.head_hash}")
        for p in report.problems:
            typer.echo(f"  - {p}")
    if not report.ok:
        raise typer.Exit(1)


def audit_head_cmd(
    db_url: str = typer.Option(None, "--db-url", help=_DB_HELP),
    state_dir: Path = typer.Option(Path("radiolens-state"), "--state-dir", help=_STATE_HELP),
) -> None:
    """Print the verified chain head as SEQ:HASH, to record OUTSIDE the database (e.g. a daily ticket or
    write-once store); `audit verify --expect-head SEQ:HASH` later proves history was not rewound."""
    from radiolens.serve.store.admin import verify_audit

    # the chain and the stored rows; `audit verify` also checks files
    report = verify_audit(_store(db_url, state_dir), artefacts=False)
    if not report.ok:  # never anchor a chain that is already broken
        typer.echo(f"error: audit chain BROKEN ({len(report.problems)} problems; run `radiolens audit verify`)",
                   err=True)
        raise typer.Exit(1)
    typer.echo(f"{report.head_seq}:{report.head_hash}")


def audit_export_cmd(
    since: str = typer.Option(None, help="ISO 8601 start, inclusive (naive = UTC)"),
    until: str = typer.Option(None, help="ISO 8601 end, exclusive"),
    fmt: Literal[AUDIT_FORMATS] = typer.Option("jsonl", "--format", help="output format"),
    out: Path = typer.Option(None, "--out", "-o", help="file to write (default: stdout)"),
    db_url: str = typer.Option(None, "--db-url", help=_DB_HELP),
    state_dir: Path = typer.Option(Path("radiolens-state"), "--state-dir", help=_STATE_HELP),
) -> None:
    """Export audit rows in a time range as JSON lines or CSV."""
    from radiolens.serve.store.admin import export_audit

    chunks = export_audit(_store(db_url, state_dir), fmt, since, until)
    if out:
        out.write_text("".join(chunks))
        typer.echo(f"wrote {max(len(chunks) - (fmt == 'csv'), 0)} rows to {out.name}", err=True)
    else:
        sys.stdout.write("".join(chunks))


def db_upgrade_cmd(
    db_url: str = typer.Option(None, "--db-url", help=_DB_HELP),
    state_dir: Path = typer.Option(Path("radiolens-state"), "--state-dir", help=_STATE_HELP),
) -> None:
    """Apply the Alembic migrations shipped in the package (idempotent)."""
    from radiolens.serve.store.admin import upgrade_store

    typer.echo(f"database at revision {upgrade_store(_store(db_url, state_dir))}")


def db_backup_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="the backup file to write (never overwritten); its manifest is "
                             "written beside it as FILE.manifest.json"),
    db_url: str = typer.Option(None, "--db-url", help=_DB_HELP),
    state_dir: Path = typer.Option(Path("radiolens-state"), "--state-dir", help=_STATE_HELP),
) -> None:
    """Back up the database (SQLite online backup, or pg_dump) while the service runs; prints the audit chain
    head it contains as SEQ:HASH. Secrets, artefacts and the DICOM spool are not in it."""
    from radiolens.serve.store.backup import backup, manifest_path

    manifest = backup(_store(db_url, state_dir), out)
    typer.echo(f"wrote {out.name} and {manifest_path(out).name} ({manifest.dialect}, revision "
               f"{manifest.revision}); audit head:", err=True)
    typer.echo(manifest.head)


def db_restore_cmd(
    backup_file: Path = typer.Argument(..., help="a file written by `radiolens db backup` (its manifest beside it)"),
    db_url: str = typer.Option(None, "--db-url", help=_DB_HELP + "; must be new (SQLite) or empty (PostgreSQL)"),
    state_dir: Path = typer.Option(Path("radiolens-state"), "--state-dir", help=_STATE_HELP),
) -> None:
    """Restore a backup into a new SQLite state folder or an empty PostgreSQL database; prints the audit head
    to check with `radiolens audit verify --expect-head`."""
    from radiolens.serve.store.backup import restore

    manifest = restore(backup_file, _store(db_url, state_dir))
    typer.echo(f"restored {backup_file.name} (revision {manifest.revision}, taken {manifest.created_at}); "
               "now run `radiolens audit verify --expect-head` with the head recorded at backup time:", err=True)
    typer.echo(manifest.head)


def register(app: typer.Typer) -> None:
    """Add this layer's commands to the main app: ``serve`` and the ``users``, ``audit`` and ``db`` groups."""
    app.command("serve")(friendly_errors(serve_cmd))
    users = typer.Typer(help="Manage API keys (machines) and sign-in accounts (readers) of the service.",
                        no_args_is_help=True)
    app.add_typer(users, name="users")
    users.command("create")(friendly_errors(users_create_cmd))
    users.command("add")(friendly_errors(users_add_cmd))
    users.command("passwd")(friendly_errors(users_passwd_cmd))
    users.command("list")(friendly_errors(users_list_cmd))
    users.command("revoke")(friendly_errors(users_revoke_cmd))
    audit_app = typer.Typer(help="Check and export the hash-chained audit log.", no_args_is_help=True)
    app.add_typer(audit_app, name="audit")
    audit_app.command("verify")(friendly_errors(audit_verify_cmd))
    audit_app.command("head")(friendly_errors(audit_head_cmd))
    audit_app.command("export")(friendly_errors(audit_export_cmd))
    db_app = typer.Typer(help="Service database maintenance.", no_args_is_help=True)
    app.add_typer(db_app, name="db")
    db_app.command("upgrade")(friendly_errors(db_upgrade_cmd))
    db_app.command("backup")(friendly_errors(db_backup_cmd))
    db_app.command("restore")(friendly_errors(db_restore_cmd))
