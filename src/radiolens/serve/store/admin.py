"""Store operations an administrator runs outside the service (``radiolens users|audit|db``): each opens the
store the way its operation needs and closes it again.

* Creating a key may create the store: the state folder's own SQLite database is made private first, then
  migrated.
* Every other operation needs a store that exists and is initialised (``StoreMissing`` otherwise, never an
  empty database made by a typo); read-only ones never write, revoking opens it for writing.

Keys and audit rows are written as the command-line actor (``audit.CLI_USER_ID`` / ``audit.CLI_ROLE``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from radiolens.serve.config import ServeSettings
from radiolens.serve.store import audit
from radiolens.serve.store.auth import create_key_audited, key_status, list_keys, revoke_key_audited
from radiolens.serve.store.db import make_engine, open_existing, session_factory, upgrade
from radiolens.serve.store.state import secure_state_dir

#: The database URL when none is given (else the SQLite file ``radiolens.db`` in the state folder).
DB_URL_ENV = "RADIOLENS_DB_URL"


@dataclass(frozen=True)
class StoreLocation:
    """Where the store is: an SQLAlchemy URL (given, or from :data:`DB_URL_ENV`) or the state folder's SQLite."""

    db_url: str | None
    state_dir: Path

    @property
    def given_url(self) -> str:
        return self.db_url or os.environ.get(DB_URL_ENV, "")

    def url(self) -> str:
        return ServeSettings(model_path=Path("."), db_url=self.given_url, state_dir=self.state_dir).resolved_db_url()


@contextmanager
def disposing(engine: Engine) -> Iterator[Engine]:
    """``with disposing(engine) as e:`` the engine's pool is closed at the end (a command's one use)."""
    try:
        yield engine
    finally:
        engine.dispose()


def migrated_engine(where: StoreLocation) -> Engine:
    """An engine on a migrated store, created when missing (the state folder made private first)."""
    url = where.url()
    if not where.given_url:  # the state folder's own SQLite database
        secure_state_dir(where.state_dir)
    engine = make_engine(url)
    upgrade(url, engine)
    return engine


def existing_engine(where: StoreLocation, *, need_head: bool = False, writable: bool = False) -> Engine:
    """An engine on a store that exists and is initialised (at the head revision when ``need_head`` or
    ``writable``); never creates one."""
    url = where.url()
    engine = open_existing(url, need_head=need_head or writable)
    if not writable:
        return engine
    engine.dispose()
    return make_engine(url)


@dataclass(frozen=True)
class KeyListing:
    """One API key as ``users list`` shows it: never the key, only its id and what it may do."""

    user_id: int
    key_id: str
    role: str
    status: str
    expires_at: datetime | None
    label: str
    username: str = ""  # a sign-in account's username ("" for an API key)


@dataclass(frozen=True)
class CreatedKey:
    listing: KeyListing
    key: str  # shown once; only its hash is stored


def _listing(row) -> KeyListing:
    return KeyListing(row.id, row.key_id, row.role, key_status(row), row.expires_at, row.label, row.username or "")


def create_user(where: StoreLocation, role: str, label: str = "", expires_in: timedelta | None = None) -> CreatedKey:
    """Create a key (and the store when missing); audited as the command-line actor."""
    with disposing(migrated_engine(where)) as engine, audit.writer(session_factory(engine)) as s:
        row, key = create_key_audited(s, role, label, audit.CLI_USER_ID, audit.CLI_ROLE, expires_in)
        return CreatedKey(_listing(row), key)


def add_account(where: StoreLocation, username: str, password: str, role: str, label: str = "",
                expires_in: timedelta | None = None) -> KeyListing:
    """Add a password sign-in account (and the store when missing); audited as the command-line actor, with
    the account's user id and role (never the username or anything of the password)."""
    from radiolens.serve.store.accounts import create_account

    with disposing(migrated_engine(where)) as engine, audit.writer(session_factory(engine)) as s:
        row = create_account(s, username, password, role, label, expires_in)
        audit.append(s, audit.key_event("account_created", audit.CLI_USER_ID, audit.CLI_ROLE, row.id, row.role,
                                        expires_at=row.expires_at))
        return _listing(row)


def set_account_password(where: StoreLocation, username: str, password: str) -> tuple[KeyListing, int]:
    """Replace an account's password and end its open browser sessions (audited as ``password_set``); returns
    the account and how many sessions were ended."""
    from radiolens.serve.store.accounts import set_password

    with disposing(existing_engine(where, writable=True)) as engine, audit.writer(session_factory(engine)) as s:
        row, ended = set_password(s, username, password)
        s.flush()
        audit.append(s, audit.key_event("password_set", audit.CLI_USER_ID, audit.CLI_ROLE, row.id, row.role))
        return _listing(row), ended


def list_users(where: StoreLocation) -> list[KeyListing]:
    with disposing(existing_engine(where, need_head=True)) as engine, Session(engine) as s:
        return [_listing(r) for r in list_keys(s)]


def revoke_user(where: StoreLocation, key_id_or_id: str) -> KeyListing:
    """Revoke a key (``LastAdminError`` for the last active admin key); audited when it was active."""
    with disposing(existing_engine(where, writable=True)) as engine, audit.writer(session_factory(engine)) as s:
        return _listing(revoke_key_audited(s, key_id_or_id, audit.CLI_USER_ID, audit.CLI_ROLE))


def verify_audit(where: StoreLocation, *, expect_head: str | None = None,
                 artefacts: bool = True) -> audit.VerifyReport:
    """The chain, the stored rows and (``artefacts``) every stored file of ``STATE_DIR/artefacts``, checked;
    ``expect_head`` is a ``SEQ:HASH`` recorded outside the database earlier."""
    expected = audit.parse_head(expect_head) if expect_head else None  # a malformed one: before opening anything
    with disposing(existing_engine(where)) as engine:
        return audit.verify(engine, expect_head=expected,
                            artefact_dir=where.state_dir / "artefacts" if artefacts else None)


def export_audit(where: StoreLocation, fmt: str, since: str | None = None, until: str | None = None) -> list[str]:
    """Audit rows in ``[since, until)`` as JSON lines or CSV (a header line first), as text chunks."""
    with disposing(existing_engine(where)) as engine:
        return list(audit.export(engine, fmt, since, until))


def upgrade_store(where: StoreLocation) -> str:
    """Apply the shipped migrations (idempotent); returns the revision the database is at."""
    return upgrade(where.url())
