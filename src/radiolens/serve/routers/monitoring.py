"""Monitoring status for IT and auditors: the current drift window, active alerts and their history."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Depends, Query

from radiolens.serve.auth import Role
from radiolens.serve.deps import get_service, require
from radiolens.serve.schemas import ErrorResponse, MonitoringOut
from radiolens.serve.service import Service

router = APIRouter(prefix="/v1", tags=["monitoring"])


@router.get("/monitoring", response_model=MonitoringOut,
            responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}},
            dependencies=[Depends(require(Role.auditor, Role.admin))])
async def monitoring(refresh: bool = Query(False, description="run a drift check now (may raise or clear alerts)"),
                     service: Service = Depends(get_service)) -> dict:
    # DB reads and the statistics run off the event loop
    return await anyio.to_thread.run_sync(service.monitor.status, refresh)
