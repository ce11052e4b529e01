"""DICOMweb STOW-RS: ``POST /dicomweb/studies`` and ``POST /dicomweb/studies/{study}`` (clinician keys).

Mounted only when ``ServeSettings.dicomweb_stow`` is on (otherwise these paths are 404 like any unknown route).
The work is in :mod:`radiolens.serve.runtime.stow`; this module is HTTP only: auth, reading the body, the
status codes and media types of PS3.18 10.5.
"""

from __future__ import annotations

import threading

import anyio
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse

from radiolens.serve.http.deps import get_service, require
from radiolens.serve.http.error_actions import error_body
from radiolens.serve.http.schemas import ErrorResponse
from radiolens.serve.runtime.service import Service
from radiolens.serve.runtime.stow import (
    RESPONSE_TYPE,
    MediaTypeError,
    MultipartError,
    StowReceiver,
    check_media_type,
)
from radiolens.serve.store import audit
from radiolens.serve.store.auth import Principal, Role

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

#: Paths the upload admission limit counts (``UploadAdmission``): the study-level route has a UID in its path.
ADMISSION_PATHS, ADMISSION_PREFIXES = ("/dicomweb/studies",), ("/dicomweb/studies/",)

_STORE_RESPONSES = {
    200: {"description": "every instance stored (queued for scoring)", "content": {RESPONSE_TYPE: {}}},
    202: {"description": "some instances stored, the others listed in FailedSOPSequence (0008,1198)",
          "content": {RESPONSE_TYPE: {}}},
    409: {"description": "no instance stored: each is listed in FailedSOPSequence with its FailureReason",
          "content": {RESPONSE_TYPE: {}}},
} | {code: {"model": ErrorResponse} for code in (400, 401, 403, 413, 415, 503, 504)}
_BODY = {"requestBody": {"required": True, "content": {'multipart/related; type="application/dicom"': {
    "schema": {"type": "string", "format": "binary"}}}}}
#: A study instance UID (PS3.5 9.1: digits and dots, at most 64 characters).
StudyUID = Path(..., pattern=r"^[0-9][0-9.]{0,63}$", description="StudyInstanceUID every instance must have")


def _json_error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(status, code, message), status_code=status)


def _auditor(service: Service, principal: Principal):
    """Audit rows as the caller: the event, its outputs (no UIDs) and the sha256 of the part."""
    def write(event: str, outputs: dict, input_sha256: str) -> None:
        with audit.writer(service.sessions) as s:
            audit.append(s, audit.AuditEvent(event, principal.user_id, principal.role.value, "", "", input_sha256,
                                             "", outputs, 0.0))

    return write


async def _store(request: Request, principal: Principal, service: Service, study: str | None) -> JSONResponse:
    content_type = request.headers.get("content-type", "")
    try:
        check_media_type(content_type)  # before reading a body that cannot be used
    except MediaTypeError as exc:
        return _json_error(415, exc.code, str(exc))
    body = await request.body()
    receiver: StowReceiver = request.app.state.stow
    abandon = threading.Event()  # set when the request is cancelled (timeout): the thread stores no more parts
    try:
        result = await anyio.to_thread.run_sync(receiver.store, content_type, body, _auditor(service, principal),
                                                study, abandon)
    except BaseException as exc:
        abandon.set()
        if isinstance(exc, (MediaTypeError, MultipartError)):
            return _json_error(415 if isinstance(exc, MediaTypeError) else 400, exc.code, str(exc))
        raise
    return JSONResponse(result.response(), status_code=result.status, media_type=RESPONSE_TYPE,
                        headers={"Cache-Control": "no-store"})


@router.post("/studies", response_class=JSONResponse, responses=_STORE_RESPONSES, openapi_extra=_BODY)
async def store_instances(request: Request, principal: Principal = Depends(require(Role.clinician)),
                          service: Service = Depends(get_service)) -> JSONResponse:
    """Store Instances (PS3.18 10.5): each part a DICOM Part-10 instance, queued for the gateway to score."""
    return await _store(request, principal, service, None)


@router.post("/studies/{study}", response_class=JSONResponse, responses=_STORE_RESPONSES, openapi_extra=_BODY)
async def store_study_instances(request: Request, study: str = StudyUID,
                                principal: Principal = Depends(require(Role.clinician)),
                                service: Service = Depends(get_service)) -> JSONResponse:
    """Store Instances of one study: an instance of another study fails with FailureReason 0xA900."""
    return await _store(request, principal, service, study)
