"""Backup and restore of the service database (predictions, feedback, keys, the audit log) with the databases'
own tools, each backup recording the audit chain head it contains.

Why these tools: SQLite's online backup API (``sqlite3.Connection.backup``) and PostgreSQL's ``pg_dump`` both
take a consistent snapshot while the service keeps writing, which a file copy of a live database (with its
WAL) does not. Why the head: a restored database whose chain verifies could still be an older backup, or one
rewritten consistently; ``radiolens audit verify --expect-head SEQ:HASH`` with the head recorded at backup
time proves the restored chain holds exactly what was backed up.

A backup is two files: the database copy (a SQLite file, or a ``pg_dump`` custom-format archive) and
``<file>.manifest.json`` beside it (dialect, schema revision, chain head, the copy's sha256). The secrets (the
de-identification secret, the database password) are never in either, and neither are the files of the state
folder (artefacts, the DICOM spool): see docs/deploy.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from radiolens import __version__
from radiolens.errors import ConfigError, InputError
from radiolens.serve.store.admin import StoreLocation, disposing, existing_engine
from radiolens.serve.store.db import make_engine
from radiolens.serve.store.state import PRIVATE_FILE, secure_state_dir

FORMAT = "radiolens-db-backup"
FORMAT_VERSION = 1
MANIFEST_SUFFIX = ".manifest.json"


class BackupError(ConfigError):
    """A backup cannot be written or restored (the tool is missing, the target is not empty, the file differs
    from its manifest)."""

    code = "backup_failed"


@dataclass(frozen=True)
class Manifest:
    """What a backup holds: enough to restore it into the right kind of database and to prove afterwards that
    the restored audit chain is the one backed up."""

    format: str
    format_version: int
    dialect: str
    revision: str
    head_seq: int
    head_hash: str
    created_at: str
    file_sha256: str
    radiolens_version: str

    @property
    def head(self) -> str:
        """``SEQ:HASH``, as ``radiolens audit head`` prints it and ``audit verify --expect-head`` takes it."""
        return f"{self.head_seq}:{self.head_hash}"


def manifest_path(backup: Path) -> Path:
    return backup.with_name(backup.name + MANIFEST_SUFFIX)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _state(conn) -> tuple[str, int, str]:
    """(schema revision, head seq, head hash) as one connection (one snapshot) sees them."""
    revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar() or ""
    head = conn.execute(text("SELECT seq, row_hash FROM audit_head WHERE id = 1")).one_or_none()
    if head is None:
        raise BackupError("the database has no audit_head (tampered with): run `radiolens audit verify`; "
                          "nothing was backed up")
    return revision, int(head[0]), str(head[1])


def _private_new_file(path: Path) -> None:
    """Refuse to overwrite: a backup is evidence, and a typo must not replace an earlier one."""
    if path.exists() or manifest_path(path).exists():
        raise BackupError(f"{path.name} (or its manifest) already exists: choose a new --out file")
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))


def _tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise BackupError(f"{name} not found: install the PostgreSQL client tools (of the server's major version "
                          "or newer) on this host")
    return found


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq URI for ``pg_dump``/``pg_restore`` without the password (a command line is visible to every
    local user in ``ps``), and the environment that carries the password instead."""
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    return parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False), env


def _run(cmd: list[str], env: dict[str, str] | None, what: str) -> None:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        # pg_dump/pg_restore messages name tables and objects, never row values; the last line says why
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise BackupError(f"{what} failed (exit {done.returncode}): {last}")


def _backup_sqlite(url: str, out: Path) -> tuple[str, int, str]:
    source = Path(make_url(url).database or "")
    src = sqlite3.connect(f"file:{source.resolve()}?mode=ro", uri=True)
    dst = sqlite3.connect(out)
    try:
        src.backup(dst)  # one step (pages=-1): the copy is one consistent snapshot, WAL content included
        dst.execute("PRAGMA journal_mode=DELETE")  # a self-contained file: no -wal/-shm beside it
    finally:
        src.close()
        dst.close()
    engine = make_engine(f"sqlite:///{out.resolve()}", read_only=True)
    try:
        with engine.connect() as conn:
            return _state(conn)
    finally:
        engine.dispose()


def _backup_postgres(url: str, engine: Engine, out: Path) -> tuple[str, int, str]:
    uri, env = _libpq(url)
    pg_dump = _tool("pg_dump")
    # The head must be the one inside the dump: read it in a transaction whose snapshot pg_dump then uses.
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
        snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
        state = _state(conn)
        _run([pg_dump, "--format=custom", f"--snapshot={snapshot}", f"--file={out}", f"--dbname={uri}"], env,
             "pg_dump")
    return state


def backup(where: StoreLocation, out: Path) -> Manifest:
    """Write a consistent copy of the store to ``out`` (never overwritten) and its manifest beside it; the
    service may keep running meanwhile."""
    out = Path(out)
    # any revision: the backup before an upgrade is taken by the new version, on the old schema
    with disposing(existing_engine(where)) as engine:
        dialect = engine.dialect.name
        _private_new_file(out)
        try:
            if dialect == "sqlite":
                revision, seq, digest = _backup_sqlite(where.url(), out)
            else:
                revision, seq, digest = _backup_postgres(where.url(), engine, out)
        except BaseException:
            out.unlink(missing_ok=True)
            raise
    manifest = Manifest(FORMAT, FORMAT_VERSION, dialect, revision, seq, digest,
                        datetime.now(UTC).isoformat(timespec="seconds"), _sha256(out), __version__)
    path = manifest_path(out)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(asdict(manifest), fh, indent=2)
        fh.write("\n")
    return manifest


def read_manifest(backup_file: Path) -> Manifest:
    """The manifest beside ``backup_file``, checked against the file (sha256) before anything is restored."""
    backup_file = Path(backup_file)
    path = manifest_path(backup_file)
    if not backup_file.is_file():
        raise InputError(f"backup file not found: {backup_file.name}")
    try:
        manifest = Manifest(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise InputError(f"{path.name} is missing: a backup is restored with the manifest written beside it") from None
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path.name} is not a radiolens backup manifest ({type(exc).__name__})") from None
    if manifest.format != FORMAT or manifest.format_version != FORMAT_VERSION:
        raise InputError(f"{path.name}: unknown backup format {manifest.format} v{manifest.format_version}")
    if _sha256(backup_file) != manifest.file_sha256:
        raise BackupError(f"{backup_file.name} does not match the sha256 in its manifest (damaged or changed "
                          "since the backup): not restored")
    return manifest


def _restore_sqlite(backup_file: Path, where: StoreLocation) -> None:
    target = Path(make_url(where.url()).database or "")
    if not where.given_url:
        secure_state_dir(where.state_dir)
    for p in (target, target.with_name(target.name + "-wal")):
        if p.exists() and p.stat().st_size > 0:
            raise BackupError(f"{p.name} already exists: restore into a new --state-dir, or stop the service and "
                              "move the old database away first")
    make_engine(f"sqlite:///{target}").dispose()  # creates the file 0600 (mode kept by SQLite for -wal/-shm)
    src = sqlite3.connect(f"file:{backup_file.resolve()}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=WAL")  # as the service runs it
    finally:
        src.close()
        dst.close()


def _restore_postgres(backup_file: Path, where: StoreLocation) -> None:
    url = where.url()
    try:
        with disposing(make_engine(url)) as engine, engine.connect() as conn:
            tables = conn.execute(text("SELECT count(*) FROM information_schema.tables "
                                       "WHERE table_schema = current_schema()")).scalar_one()
    except DBAPIError as exc:  # never the URL: it may hold a password
        raise BackupError(f"cannot open the target database ({type(exc.orig).__name__}): create it first "
                          "(createdb) and check --db-url") from None
    if tables:
        raise BackupError("the target database is not empty: restore into a new, empty database (createdb) and "
                          "point the service at it")
    uri, env = _libpq(url)
    # one transaction: a failed restore leaves the database empty; --no-owner: objects belong to the role
    # that restores (the service's), whoever owned them on the source server
    _run([_tool("pg_restore"), "--exit-on-error", "--single-transaction", "--no-owner", f"--dbname={uri}",
          str(backup_file)], env, "pg_restore")


def restore(backup_file: Path, where: StoreLocation) -> Manifest:
    """Restore a backup into a new store (an absent SQLite file, an empty PostgreSQL database); returns its
    manifest, whose ``head`` is what ``radiolens audit verify --expect-head`` checks next."""
    backup_file = Path(backup_file)
    manifest = read_manifest(backup_file)
    dialect = make_url(where.url()).get_backend_name()
    if dialect != manifest.dialect:
        raise BackupError(f"this is a {manifest.dialect} backup; the target is {dialect} (give the matching "
                          "--db-url)")
    if dialect == "sqlite":
        _restore_sqlite(backup_file, where)
    else:
        _restore_postgres(backup_file, where)
    with disposing(existing_engine(where)) as engine, engine.connect() as conn:
        revision, seq, digest = _state(conn)
    if (revision, seq, digest) != (manifest.revision, manifest.head_seq, manifest.head_hash):
        raise BackupError("the restored database's audit head or revision differs from the backup manifest: "
                          "run `radiolens audit verify`")
    return manifest
