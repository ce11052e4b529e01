"""Monitoring status for IT and auditors: the current drift window, active alerts and their history."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Depends, Query

from radiolens.serve.http.deps import get_service, require
from radiolens.serve.http.schemas import ErrorResponse, MonitoringOut
from radiolens.serve.runtime.service import Service
from radiolens.serve.store.auth import Principal, Role

router = APIRouter(prefix="/v1", tags=["monitoring"])


@router.get("/monitoring", response_model=MonitoringOut,
            responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}})
async def monitoring(refresh: bool = Query(False, description="run a drift check now (may raise or clear alerts)"),
                     principal: Principal = Depends(require(Role.auditor, Role.admin)),
                     service: Service = Depends(get_service)) -> dict:
    # DB reads, the statistics and the audit row run off the event loop
    out = await anyio.to_thread.run_sync(service.monitor.status, refresh)
    await anyio.to_thread.run_sync(lambda: service.audit_access(principal.user_id, principal.role.value,
                                                                "monitoring", refresh=refresh))
    return out
