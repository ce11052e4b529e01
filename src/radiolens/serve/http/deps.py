"""Request dependencies: the service object and role-checked authentication."""

from __future__ import annotations

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from radiolens.serve.runtime.service import Service
from radiolens.serve.store import audit
from radiolens.serve.store.auth import AuthFailure, Principal, Role, check_key

_REFUSED = {"missing": "missing credentials: send 'Authorization: Bearer <api key>'",
            "expired": "API key expired: ask an administrator for a new one"}


def get_service(request: Request) -> Service:
    return request.app.state.service


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or None


def _where(request: Request) -> dict[str, str]:
    # The route template and method, never the raw path or query (they may carry anything a client typed).
    route = getattr(request.scope.get("route"), "path", None)
    return {"method": request.method, "route": route if isinstance(route, str) else "unmatched"}


def current_principal(request: Request, service: Service = Depends(get_service)) -> Principal:
    """The caller's principal; every refusal is audited (``auth_failed``: the reason and, when the key id
    exists, its user id; never the presented key or any part of it)."""
    with Session(service.engine) as s:
        out = check_key(s, _presented_key(request))
    if isinstance(out, AuthFailure):
        service.audit_access(out.user_id, "", "auth", event=audit.AUTH_FAILED, reason=out.reason, **_where(request))
        raise HTTPException(401, _REFUSED.get(out.reason, "invalid or revoked API key"),
                            headers={"WWW-Authenticate": "Bearer"})
    return out


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
