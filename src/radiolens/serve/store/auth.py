"""API keys with roles. Keys are random, shown once, stored as sha256 of their secret part.

Format: ``rlk_<key_id>_<secret>``. ``key_id`` is public and indexed (lookup without scanning); the secret
has 256 bits of entropy, so a fast hash is adequate (no password-style stretching needed) and the
comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from radiolens.errors import InputError, NotFoundError
from radiolens.serve.params import ascii_id
from radiolens.serve.store.tables import ApiKey

PREFIX = "rlk"
#: Longest expiry ``--expires-in`` / ``expires_in`` accepts (a typo such as 3000d should not mean "never").
MAX_EXPIRY = timedelta(days=3660)


class LastAdminError(InputError):
    """Revoking this key would leave no active admin key: nobody could manage keys through the API."""

    code = "last_admin"


class Role(StrEnum):
    # A reading room is shared: any clinician may open any prediction (e.g. a colleague's, for a second read),
    # so reads are not restricted to the key that created the prediction. The audit log records who did what.
    clinician = "clinician"  # predict, read any prediction and its images, send feedback
    auditor = "auditor"  # read the audit log, metrics and any prediction
    admin = "admin"  # manage keys


@dataclass(frozen=True)
class Principal:
    """Who made a request: the opaque user id (what the audit log records) and the role."""

    user_id: int
    role: Role


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError as exc:
        raise InputError(f"unknown role '{value}' (use one of: {', '.join(r.value for r in Role)})") from exc


_DURATION = re.compile(r"\s*(\d{1,6})\s*([mhdw])\s*")
_UNIT = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def parse_expiry(value: str | None) -> timedelta | None:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"2w"`` -> timedelta; None/""/"never" -> None (the key never expires).

    Hand-written (a four-unit regex) because neither pydantic's ISO 8601 durations ("P30D") nor
    ``[-][DD]D[,][HH:MM:]SS`` is what an operator types for a key lifetime."""
    if value is None or value.strip().lower() in ("", "never"):
        return None
    m = _DURATION.fullmatch(value.lower())
    if not m:
        raise InputError(f"expiry must be a number and a unit m|h|d|w (e.g. 30d, 12h) or 'never', got {value!r}")
    delta = int(m.group(1)) * _UNIT[m.group(2)]
    if not timedelta(0) < delta <= MAX_EXPIRY:
        raise InputError(f"expiry must be more than 0 and at most {MAX_EXPIRY.days} days")
    return delta


def _aware(dt: datetime | None) -> datetime | None:
    # SQLite hands back naive UTC datetimes, PostgreSQL aware ones.
    return None if dt is None else (dt if dt.tzinfo else dt.replace(tzinfo=UTC))


def is_expired(row: ApiKey, now: datetime | None = None) -> bool:
    exp = _aware(row.expires_at)
    return exp is not None and exp <= (now or datetime.now(UTC))


def key_status(row: ApiKey, now: datetime | None = None) -> str:
    """"revoked", "expired" or "active"."""
    return "revoked" if row.revoked_at is not None else "expired" if is_expired(row, now) else "active"


def create_key(session: Session, role: str | Role, label: str = "",
               expires_in: timedelta | None = None) -> tuple[ApiKey, str]:
    """Create and persist a key; returns the row and the full key (the only time it exists in clear).
    ``expires_in``: the key is refused (401, audited) from ``now + expires_in`` on; None: never expires."""
    from radiolens.serve.store.audit import utcnow

    role = parse_role(str(role))
    if len(label) > 128:
        raise InputError("label is longer than 128 characters")
    if expires_in is not None and not timedelta(0) < expires_in <= MAX_EXPIRY:
        raise InputError(f"expiry must be more than 0 and at most {MAX_EXPIRY.days} days")
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    now = utcnow()
    row = ApiKey(key_id=key_id, key_hash=_hash(secret), role=role.value, label=label, created_at=now,
                 expires_at=None if expires_in is None else now + expires_in)
    session.add(row)
    session.flush()
    return row, f"{PREFIX}_{key_id}_{secret}"


@dataclass(frozen=True)
class AuthFailure:
    """Why a presented key was refused, for the audit log: never the key or any part of it. ``user_id`` is
    the key's user id when the key id exists (wrong secret, revoked, expired), else 0."""

    reason: str  # "missing" | "malformed" | "unknown_key" | "wrong_secret" | "revoked" | "expired"
    user_id: int = 0


def check_key(session: Session, presented: str | None) -> Principal | AuthFailure:
    """The principal for a presented key, or why it was refused."""
    if not presented:
        return AuthFailure("missing")
    parts = presented.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        return AuthFailure("malformed")
    row = session.scalar(select(ApiKey).where(ApiKey.key_id == parts[1][:32]))
    # Compare even when the row is missing so timing does not reveal which key ids exist.
    expected = row.key_hash if row is not None else _hash("")
    ok = hmac.compare_digest(expected, _hash(parts[2]))
    if row is None:
        return AuthFailure("unknown_key")
    if not ok:
        return AuthFailure("wrong_secret", row.id)
    if (reason := inactive_reason(row)) is not None:
        return AuthFailure(reason, row.id)
    return Principal(user_id=row.id, role=Role(row.role))


def inactive_reason(row) -> str | None:
    """"revoked" or "expired" when a key or sign-in account can no longer be used, else None (one rule for
    API keys and password accounts, which share the table)."""
    if row.revoked_at is not None:
        return "revoked"
    return "expired" if is_expired(row) else None


def authenticate(session: Session, presented: str) -> Principal | None:
    """The principal for a presented key, or None (unknown, malformed, revoked, expired or wrong secret)."""
    out = check_key(session, presented)
    return out if isinstance(out, Principal) else None


def revoke(session: Session, key_id_or_id: str) -> ApiKey:
    return revoke_key(session, key_id_or_id)[0]


def revoke_key(session: Session, key_id_or_id: str) -> tuple[ApiKey, bool]:
    """Revoke a key; returns the row and whether this call revoked it (False: it was already revoked).

    Refuses (``LastAdminError``) to revoke the last active admin key. Race-safe when called inside an
    ``audit.writer`` transaction: the chain's write lock (SQLite ``BEGIN IMMEDIATE``, PostgreSQL advisory
    lock) is taken before the admins are counted, so two concurrent revocations of the last two admin keys
    are serialised and the second one sees the first."""
    from radiolens.serve.store.audit import lock_chain, utcnow

    lock_chain(session)
    q = select(ApiKey).where(ApiKey.key_id == key_id_or_id)
    row = session.scalar(q)
    user_id = ascii_id(key_id_or_id)  # None for non-ASCII digits or beyond int64 (the driver would overflow)
    if row is None and user_id is not None:
        row = session.get(ApiKey, user_id)
    if row is None:
        raise NotFoundError("no such key (give the key id shown by `radiolens users list`)")
    if row.revoked_at is not None:
        return row, False
    now = utcnow()
    if row.role == Role.admin.value and key_status(row, now) == "active" and \
            not [r for r in active_admins(session, now) if r.id != row.id]:
        raise LastAdminError(f"refused: key {row.key_id} is the last active admin key; revoking it would leave "
                             "nobody able to manage keys (create another admin key first: "
                             "`radiolens users create --role admin`)")
    row.revoked_at = now
    return row, True


def active_admins(session: Session, now: datetime | None = None) -> list[ApiKey]:
    rows = session.scalars(select(ApiKey).where(ApiKey.role == Role.admin.value, ApiKey.revoked_at.is_(None)))
    return [r for r in rows if not is_expired(r, now)]


def create_key_audited(session: Session, role: str | Role, label: str, actor_user_id: int,
                       actor_role: str, expires_in: timedelta | None = None) -> tuple[ApiKey, str]:
    """``create_key`` plus its audit row, in the caller's ``audit.writer`` transaction."""
    from radiolens.serve.store import audit

    row, key = create_key(session, role, label, expires_in)
    audit.append(session, audit.key_event("key_created", actor_user_id, actor_role, row.id, row.role,
                                          expires_at=row.expires_at))
    return row, key


def revoke_key_audited(session: Session, key_id_or_id: str, actor_user_id: int, actor_role: str) -> ApiKey:
    """``revoke`` plus its audit row (only when the key was active), in the caller's ``audit.writer``."""
    from radiolens.serve.store import audit

    row, changed = revoke_key(session, key_id_or_id)
    if changed:
        session.flush()
        audit.append(session, audit.key_event("key_revoked", actor_user_id, actor_role, row.id, row.role))
    return row


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))
