"""Predictions: create (upload), the worklist, read, heatmap, display image and full-depth pixels, reader feedback;
models list."""

from __future__ import annotations

import threading

from fastapi import APIRouter, Depends, File, Query, Request, Response, UploadFile

from radiolens.serve.http.deps import current_principal, get_service, require
from radiolens.serve.http.schemas import (
    ErrorResponse,
    FeedbackIn,
    FeedbackOut,
    ModelInfo,
    ModelsOut,
    PredictionOut,
    WorklistOut,
)
from radiolens.serve.params import IsoDateTime, PredictionId, parse_time
from radiolens.serve.runtime.service import Service
from radiolens.serve.store.auth import Principal, Role
from radiolens.serve.store.worklist import MAX_PAGE, WorklistFilter

router = APIRouter(prefix="/v1", tags=["predictions"])

_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 415, 422, 503, 504)} | {
    409: {"model": ErrorResponse, "description": "integrity_check_failed: the stored data no longer matches "
          "the audit chain and is withheld; feedback_exists / not_assessed: feedback refused (see the operation)"}}
_READERS = (Role.clinician, Role.auditor)


@router.post("/predictions", response_model=PredictionOut, status_code=201, responses=_ERRORS)
async def create_prediction(
    request: Request,
    file: UploadFile = File(..., description="DICOM, PNG or JPEG radiograph"),
    heatmap: bool = Query(True, description="compute the heatmap overlay (GET /v1/models: heatmap_method)"),
    principal: Principal = Depends(require(Role.clinician)),
    service: Service = Depends(get_service),
) -> dict:
    data = await file.read()
    await file.close()
    # Off the event loop on the app's bounded pool (serve/runtime/pool.py): at most ``inference_workers`` at once.
    # On a timeout (504) a queued job is cancelled, and a running one stops at its next step without storing
    # anything (``abandon``): the client was told it failed, so no result of it may exist.
    abandon = threading.Event()
    try:
        return await request.app.state.inference_pool.run(service.predict, data, file.content_type,
                                                          principal.user_id, principal.role.value, heatmap, abandon)
    except BaseException:
        abandon.set()
        raise


@router.get("/predictions", response_model=WorklistOut, responses=_ERRORS)
def list_predictions(
    flagged: bool | None = Query(None, description="only predictions flagged for review (true) or not (false)"),
    awaiting_feedback: bool | None = Query(None, description="true: assessed predictions you have not given "
                                           "feedback on yet; false: those you have"),
    decision: str | None = Query(None, min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$",
                                 description="the decision label, exactly "
                                 "(e.g. normal, pneumonia, not assessed)"),
    since: IsoDateTime | None = Query(None, description="created at or after (ISO 8601; naive = UTC)"),
    until: IsoDateTime | None = Query(None, description="created before (ISO 8601; naive = UTC)"),
    limit: int = Query(50, ge=1, le=MAX_PAGE, description="page size"),
    cursor: str | None = Query(None, min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_-]+$",
                               description="next_cursor of the previous page"),
    principal: Principal = Depends(require(*_READERS)),
    service: Service = Depends(get_service),
) -> dict:
    """The worklist: predictions newest first, a page at a time; no study references or other PHI. Each row
    carries the requesting reader's own feedback state. The request is audited with the ids it listed."""
    flt = WorklistFilter(flagged=flagged, awaiting_feedback=awaiting_feedback, decision=decision,
                         since=parse_time(since, "since"), until=parse_time(until, "until"))
    return service.list_predictions(flt, limit, cursor, principal.user_id, principal.role.value)


@router.get("/predictions/{prediction_id}", response_model=PredictionOut, responses=_ERRORS)
def get_prediction(prediction_id: PredictionId, principal: Principal = Depends(require(*_READERS)),
                   service: Service = Depends(get_service)) -> dict:
    # checked against the audit chain and audited before it is served (409 when it no longer matches)
    return service.get_prediction(prediction_id, principal.user_id, principal.role.value)


def _png(service: Service, principal: Principal, prediction_id: str, kind: str) -> Response:
    # The bytes served are the bytes whose sha256 was checked (no second read of a file that may be swapped).
    data = service.read_artefact(prediction_id, kind, principal.user_id, principal.role.value)
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, no-store"})


@router.get("/predictions/{prediction_id}/heatmap.png", response_class=Response, responses=_ERRORS)
def get_heatmap(prediction_id: PredictionId, principal: Principal = Depends(require(*_READERS)),
                service: Service = Depends(get_service)) -> Response:
    return _png(service, principal, prediction_id, "heatmap")


@router.get("/predictions/{prediction_id}/image.png", response_class=Response, responses=_ERRORS)
def get_image(prediction_id: PredictionId, principal: Principal = Depends(require(*_READERS)),
              service: Service = Depends(get_service)) -> Response:
    return _png(service, principal, prediction_id, "image")


@router.get("/predictions/{prediction_id}/pixels.png", response_class=Response, responses=_ERRORS,
            summary="The de-identified image at full bit depth (16-bit grey PNG)")
def get_pixels(prediction_id: PredictionId, principal: Principal = Depends(require(*_READERS)),
               service: Service = Depends(get_service)) -> Response:
    """WADO-RS in spirit (the pixel data of the one stored instance), PNG in form: a browser fetches it with the
    same key as the rest, and it is lossless at 16 bits. The stored values of the *de-identified* first frame; the
    prediction's ``pixels`` block gives rows, columns, rescale slope/intercept, photometric interpretation and the
    default window. Never the uploaded file. Predictions stored before this copy was kept answer 404."""
    return _png(service, principal, prediction_id, "pixels")


@router.post("/predictions/{prediction_id}/feedback", response_model=FeedbackOut, status_code=201,
             responses=_ERRORS)
def post_feedback(prediction_id: PredictionId, body: FeedbackIn,
                  principal: Principal = Depends(require(Role.clinician)),
                  service: Service = Depends(get_service)) -> dict:
    """Your first feedback on a prediction (409 feedback_exists when you gave one: change it with PUT; 409
    not_assessed when the model did not assess the study)."""
    return service.add_feedback(prediction_id, body.agree, body.corrected_label, principal.user_id,
                                principal.role.value)[0]


@router.put("/predictions/{prediction_id}/feedback", response_model=FeedbackOut, responses={
    **_ERRORS, 201: {"model": FeedbackOut, "description": "your first feedback on this prediction"}})
def put_feedback(prediction_id: PredictionId, body: FeedbackIn, response: Response,
                 principal: Principal = Depends(require(Role.clinician)),
                 service: Service = Depends(get_service)) -> dict:
    """Give or change your feedback (one per reader per prediction): 201 when it is your first, 200 when it
    replaced your earlier one (kept as superseded, the change audited with old and new values) or repeated it.
    409 not_assessed when the model did not assess the study."""
    out, created = service.add_feedback(prediction_id, body.agree, body.corrected_label, principal.user_id,
                                        principal.role.value, replace=True)
    response.status_code = 201 if created else 200
    return out


@router.get("/models", response_model=ModelsOut, responses=_ERRORS)
def list_models(principal: Principal = Depends(current_principal), service: Service = Depends(get_service)):
    info = service.bundle.info
    service.audit_access(principal.user_id, principal.role.value, "models")
    return ModelsOut(models=[ModelInfo(**service.model_ref(), class_names=list(info.class_names),
                                       negative_name=info.negative_name, thresholds=list(info.thresholds),
                                       temperature=float(info.temperature), input_size=info.input_size,
                                       population=dict(getattr(info, "population", None) or {}),
                                       review_rule=service.predictor.triage.rule_name,
                                       heatmap_method=service.predictor.heatmap_method
                                       if service.heatmaps_available else None,
                                       uncertainty_method=service.predictor.uncertainty_method,
                                       review_basis=service.predictor.review_basis)])
