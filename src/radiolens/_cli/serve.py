"""CLI commands of the serve layer: ``serve``, ``users ...``, ``audit verify|export``, ``db upgrade``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from radiolens._cli.common import friendly_errors

_DB_HELP = "SQLAlchemy URL (default: SQLite file radiolens.db in --state-dir); env RADIOLENS_DB_URL"
_STATE_HELP = "folder for the SQLite DB and stored artefacts (heatmaps, de-identified display images)"


def _db_url(db_url: str | None, state_dir: Path) -> str:
    from radiolens.serve.config import ServeSettings

    url = db_url or os.environ.get("RADIOLENS_DB_URL", "")
    return ServeSettings(model_path=Path("."), db_url=url, state_dir=state_dir).resolved_db_url()


def _engine(db_url: str | None, state_dir: Path, migrate: bool = True):
    from radiolens.serve.db import make_engine, upgrade

    url = _db_url(db_url, state_dir)
    engine = make_engine(url)
    if migrate:
        upgrade(url, engine)
    return engine


def _backend(kind: str, onnx: Path | None) -> dict:
    from radiolens.errors import ConfigError

    if kind not in ("torch", "onnx"):
        raise ConfigError(f"--backend must be torch or onnx (got '{kind}')")
    if kind == "onnx" and onnx is None:
        raise ConfigError("--backend onnx needs --onnx FILE.onnx (an export of --model: `radiolens export`)")
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


def register(app: typer.Typer) -> None:
    """Add this layer's commands to the main app."""

    @app.command("serve")
    @friendly_errors
    def serve(
        model: Path = typer.Option(..., "--model", help="ModelBundle .pt file"),
        host: str = typer.Option("127.0.0.1", help="bind address"),
        port: int = typer.Option(8000, help="TCP port"),
        db_url: str = typer.Option(None, "--db-url", help=_DB_HELP),
        state_dir: Path = typer.Option(Path("radiolens-state"), "--state-dir", help=_STATE_HELP),
        workers: int = typer.Option(1, help="uvicorn worker processes"),
        inference_workers: int = typer.Option(2, "--inference-workers", help="concurrent inferences per process"),
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
        backend: str = typer.Option("torch", "--backend", help="torch | onnx (ONNX Runtime runs --onnx; heatmaps "
                                    "and MC-dropout stay on PyTorch)"),
        onnx: Path = typer.Option(None, "--onnx", help="an export of --model (`radiolens export`, fp32 or INT8)"),
        onnx_threads: int = typer.Option(None, "--onnx-threads", help="ONNX Runtime threads per process"),
        accept_new_deid_secret: bool = typer.Option(
            False, "--accept-new-deid-secret", help="start with a de-identification secret other than the one "
            "this database was used with, on purpose (audited; study refs from now on do not match earlier ones)"),
        log_level: str = typer.Option("info", "--log-level"),
    ) -> None:
        """Run the inference API and web viewer (advisory only: never a diagnosis)."""
        import uvicorn

        from radiolens.serve import audit
        from radiolens.serve.config import secret_fingerprint
        from radiolens.serve.db import make_engine, session_factory, upgrade
        from radiolens.serve.metrics import MultiprocessMetrics

        # --workers > 1: one shared Prometheus folder for this run, set in the environment before uvicorn starts
        # the workers, so /metrics answers for all of them whichever worker takes the scrape.
        metrics_dir = MultiprocessMetrics(state_dir, workers)  # a bad PROMETHEUS_MULTIPROC_DIR fails here
        settings = _settings(model_path=model, db_url=db_url or os.environ.get("RADIOLENS_DB_URL", ""),
                                 state_dir=state_dir, max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                                 request_timeout_s=timeout_s, inference_workers=inference_workers,
                                 max_pending_uploads=max_pending_uploads, header_timeout_s=header_timeout_s,
                                 heatmaps=not no_heatmaps, mc_dropout_passes=mc_passes, auto_migrate=False,
                                 monitor=_monitor_settings(monitor_config, alert_webhook), **_backend(backend, onnx),
                                 onnx_threads=onnx_threads, accept_new_deid_secret=accept_new_deid_secret)
        if settings.backend == "onnx":  # fail early, before uvicorn starts, when the export is not of this model
            from radiolens.models.bundle import ModelBundle
            from radiolens.serve.service import onnx_backend

            onnx_backend(settings, ModelBundle.load(model))
        secret = settings.resolved_secret()  # fail early, before uvicorn starts, when it is missing or short
        upgrade(settings.resolved_db_url())  # once, here, rather than racing in every worker
        # Also once, here: a secret other than the database's is refused before uvicorn starts (one line, exit 2),
        # and an accepted rotation is done and audited by this process only; workers then find it unchanged.
        from radiolens.serve.service import check_deid_secret

        engine = make_engine(settings.resolved_db_url())
        try:
            outcome = check_deid_secret(session_factory(engine), secret_fingerprint(secret),
                                        settings.accept_new_deid_secret, actor=(audit.CLI_USER_ID, audit.CLI_ROLE))
        finally:
            engine.dispose()
        settings = settings.model_copy(update={"accept_new_deid_secret": False})
        os.environ.update(settings.worker_env())  # the secret never travels inside the settings JSON
        typer.echo(f"de-identification secret fingerprint {secret_fingerprint(secret)} ({outcome} for this database; "
                   "record it: a change means study refs no longer match earlier ones)", err=True)
        from radiolens.serve.server import HEADER_TIMEOUT_ENV, HeaderTimeoutH11Protocol

        os.environ[HEADER_TIMEOUT_ENV] = str(settings.header_timeout_s)  # read by the protocol in every worker
        with metrics_dir:
            uvicorn.run("radiolens.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                        log_level=log_level, timeout_graceful_shutdown=120, http=HeaderTimeoutH11Protocol)

    users = typer.Typer(help="Manage API keys (users) of the service.", no_args_is_help=True)
    app.add_typer(users, name="users")

    @users.command("create")
    @friendly_errors
    def users_create(
        role: str = typer.Option(..., help="clinician | auditor | admin"),
        label: str = typer.Option("", help="who holds the key (for admins; never written to the audit log)"),
        db_url: str = typer.Option(None, "--db-url", help=_DB_HELP),
        state_dir: Path = typer.Option(Path("radiolens-state"), "--state-dir", help=_STATE_HELP),
    ) -> None:
        """Create a key and print it ONCE (only its hash is stored)."""
        from radiolens.serve import audit
        from radiolens.serve.auth import create_key_audited
        from radiolens.serve.db import session_factory

        engine = _engine(db_url, state_dir)
        with audit.writer(session_factory(engine)) as s:  # audited as user 0, role "cli"
            row, key = create_key_audited(s, role, label, audit.CLI_USER_ID, audit.CLI_ROLE)
            user_id, key_id = row.id, row.key_id
        engine.dispose()
        typer.echo(f"user_id={user_id} key_id={key_id} role={role}", err=True)
        typer.echo("store this key now; it cannot be shown again:", err=True)
        typer.echo(key)

    @users.command("list")
    @friendly_errors
    def users_list(
        db_url: str = typer.Option(None, "--db-url", help=_DB_HELP),
        state_dir: Path = typer.Option(Path("radiolens-state"), "--state-dir", help=_STATE_HELP),
    ) -> None:
        """List keys (never the keys themselves)."""
        from sqlalchemy.orm import Session

        from radiolens.serve.auth import list_keys

        engine = _engine(db_url, state_dir)
        with Session(engine) as s:
            rows = list_keys(s)
            typer.echo(f"{'user_id':>7}  {'key_id':16}  {'role':9}  {'status':8}  label")
            for r in rows:
                status = "revoked" if r.revoked_at else "active"
                typer.echo(f"{r.id:>7}  {r.key_id:16}  {r.role:9}  {status:8}  {r.label}")
        engine.dispose()

    @users.command("revoke")
    @friendly_errors
    def users_revoke(
        key_id: str = typer.Argument(..., help="key id (or user id) from `radiolens users list`"),
        db_url: str = typer.Option(None, "--db-url", help=_DB_HELP),
        state_dir: Path = typer.Option(Path("radiolens-state"), "--state-dir", help=_STATE_HELP),
    ) -> None:
        """Revoke a key; requests using it get 401 from then on."""
        from radiolens.serve import audit
        from radiolens.serve.auth import revoke_key_audited
        from radiolens.serve.db import session_factory

        engine = _engine(db_url, state_dir)
        with audit.writer(session_factory(engine)) as s:
            row = revoke_key_audited(s, key_id, audit.CLI_USER_ID, audit.CLI_ROLE)
            typer.echo(f"revoked key_id={row.key_id} (user_id={row.id})")
        engine.dispose()

    audit_app = typer.Typer(help="Check and export the hash-chained audit log.", no_args_is_help=True)
    app.add_typer(audit_app, name="audit")

    @audit_app.command("verify")
    @friendly_errors
    def audit_verify(
        db_url: str = typer.Option(None, "--db-url", help=_DB_HELP),
        state_dir: Path = typer.Option(Path("radiolens-state"), "--state-dir", help=_STATE_HELP),
        as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
        expect_head: str = typer.Option(None, "--expect-head", help="SEQ:HASH recorded outside the database "
                                        "earlier (`radiolens audit head`); fail if the chain lacks it"),
    ) -> None:
        """Recompute the hash chain; exit 1 if any row was edited or deleted."""
        from radiolens.serve import audit

        expected = audit.parse_head(expect_head) if expect_head else None
        engine = _engine(db_url, state_dir, migrate=False)
        try:
            report = audit.verify(engine, expect_head=expected)
        finally:
            engine.dispose()
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

    @audit_app.command("head")
    @friendly_errors
    def audit_head(
        db_url: str = typer.Option(None, "--db-url", help=_DB_HELP),
        state_dir: Path = typer.Option(Path("radiolens-state"), "--state-dir", help=_STATE_HELP),
    ) -> None:
        """Print the verified chain head as SEQ:HASH, to record OUTSIDE the database (e.g. a daily ticket or
        write-once store); `audit verify --expect-head SEQ:HASH` later proves history was not rewound."""
        from radiolens.serve import audit

        engine = _engine(db_url, state_dir, migrate=False)
        try:
            report = audit.verify(engine)
        finally:
            engine.dispose()
        if not report.ok:  # never anchor a chain that is already broken
            typer.echo(f"error: audit chain BROKEN ({len(report.problems)} problems; run `radiolens audit verify`)",
                       err=True)
            raise typer.Exit(1)
        typer.echo(f"{report.head_seq}:{report.head_hash}")

    @audit_app.command("export")
    @friendly_errors
    def audit_export(
        since: str = typer.Option(None, help="ISO 8601 start, inclusive (naive = UTC)"),
        until: str = typer.Option(None, help="ISO 8601 end, exclusive"),
        fmt: str = typer.Option("jsonl", "--format", help="jsonl | csv"),
        out: Path = typer.Option(None, "--out", help="file to write (default: stdout)"),
        db_url: str = typer.Option(None, "--db-url", help=_DB_HELP),
        state_dir: Path = typer.Option(Path("radiolens-state"), "--state-dir", help=_STATE_HELP),
    ) -> None:
        """Export audit rows in a time range as JSON lines or CSV."""
        from radiolens.serve import audit

        engine = _engine(db_url, state_dir, migrate=False)
        try:
            chunks = list(audit.export(engine, fmt, since, until))
        finally:
            engine.dispose()
        if out:
            out.write_text("".join(chunks))
            typer.echo(f"wrote {max(len(chunks) - (fmt == 'csv'), 0)} rows to {out.name}", err=True)
        else:
            sys.stdout.write("".join(chunks))

    db_app = typer.Typer(help="Service database maintenance.", no_args_is_help=True)
    app.add_typer(db_app, name="db")

    @db_app.command("upgrade")
    @friendly_errors
    def db_upgrade(
        db_url: str = typer.Option(None, "--db-url", help=_DB_HELP),
        state_dir: Path = typer.Option(Path("radiolens-state"), "--state-dir", help=_STATE_HELP),
    ) -> None:
        """Apply the Alembic migrations shipped in the package (idempotent)."""
        from radiolens.serve.db import upgrade

        rev = upgrade(_db_url(db_url, state_dir))
        typer.echo(f"database at revision {rev}")
