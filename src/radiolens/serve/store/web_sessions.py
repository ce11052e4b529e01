"""Browser sessions opened by a password sign-in, and the failed-sign-in counter that rate-limits it.

A session is two random 256-bit tokens: the session token (sent back only in an ``HttpOnly`` cookie) and a CSRF
token (readable by the page, which echoes it in the ``X-CSRF-Token`` header of every state-changing request).
Only their sha256 is stored, as for API keys: a copy of the database opens no session. A session ends at sign
out, at its absolute expiry, after an idle period, when its account is revoked or expires, or when the
account's password is changed.

Failed sign-ins are counted in the database (not in process memory), so the limit holds across uvicorn worker
processes and hosts sharing one PostgreSQL database; they are counted by keyed tags, never by the typed username
or the client address in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from radiolens.serve.store.auth import Principal, Role, _aware, is_expired
from radiolens.serve.store.tables import ApiKey, SigninFailure, WebSession

#: Refresh ``last_seen_at`` at most this often (each refresh is a write).
_SEEN_EVERY = timedelta(seconds=60)


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class OpenedSession:
    token: str  # the cookie value, shown once
    csrf_token: str
    expires_at: datetime
    row_id: int


def open_session(session: Session, user_id: int, ttl: timedelta) -> OpenedSession:
    from radiolens.serve.store.audit import utcnow

    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = utcnow()
    row = WebSession(token_hash=_sha(token), csrf_hash=_sha(csrf), user_id=user_id, created_at=now,
                     last_seen_at=now, expires_at=now + ttl)
    session.add(row)
    session.flush()
    return OpenedSession(token, csrf, row.expires_at, row.id)


@dataclass(frozen=True)
class SessionPrincipal(Principal):
    """A principal signed in with a browser session (its row id, and the sha256 of its CSRF token)."""

    session_id: int = 0
    csrf_hash: str = ""

    def csrf_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf_hash, _sha(presented or ""))


def check_session(session: Session, token: str | None, idle: timedelta) -> SessionPrincipal | str:
    """The principal of a session cookie, or why it was refused ("unknown_session", "ended", "expired", "idle",
    "revoked"). Refreshes the idle clock (at most once a minute) in the caller's transaction."""
    from radiolens.serve.store.audit import utcnow

    if not token or len(token) > 128:
        return "unknown_session"
    row = session.scalar(select(WebSession).where(WebSession.token_hash == _sha(token)))
    if row is None:
        return "unknown_session"
    now = utcnow()
    if row.ended_at is not None:
        return "ended"
    if _aware(row.expires_at) <= now:
        return "expired"
    if _aware(row.last_seen_at) + idle <= now:
        return "idle"
    account = session.get(ApiKey, row.user_id)
    if account is None or account.revoked_at is not None or is_expired(account, now):
        return "revoked"
    if now - _aware(row.last_seen_at) >= _SEEN_EVERY:
        row.last_seen_at = now
    return SessionPrincipal(user_id=account.id, role=Role(account.role), session_id=row.id,
                            csrf_hash=row.csrf_hash)


def end_session(session: Session, session_id: int) -> bool:
    """Sign out; returns whether this call ended it."""
    from radiolens.serve.store.audit import utcnow

    row = session.get(WebSession, session_id)
    if row is None or row.ended_at is not None:
        return False
    row.ended_at = utcnow()
    return True


def end_sessions_of(session: Session, user_id: int) -> int:
    """End every open session of an account (a new password must lock out whoever signed in with the old one);
    returns how many were open."""
    from sqlalchemy import update

    from radiolens.serve.store.audit import utcnow

    done = session.execute(update(WebSession).where(WebSession.user_id == user_id, WebSession.ended_at.is_(None))
                           .values(ended_at=utcnow()))
    return int(done.rowcount or 0)


# ---------------------------------------------------------------------- failed sign-ins
def tag(key: bytes, scope: str, value: str) -> str:
    """A keyed, non-reversible tag of a username or address (HMAC-SHA256, 32 hex digits): equal inputs give
    equal tags, so failures can be counted and correlated, but the value cannot be read back or guessed
    without the key."""
    return hmac.new(key, f"radiolens signin {scope}\0{value}".encode(), hashlib.sha256).hexdigest()[:32]


def retry_after(session: Session, scope: str, tag_value: str, limit: int, window: timedelta) -> int:
    """Seconds until one more attempt may be made for this tag (0: allowed now)."""
    from radiolens.serve.store.audit import utcnow

    now = utcnow()
    since = now - window
    q = select(func.count(), func.min(SigninFailure.created_at)).where(
        SigninFailure.scope == scope, SigninFailure.tag == tag_value, SigninFailure.created_at > _cmp(session, since))
    count, oldest = session.execute(q).one()
    if count < limit or oldest is None:
        return 0
    return max(1, int((_aware(oldest) + window - now).total_seconds()) + 1)


def record_failure(session: Session, tags: dict[str, str], window: timedelta) -> list[int]:
    """Count one failure under each (scope, tag); drop failures that left the window. Returns the new rows' ids
    (a sign-in records its failure before the password is checked and takes it back on success, so that
    concurrent attempts cannot pass the limit while their passwords are being verified)."""
    from radiolens.serve.store.audit import utcnow

    now = utcnow()
    session.execute(delete(SigninFailure).where(SigninFailure.created_at <= _cmp(session, now - window)))
    rows = [SigninFailure(created_at=now, scope=scope, tag=value) for scope, value in tags.items()]
    session.add_all(rows)
    session.flush()
    return [row.id for row in rows]


def forget_failures(session: Session, ids: list[int]) -> None:
    """Take back failures recorded by :func:`record_failure` (the attempt succeeded or was not made)."""
    if ids:
        session.execute(delete(SigninFailure).where(SigninFailure.id.in_(ids)))


def clear_failures(session: Session, scope: str, tag_value: str) -> None:
    session.execute(delete(SigninFailure).where(SigninFailure.scope == scope, SigninFailure.tag == tag_value))


def _cmp(session: Session, dt: datetime) -> datetime:
    # SQLite stores naive UTC strings: compare like with like (as audit.rows_between does)
    return dt.replace(tzinfo=None) if session.get_bind().dialect.name == "sqlite" else dt
