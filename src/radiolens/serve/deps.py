"""Request dependencies: the service object and role-checked authentication."""

from __future__ import annotations

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from radiolens.serve.auth import Principal, Role, authenticate
from radiolens.serve.service import Service


def get_service(request: Request) -> Service:
    return request.app.state.service


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or None


def current_principal(request: Request, service: Service = Depends(get_service)) -> Principal:
    key = _presented_key(request)
    if not key:
        raise HTTPException(401, "missing credentials: send 'Authorization: Bearer <api key>'",
                            headers={"WWW-Authenticate": "Bearer"})
    with Session(service.engine) as s:
        principal = authenticate(s, key)
    if principal is None:
        raise HTTPException(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    return principal


def require(*roles: Role):
    allowed = frozenset(roles)

    def dependency(principal: Principal = Depends(current_principal)) -> Principal:
        if principal.role not in allowed:
            raise HTTPException(403, f"role '{principal.role.value}' may not do this "
                                     f"(needs {' or '.join(sorted(r.value for r in allowed))})")
        return principal

    return dependency
