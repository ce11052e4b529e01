"""Liveness and readiness (anonymous) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from radiolens.serve.http.deps import get_service, require
from radiolens.serve.http.schemas import Health
from radiolens.serve.runtime.service import Service
from radiolens.serve.store.auth import Principal, Role

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(service: Service = Depends(get_service)):
    checks = {"model": "ok" if service.bundle is not None else "missing",
              "database": "ok" if service.db_ok() else "unreachable",
              "accepting": "no (shutting down)" if service.shutting_down else "ok"}
    ready = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if ready else "not_ready", checks=checks)
    return body if ready else JSONResponse(body.model_dump(), status_code=503)


@router.get("/metrics", response_class=Response)
def metrics(principal: Principal = Depends(require(Role.admin, Role.auditor)),
            service: Service = Depends(get_service)) -> Response:
    service.audit_access(principal.user_id, principal.role.value, "metrics")
    return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)  # all workers' values merged
