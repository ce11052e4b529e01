"""Who is calling: pluggable authenticators, tried in order on every authenticated request.

An ``Authenticator`` looks at the request and answers ``None`` (no credential of its kind was presented), an
``AuthFailure`` (one was presented and refused: audited as ``auth_failed`` with its reason) or a ``Principal``.
The service installs two (``default_authenticators``):

* ``ApiKeyAuthenticator``: ``Authorization: Bearer rlk_...`` or ``X-API-Key`` (machines, scripts, gateways);
* ``SessionCookieAuthenticator``: the ``radiolens_session`` cookie of a password sign-in (``POST /v1/session``),
  whose state-changing requests must also carry the session's CSRF token in ``X-CSRF-Token``.

Single sign-on plugs in here: an OIDC authenticator validates the provider's bearer token (signature against
the provider's JWKS, issuer, audience, expiry), maps a claim (e.g. ``preferred_username``) to an account row in
``api_keys`` (so the audit log records the same opaque user id as for a password sign-in) and returns that
principal; add it with ``app.state.authenticators.insert(0, ...)``. A browser OIDC login (authorization code
flow) ends like ``POST /v1/session``: ``open_session`` for the mapped account, and the same cookies.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

from fastapi import Request
from sqlalchemy.orm import Session

from radiolens.serve.runtime.service import Service
from radiolens.serve.store.auth import AuthFailure, Principal, check_key
from radiolens.serve.store.web_sessions import check_session

SESSION_COOKIE, CSRF_COOKIE, CSRF_HEADER = "radiolens_session", "radiolens_csrf", "x-csrf-token"
#: Methods that change state: a cookie-authenticated one needs the CSRF token.
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Authenticator(Protocol):
    def __call__(self, request: Request, service: Service) -> Principal | AuthFailure | None: ...


def presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or None


class ApiKeyAuthenticator:
    def __call__(self, request: Request, service: Service) -> Principal | AuthFailure | None:
        if "authorization" not in request.headers and "x-api-key" not in request.headers:
            return None
        with Session(service.engine) as s:
            return check_key(s, presented_key(request))


class SessionCookieAuthenticator:
    def __call__(self, request: Request, service: Service) -> Principal | AuthFailure | None:
        token = request.cookies.get(SESSION_COOKIE)
        if token is None:
            return None
        with Session(service.engine) as s, s.begin():  # commits the idle-clock refresh
            out = check_session(s, token, timedelta(seconds=service.settings.session_idle_s))
        return AuthFailure(f"session_{out}") if isinstance(out, str) else out


def default_authenticators() -> list[Authenticator]:
    return [ApiKeyAuthenticator(), SessionCookieAuthenticator()]
