"""Engine creation (SQLite with WAL, or PostgreSQL) and schema migrations shipped inside the package."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from radiolens.errors import ConfigError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: Execution option asking SQLite for ``BEGIN IMMEDIATE`` (take the write lock up front: single writer).
WRITE_LOCK = "radiolens_write_lock"


def make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigError("database URL is not valid (expected e.g. sqlite:///path.db or "
                          "postgresql+psycopg://user@host/db)") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        db = parsed.database
        if db and db != ":memory:":
            _private_sqlite_file(Path(db).expanduser())
        engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 30})
        _sqlite_pragmas(engine)
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
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError:  # e.g. a read-only folder: let SQLite report it when it connects
        pass


def _sqlite_pragmas(engine: Engine) -> None:
    # pysqlite's own transaction handling defers BEGIN and cannot do BEGIN IMMEDIATE, so we take it over
    # (the recipe from SQLAlchemy's SQLite dialect docs) and add WAL + foreign keys on every connection.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        immediate = conn.get_execution_options().get(WRITE_LOCK, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


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
