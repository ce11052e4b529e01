"""Predictions: create (upload), read, heatmap, display image and full-depth pixels, reader feedback; models list."""

from __future__ import annotations

import threading

from fastapi import APIRouter, Depends, File, Query, Request, Response, UploadFile

from radiolens.serve.http.deps import current_principal, get_service, require
from radiolens.serve.http.schemas import ErrorResponse, FeedbackIn, FeedbackOut, ModelInfo, ModelsOut, PredictionOut
from radiolens.serve.params import PredictionId
from radiolens.serve.runtime.service import Service
from radiolens.serve.store.auth import Principal, Role

router = APIRouter(prefix="/v1", tags=["predictions"])

_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 415, 422, 503, 504)} | {
    409: {"model": ErrorResponse, "description": "integrity_check_failed: the stored data no longer matches "
          "the audit chain and is withheld"}}
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
    return service.add_feedback(prediction_id, body.agree, body.corrected_label, principal.user_id,
                                principal.role.value)


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
