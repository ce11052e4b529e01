"""Key management (admin), audit reading (auditor) and ``/v1/me`` for any signed-in key."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from radiolens.serve import audit
from radiolens.serve.auth import Principal, Role, create_key, list_keys, revoke
from radiolens.serve.deps import current_principal, get_service, require
from radiolens.serve.schemas import AuditVerifyOut, ErrorResponse, KeyIn, KeyOut, WhoAmI
from radiolens.serve.service import Service

router = APIRouter(prefix="/v1", tags=["admin"])
_ERRORS = {401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}


def _key_out(row, api_key: str | None = None) -> KeyOut:
    return KeyOut(id=row.id, key_id=row.key_id, role=row.role, label=row.label, created_at=row.created_at,
                  revoked_at=row.revoked_at, api_key=api_key)


@router.get("/me", response_model=WhoAmI, responses=_ERRORS)
def me(principal: Principal = Depends(current_principal)) -> WhoAmI:
    return WhoAmI(user_id=principal.user_id, role=principal.role.value)


@router.get("/keys", response_model=list[KeyOut], responses=_ERRORS)
def keys(principal: Principal = Depends(require(Role.admin)), service: Service = Depends(get_service)):
    with Session(service.engine) as s:
        return [_key_out(r) for r in list_keys(s)]


@router.post("/keys", response_model=KeyOut, status_code=201, responses=_ERRORS)
def new_key(body: KeyIn, principal: Principal = Depends(require(Role.admin)),
            service: Service = Depends(get_service)):
    with Session(service.engine) as s, s.begin():
        row, key = create_key(s, body.role, body.label)
        return _key_out(row, key)


@router.delete("/keys/{key_id}", response_model=KeyOut, responses=_ERRORS)
def revoke_key(key_id: str, principal: Principal = Depends(require(Role.admin)),
               service: Service = Depends(get_service)):
    with Session(service.engine) as s, s.begin():
        return _key_out(revoke(s, key_id))


@router.get("/audit", responses=_ERRORS, response_class=StreamingResponse)
def audit_export(since: str | None = Query(None, description="ISO 8601, inclusive (naive = UTC)"),
                 until: str | None = Query(None, description="ISO 8601, exclusive"),
                 fmt: str = Query("jsonl", pattern="^(jsonl|csv)$"),
                 principal: Principal = Depends(require(Role.auditor)), service: Service = Depends(get_service)):
    chunks = list(audit.export(service.engine, fmt, since, until))  # materialised: errors become 4xx, not a cut stream
    media = "application/x-ndjson" if fmt == "jsonl" else "text/csv"
    return StreamingResponse(iter(chunks), media_type=media)


@router.get("/audit/verify", response_model=AuditVerifyOut, responses=_ERRORS)
def audit_verify(principal: Principal = Depends(require(Role.auditor)), service: Service = Depends(get_service)):
    return audit.verify(service.engine).as_dict()
