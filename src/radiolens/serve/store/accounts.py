"""Reader sign-in accounts: a username and an argon2id password hash on a credential row (``api_keys``).

Passwords are hashed with argon2-cffi's ``PasswordHasher`` (argon2id, its current RFC 9106 parameters): a
maintained implementation of a memory-hard hash, because a password has far less entropy than an API key
and a stolen database must not make guessing cheap. When the hasher's parameters change (a newer argon2-cffi,
or stronger settings here), the stored hash is replaced at the reader's next successful sign-in
(``check_needs_rehash``). An unknown username is checked against a dummy hash so that the time taken does
not tell which usernames exist.

An account's id is its user id in the audit log, exactly like an API key's; its role, revocation and expiry are
the key machinery's (``radiolens users list|revoke`` handle both).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from radiolens.errors import InputError
from radiolens.serve.store.auth import MAX_EXPIRY, Principal, Role, inactive_reason, parse_role
from radiolens.serve.store.tables import ApiKey

#: Usernames: what a hospital directory uses (letters, digits, ``.``, ``_``, ``-``, ``@``), lower-cased.
USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
MIN_PASSWORD, MAX_PASSWORD = 12, 1024  # NIST SP 800-63B: at least 8, allow long passphrases; 12 here


@lru_cache(maxsize=1)
def hasher() -> PasswordHasher:
    return PasswordHasher()  # argon2id with the library's recommended parameters


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return hasher().hash(secrets.token_urlsafe(16))


def normalise_username(name: str) -> str:
    name = name.strip()
    if not re.fullmatch(USERNAME_PATTERN, name):
        raise InputError("username must be 1-64 characters: letters, digits, '.', '_', '-' or '@' (starting with "
                         "a letter or digit)")
    return name.lower()


def check_password_rules(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InputError(f"password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters long")


def create_account(session: Session, username: str, password: str, role: str | Role, label: str = "",
                   expires_in: timedelta | None = None) -> ApiKey:
    """Add a sign-in account (``InputError`` when the username is taken or the password too short)."""
    from radiolens.serve.store.audit import utcnow

    name = normalise_username(username)
    check_password_rules(password)
    role = parse_role(str(role))
    if len(label) > 128:
        raise InputError("label is longer than 128 characters")
    if expires_in is not None and not timedelta(0) < expires_in <= MAX_EXPIRY:
        raise InputError(f"expiry must be more than 0 and at most {MAX_EXPIRY.days} days")
    if session.scalar(select(ApiKey.id).where(ApiKey.username == name)) is not None:
        raise InputError(f"username '{name}' is taken")
    now = utcnow()
    row = ApiKey(key_id=secrets.token_hex(8), key_hash="", role=role.value, label=label, created_at=now,
                 expires_at=None if expires_in is None else now + expires_in, username=name,
                 password_hash=hasher().hash(password))
    session.add(row)
    session.flush()
    return row


@dataclass(frozen=True)
class SigninFailure:
    """Why a sign-in was refused, for the audit log: never the password. ``user_id``: the account's id when the
    username exists, else 0 (the username itself is not recorded: see ``radiolens.serve.http.signin``)."""

    reason: str  # "unknown_user" | "wrong_password" | "revoked" | "expired"
    user_id: int = 0


def verify_password(session: Session, username: str, password: str) -> Principal | SigninFailure:
    """The principal for a username and password (rehashing a stale hash), or why it was refused. The caller's
    transaction commits a rehash."""
    try:
        name = normalise_username(username)
    except InputError:
        name = None
    row = session.scalar(select(ApiKey).where(ApiKey.username == name)) if name else None
    stored = row.password_hash if row is not None and row.password_hash else _dummy_hash()
    try:
        ok = hasher().verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    if row is None or not row.password_hash:
        return SigninFailure("unknown_user")
    if not ok:
        return SigninFailure("wrong_password", row.id)
    if (reason := inactive_reason(row)) is not None:
        return SigninFailure(reason, row.id)
    if hasher().check_needs_rehash(row.password_hash):
        row.password_hash = hasher().hash(password)
    return Principal(user_id=row.id, role=Role(row.role))


def set_password(session: Session, username: str, password: str) -> tuple[ApiKey, int]:
    """Replace an account's password and end its open browser sessions (whoever knew the old password is signed
    out); returns the account and how many sessions were ended. ``InputError`` for an unknown username or a
    too short password."""
    from radiolens.serve.store.web_sessions import end_sessions_of

    check_password_rules(password)
    row = session.scalar(select(ApiKey).where(ApiKey.username == normalise_username(username)))
    if row is None or not row.password_hash:
        raise InputError("no such account")
    row.password_hash = hasher().hash(password)
    return row, end_sessions_of(session, row.id)
