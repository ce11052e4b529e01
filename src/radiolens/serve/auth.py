"""API keys with roles. Keys are random, shown once, stored as sha256 of their secret part.

Format: ``rlk_<key_id>_<secret>``. ``key_id`` is public and indexed (lookup without scanning); the secret
has 256 bits of entropy, so a fast hash is adequate (no password-style stretching needed) and the
comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from radiolens.errors import InputError, NotFoundError
from radiolens.serve.params import ascii_id
from radiolens.serve.tables import ApiKey

PREFIX = "rlk"


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


def create_key(session: Session, role: str | Role, label: str = "") -> tuple[ApiKey, str]:
    """Create and persist a key; returns the row and the full key (the only time it exists in clear)."""
    from radiolens.serve.audit import utcnow

    role = parse_role(str(role))
    if len(label) > 128:
        raise InputError("label is longer than 128 characters")
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    row = ApiKey(key_id=key_id, key_hash=_hash(secret), role=role.value, label=label, created_at=utcnow())
    session.add(row)
    session.flush()
    return row, f"{PREFIX}_{key_id}_{secret}"


def authenticate(session: Session, presented: str) -> Principal | None:
    """The principal for a presented key, or None (unknown, malformed, revoked or wrong secret)."""
    parts = presented.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.key_id == parts[1]))
    # Compare even when the row is missing so timing does not reveal which key ids exist.
    expected = row.key_hash if row is not None else _hash("")
    ok = hmac.compare_digest(expected, _hash(parts[2]))
    if row is None or not ok or row.revoked_at is not None:
        return None
    return Principal(user_id=row.id, role=Role(row.role))


def revoke(session: Session, key_id_or_id: str) -> ApiKey:
    return revoke_key(session, key_id_or_id)[0]


def revoke_key(session: Session, key_id_or_id: str) -> tuple[ApiKey, bool]:
    """Revoke a key; returns the row and whether this call revoked it (False: it was already revoked)."""
    from radiolens.serve.audit import utcnow

    q = select(ApiKey).where(ApiKey.key_id == key_id_or_id)
    row = session.scalar(q)
    user_id = ascii_id(key_id_or_id)  # None for non-ASCII digits or beyond int64 (the driver would overflow)
    if row is None and user_id is not None:
        row = session.get(ApiKey, user_id)
    if row is None:
        raise NotFoundError("no such key (give the key id shown by `radiolens users list`)")
    if row.revoked_at is not None:
        return row, False
    row.revoked_at = utcnow()
    return row, True


def create_key_audited(session: Session, role: str | Role, label: str, actor_user_id: int,
                       actor_role: str) -> tuple[ApiKey, str]:
    """``create_key`` plus its audit row, in the caller's ``audit.writer`` transaction."""
    from radiolens.serve import audit

    row, key = create_key(session, role, label)
    audit.append(session, audit.key_event("key_created", actor_user_id, actor_role, row.id, row.role))
    return row, key


def revoke_key_audited(session: Session, key_id_or_id: str, actor_user_id: int, actor_role: str) -> ApiKey:
    """``revoke`` plus its audit row (only when the key was active), in the caller's ``audit.writer``."""
    from radiolens.serve import audit

    row, changed = revoke_key(session, key_id_or_id)
    if changed:
        session.flush()
        audit.append(session, audit.key_event("key_revoked", actor_user_id, actor_role, row.id, row.role))
    return row


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))
