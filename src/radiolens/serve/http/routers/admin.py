"""Key management (admin, audited), audit reading (auditor), ``/v1/service`` and ``/v1/me``."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session

from radiolens import __version__
from radiolens.serve.http.deps import current_principal, get_service, require
from radiolens.serve.http.schemas import AuditVerifyOut, ErrorResponse, KeyIn, KeyOut, WhoAmI
from radiolens.serve.params import HEAD_PATTERN, IsoDateTime, KeyRef
from radiolens.serve.runtime.service import Service
from radiolens.serve.store import audit
from radiolens.serve.store.auth import (
    Principal,
    Role,
    create_key_audited,
    key_status,
    list_keys,
    parse_expiry,
    revoke_key_audited,
)

router = APIRouter(prefix="/v1", tags=["admin"])
_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 422)}
_REVOKE_ERRORS = _ERRORS | {409: {"model": ErrorResponse, "description": "last_admin: the last active admin key"}}


def _key_out(row, api_key: str | None = None) -> KeyOut:
    return KeyOut(id=row.id, key_id=row.key_id, role=row.role, label=row.label, created_at=row.created_at,
                  revoked_at=row.revoked_at, expires_at=row.expires_at, status=key_status(row), api_key=api_key)


class ServiceInfo(BaseModel):
    version: str
    deid_secret_fingerprint: str  # HMAC of a fixed label under the secret: changes iff the secret changes
    database: str  # dialect only, never the URL (it may hold a password)
    schema_revision: str


@router.get("/service", response_model=ServiceInfo, responses=_ERRORS)
def service_info(principal: Principal = Depends(require(Role.admin, Role.auditor)),
                 service: Service = Depends(get_service)) -> ServiceInfo:
    """What an operator compares across restarts: a changed fingerprint means the de-identification secret
    changed, so study refs and remapped UIDs no longer match earlier ones."""
    from alembic.runtime.migration import MigrationContext

    with service.engine.connect() as conn:
        revision = MigrationContext.configure(conn).get_current_revision() or ""
    service.audit_access(principal.user_id, principal.role.value, "service")
    return ServiceInfo(version=__version__, deid_secret_fingerprint=service.ingestor.secret_fingerprint,
                       database=service.engine.dialect.name, schema_revision=revision)


@router.get("/me", response_model=WhoAmI, responses=_ERRORS)
def me(principal: Principal = Depends(current_principal), service: Service = Depends(get_service)) -> WhoAmI:
    service.audit_access(principal.user_id, principal.role.value, "me")
    return WhoAmI(user_id=principal.user_id, role=principal.role.value)


@router.get("/keys", response_model=list[KeyOut], responses=_ERRORS)
def keys(principal: Principal = Depends(require(Role.admin)), service: Service = Depends(get_service)):
    with Session(service.engine) as s:
        out = [_key_out(r) for r in list_keys(s)]
    service.audit_access(principal.user_id, principal.role.value, "keys", count=len(out))
    return out


@router.post("/keys", response_model=KeyOut, status_code=201, responses=_ERRORS)
def new_key(body: KeyIn, principal: Principal = Depends(require(Role.admin)),
            service: Service = Depends(get_service)):
    expires_in = parse_expiry(body.expires_in)
    with audit.writer(service.sessions) as s:  # the key and its audit row commit together
        row, key = create_key_audited(s, body.role, body.label, principal.user_id, principal.role.value,
                                      expires_in)
        return _key_out(row, key)


@router.delete("/keys/{key_id}", response_model=KeyOut, responses=_REVOKE_ERRORS)
def revoke_key(key_id: KeyRef, principal: Principal = Depends(require(Role.admin)),
               service: Service = Depends(get_service)):
    with audit.writer(service.sessions) as s:
        return _key_out(revoke_key_audited(s, key_id, principal.user_id, principal.role.value))


@router.get("/audit", responses=_ERRORS, response_class=StreamingResponse)
def audit_export(since: IsoDateTime | None = Query(None, description="ISO 8601, inclusive (naive = UTC)"),
                 until: IsoDateTime | None = Query(None, description="ISO 8601, exclusive (naive = UTC)"),
                 fmt: Literal["jsonl", "csv"] = Query("jsonl"),
                 principal: Principal = Depends(require(Role.auditor)), service: Service = Depends(get_service)):
    chunks = list(audit.export(service.engine, fmt, since, until))  # materialised: errors become 4xx, not a cut stream
    window = {"since": since.isoformat() if since else None, "until": until.isoformat() if until else None}
    service.audit_access(principal.user_id, principal.role.value, "audit_export", **window, fmt=fmt,
                         rows=max(len(chunks) - (fmt == "csv"), 0))
    media = "application/x-ndjson" if fmt == "jsonl" else "text/csv"
    return StreamingResponse(iter(chunks), media_type=media)


@router.get("/audit/verify", response_model=AuditVerifyOut, responses=_ERRORS)
def audit_verify(expect_head: str | None = Query(None, pattern=HEAD_PATTERN, max_length=83,
                                                 description="SEQ:HASH recorded outside the database "
                                                 "earlier (`radiolens audit head`)"),
                 principal: Principal = Depends(require(Role.auditor)), service: Service = Depends(get_service)):
    report = audit.verify(service.engine, expect_head=expect_head, artefact_dir=service.artefact_dir)
    service.audit_access(principal.user_id, principal.role.value, "audit_verify", ok=report.ok)
    return report.as_dict()
