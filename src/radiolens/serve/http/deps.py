"""Request dependencies: the service object and role-checked authentication."""

from __future__ import annotations

from fastapi import Depends, HTTPException, Request

from radiolens.serve.http.authn import CSRF_HEADER, UNSAFE_METHODS, default_authenticators
from radiolens.serve.runtime.service import Service
from radiolens.serve.store import audit
from radiolens.serve.store.auth import AuthFailure, Principal, Role
from radiolens.serve.store.web_sessions import SessionPrincipal

_REFUSED = {"missing": "missing credentials: sign in, or send 'Authorization: Bearer <api key>'",
            "expired": "API key expired: ask an administrator for a new one"}
_SESSION_REFUSED = "your session has ended (signed out, expired or idle too long): sign in again"


def get_service(request: Request) -> Service:
    return request.app.state.service


def _where(request: Request) -> dict[str, str]:
    # The route template and method, never the raw path or query (they may carry anything a client typed).
    route = getattr(request.scope.get("route"), "path", None)
    return {"method": request.method, "route": route if isinstance(route, str) else "unmatched"}


def _authenticate(request: Request, service: Service) -> Principal | AuthFailure:
    """The first answer of the app's authenticators (``serve.http.authn``), else "missing"."""
    for authenticator in getattr(request.app.state, "authenticators", None) or default_authenticators():
        out = authenticator(request, service)
        if out is not None:
            return out
    return AuthFailure("missing")


def current_principal(request: Request, service: Service = Depends(get_service)) -> Principal:
    """The caller's principal; every refusal is audited (``auth_failed``: the reason and, when the key id
    exists, its user id; never the presented key or any part of it). A state-changing request signed in with
    the session cookie must carry the session's CSRF token (403 ``csrf_failed`` otherwise, audited)."""
    out = _authenticate(request, service)
    if isinstance(out, AuthFailure):
        service.audit_access(out.user_id, "", "auth", event=audit.AUTH_FAILED, reason=out.reason, **_where(request))
        message = _SESSION_REFUSED if out.reason.startswith("session_") else \
            _REFUSED.get(out.reason, "invalid or revoked API key")
        raise HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})
    if isinstance(out, SessionPrincipal) and request.method in UNSAFE_METHODS and \
            not out.csrf_ok(request.headers.get(CSRF_HEADER)):
        service.audit_access(out.user_id, out.role.value, "auth", event=audit.ACCESS_DENIED, reason="csrf",
                             **_where(request))
        raise CsrfRefused()
    return out


class CsrfRefused(HTTPException):
    """A cookie-authenticated request that changes state without the session's CSRF token (a cross-site form or
    script could send the cookie, never the token)."""

    def __init__(self) -> None:
        super().__init__(403, "missing or wrong X-CSRF-Token header for this session: reload the page")


def require(*roles: Role):
    allowed = frozenset(roles)

    def dependency(request: Request, principal: Principal = Depends(current_principal),
                   service: Service = Depends(get_service)) -> Principal:
        if principal.role not in allowed:
            needs = " or ".join(sorted(r.value for r in allowed))
            service.audit_access(principal.user_id, principal.role.value, "auth", event=audit.ACCESS_DENIED,
                                 needs=needs, **_where(request))
            raise HTTPException(403, f"role '{principal.role.value}' may not do this (needs {needs})")
        return principal

    return dependency
