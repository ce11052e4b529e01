"""Engine creation (SQLite with WAL, or PostgreSQL) and schema migrations shipped inside the package."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from radiolens.errors import ConfigError
from radiolens.serve.store.state import PRIVATE_DIR, PRIVATE_FILE

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: Execution option asking SQLite for ``BEGIN IMMEDIATE`` (take the write lock up front: single writer).
WRITE_LOCK = "radiolens_write_lock"


class StoreMissing(ConfigError):
    """A read-only command was pointed at a database that does not exist or was never initialised."""

    code = "store_missing"


def make_engine(url: str, read_only: bool = False) -> Engine:
    """``read_only``: never create anything. A SQLite file must already exist (``StoreMissing`` otherwise) and
    is opened with ``mode=ro``; nothing is created for PostgreSQL either way (the server refuses unknown
    databases)."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigError("database URL is not valid (expected e.g. sqlite:///path.db or "
                          "postgresql+psycopg://user@host/db)") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        db = parsed.database
        if read_only:
            path = Path(db or "").expanduser()
            if not db or db == ":memory:" or db.startswith("file:"):
                raise ConfigError("a read-only command needs a SQLite database file")
            if not path.is_file() or path.stat().st_size == 0:
                raise StoreMissing(f"no radiolens database at {path}: nothing to read (give the --state-dir or "
                                   "--db-url the service uses; `radiolens db upgrade` creates a new one)")
            parsed = parsed.set(database=f"file:{path.resolve()}", query={**parsed.query, "mode": "ro", "uri": "true"})
        elif db and db != ":memory:":
            _private_sqlite_file(Path(db).expanduser())
        engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 30})
        _sqlite_pragmas(engine, wal=not read_only)
        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":  # default to psycopg 3, the driver we ship
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=10)
    raise ConfigError(f"unsupported database backend '{backend}' (use sqlite or postgresql)")


def _private_sqlite_file(path: Path) -> None:
    """Create a new database file 0600 before SQLite does (it would use 0644 under the usual umask); SQLite
    gives its WAL and SHM files the database file's mode, so they are private too. An empty file is a valid
    empty SQLite database. Existing files keep their mode (the service's state folder is tightened as a whole)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    except FileExistsError:
        pass
    except OSError:  # e.g. a read-only folder: let SQLite report it when it connects
        pass


def _sqlite_pragmas(engine: Engine, wal: bool = True) -> None:
    # pysqlite's own transaction handling defers BEGIN and cannot do BEGIN IMMEDIATE, so we take it over
    # (the recipe from SQLAlchemy's SQLite dialect docs) and add WAL + foreign keys on every connection.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if wal:  # a read-only connection cannot change the journal mode (radiolens databases are WAL already)
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        immediate = conn.get_execution_options().get(WRITE_LOCK, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def open_existing(url: str, need_head: bool = False) -> Engine:
    """A read-only engine on an initialised radiolens database, else a one-line ``StoreMissing``/``ConfigError``
    (never a traceback, never the URL: it may hold a password). ``need_head``: the schema must be current."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy.exc import DBAPIError

    engine = make_engine(url, read_only=True)
    try:
        with engine.connect() as conn:
            revision = MigrationContext.configure(conn).get_current_revision()
    except DBAPIError as exc:
        engine.dispose()
        raise ConfigError(f"cannot open the database ({type(exc.orig).__name__}): is it reachable, and is it a "
                          "radiolens database?") from None
    if not revision:
        engine.dispose()
        raise StoreMissing("the database has no radiolens schema (empty or never initialised): nothing to read "
                           "(wrong --state-dir or --db-url? `radiolens db upgrade` initialises a new one)")
    if need_head and revision != head_revision():
        engine.dispose()
        raise ConfigError(f"the database schema is at revision {revision}, this radiolens needs "
                          f"{head_revision()}: run `radiolens db upgrade`")
    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest migration shipped in the package (what ``upgrade`` brings a database to)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() or ""


def upgrade(url: str, engine: Engine | None = None) -> str:
    """Bring the schema to the latest revision; returns that revision id."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    cfg = alembic_config(url)
    own = engine is None
    engine = engine or make_engine(url)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision() or ""
    finally:
        if own:
            engine.dispose()
