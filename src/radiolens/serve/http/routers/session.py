"""Password sign-in for readers at a browser: ``POST /v1/session`` opens a session (cookies), ``DELETE`` ends it.

What the audit log records of a sign-in, and why:

* success (``signin``) and sign out (``signout``): the account's opaque user id and role;
* a refusal (``signin_failed``): the reason, the account's user id when the username exists, and keyed tags
  (``serve.store.web_sessions.tag``) of the typed username and of the client address. The typed username of an
  unknown account is never written in clear: it is often a password typed into the wrong field, or a real
  person's name, and the audit log is append-only, so nothing written there could ever be removed. The tag still
  lets an auditor see that one name (or one address) was tried many times. The password is never recorded;
* a refusal by the rate limit (``signin_limited``): which limit (username or address) and the same tags.

Rate limits: ``signin_max_failures_user`` failures per username and ``signin_max_failures_address`` per client
address within ``signin_window_s`` (429 with Retry-After until the oldest leaves the window). The username limit
applies to unknown usernames too, so the answers do not tell which accounts exist; a successful sign-in clears
its username's failures. Behind a reverse proxy, start uvicorn with ``--proxy-headers`` (and its trusted
addresses) so the client address is the browser's, not the proxy's.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import timedelta

import anyio
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from radiolens.serve.http.authn import CSRF_COOKIE, SESSION_COOKIE
from radiolens.serve.http.deps import current_principal, get_service
from radiolens.serve.http.error_actions import error_body
from radiolens.serve.http.schemas import ErrorResponse, SessionOut, SigninIn
from radiolens.serve.runtime.service import Service
from radiolens.serve.store import audit
from radiolens.serve.store.accounts import SigninFailure, normalise_username, verify_password
from radiolens.serve.store.auth import Principal
from radiolens.serve.store.tables import ApiKey
from radiolens.serve.store.web_sessions import (
    SessionPrincipal,
    clear_failures,
    end_session,
    forget_failures,
    open_session,
    record_failure,
    retry_after,
    tag,
)

router = APIRouter(prefix="/v1", tags=["session"])
_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 403, 422)} | {
    429: {"model": ErrorResponse, "description": "too many failed sign-ins for this username or address: wait "
          "Retry-After seconds"}}
_FAILED = "wrong username or password"


def _tag_key(request: Request, service: Service) -> bytes:
    """The key of the username/address tags, derived from the service's secret (stable across restarts and
    processes, so tags correlate and the database-held counters work with several workers)."""
    key = getattr(request.app.state, "signin_tag_key", None)
    if key is None:
        key = hmac.new(service.settings.resolved_secret().encode("utf-8"), b"radiolens signin tags",
                       hashlib.sha256).digest()
        request.app.state.signin_tag_key = key
    return key


def _client_tags(request: Request, service: Service, username: str) -> dict[str, str]:
    key = _tag_key(request, service)
    try:
        name = normalise_username(username)
    except Exception:  # an impossible username is counted under its own tag
        name = username
    address = request.client.host if request.client else "unknown"
    return {"user": tag(key, "user", name), "addr": tag(key, "addr", address)}


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _account_id(service: Service, username: str) -> int:
    try:
        name = normalise_username(username)
    except Exception:
        return 0
    with Session(service.engine) as s:
        return s.scalar(select(ApiKey.id).where(ApiKey.username == name, ApiKey.password_hash.is_not(None))) or 0


def _signin(request: Request, service: Service, body: SigninIn) -> JSONResponse:
    settings = service.settings
    window = timedelta(seconds=settings.signin_window_s)
    tags = _client_tags(request, service, body.username)
    limits = {"user": settings.signin_max_failures_user, "addr": settings.signin_max_failures_address}
    # The attempt counts as a failure before its password is checked (taken back if it succeeds or is refused
    # for the limit): concurrent attempts see each other, so a burst cannot pass the limit while argon2 runs.
    with Session(service.engine) as s, s.begin():
        pending = record_failure(s, tags, window)
    with Session(service.engine) as s:  # this attempt's own row is counted: allowed while at most the limit
        waits = {scope: retry_after(s, scope, tags[scope], limits[scope] + 1, window) for scope in tags}
    limited = {scope: w for scope, w in waits.items() if w}
    if limited:
        with Session(service.engine) as s, s.begin():
            forget_failures(s, pending)
        scope, wait = max(limited.items(), key=lambda kv: kv[1])
        service.audit_access(_account_id(service, body.username), "", "session", event=audit.SIGNIN_LIMITED,
                             limit=scope, username_tag=tags["user"], address_tag=tags["addr"])
        return JSONResponse(error_body(429, "too_many_signins", f"too many failed sign-ins: try again in {wait} s"),
                            status_code=429, headers={"Retry-After": str(wait)})
    t0 = time.perf_counter()
    with Session(service.engine) as s, s.begin():  # commits a rehash of a stale hash
        out = verify_password(s, body.username, body.password)
    if isinstance(out, SigninFailure):  # the failure recorded above stays
        with audit.writer(service.sessions) as s:
            audit.append(s, audit.AuditEvent(audit.SIGNIN_FAILED, out.user_id, "", "", "", "", "",
                                             {"resource": "session", "reason": out.reason,
                                              "username_tag": tags["user"], "address_tag": tags["addr"]},
                                             (time.perf_counter() - t0) * 1000.0))
        message = _FAILED if out.reason in ("unknown_user", "wrong_password") else \
            "this account is revoked or expired: ask your radiolens administrator"
        return JSONResponse(error_body(401, "signin_failed", message), status_code=401)
    ttl = timedelta(seconds=settings.session_ttl_s)
    with audit.writer(service.sessions) as s:
        opened = open_session(s, out.user_id, ttl)
        forget_failures(s, pending)
        clear_failures(s, "user", tags["user"])
        audit.append(s, audit.AuditEvent(audit.SIGNIN, out.user_id, out.role.value, "", "", "", "",
                                         {"resource": "session", "session_id": opened.row_id,
                                          "address_tag": tags["addr"]}, (time.perf_counter() - t0) * 1000.0))
    body_out = SessionOut(user_id=out.user_id, role=out.role.value, expires_at=opened.expires_at,
                          csrf_token=opened.csrf_token)
    resp = JSONResponse(body_out.model_dump(mode="json"), headers={"Cache-Control": "no-store"})
    secure = _secure(request)
    resp.set_cookie(SESSION_COOKIE, opened.token, max_age=settings.session_ttl_s, path="/", secure=secure,
                    httponly=True, samesite="strict")
    resp.set_cookie(CSRF_COOKIE, opened.csrf_token, max_age=settings.session_ttl_s, path="/", secure=secure,
                    httponly=False, samesite="strict")  # the page reads it and echoes it in X-CSRF-Token
    return resp


@router.post("/session", response_model=SessionOut, responses=_ERRORS)
async def sign_in(request: Request, body: SigninIn, service: Service = Depends(get_service)):
    """Sign in with a username and password (accounts: ``radiolens users add``); sets the session cookie
    (HttpOnly, SameSite=Strict, Secure over TLS) and the CSRF cookie. API keys need no session."""
    # argon2 takes tens of milliseconds of CPU by design: off the event loop
    return await anyio.to_thread.run_sync(_signin, request, service, body)


@router.delete("/session", status_code=204, response_class=Response, responses=_ERRORS)
def sign_out(request: Request, principal: Principal = Depends(current_principal),
             service: Service = Depends(get_service)) -> Response:
    """End this browser session (an API-key caller has none: nothing ends). The cookies are cleared."""
    ended = False
    if isinstance(principal, SessionPrincipal):
        with audit.writer(service.sessions) as s:
            ended = end_session(s, principal.session_id)
            audit.append(s, audit.AuditEvent(audit.SIGNOUT, principal.user_id, principal.role.value, "", "", "", "",
                                             {"resource": "session", "session_id": principal.session_id,
                                              "ended": ended}, 0.0))
    else:
        service.audit_access(principal.user_id, principal.role.value, "session", event=audit.SIGNOUT, ended=False)
    resp = Response(status_code=204)
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        resp.delete_cookie(name, path="/", secure=_secure(request), httponly=name == SESSION_COOKIE,
                           samesite="strict")
    return resp
