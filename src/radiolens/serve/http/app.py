"""``create_app(settings)``: the FastAPI application factory of the inference service."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartParser

from radiolens import __version__
from radiolens.errors import InputError, NotDicomError, NotFoundError, RadiolensError, UnreadableImageError
from radiolens.serve.config import ServeSettings
from radiolens.serve.http.authn import default_authenticators
from radiolens.serve.http.deps import CsrfRefused
from radiolens.serve.http.error_actions import error_body
from radiolens.serve.http.middleware import (
    LimitsMiddleware,
    SafeErrorsMiddleware,
    UploadAdmission,
    install_log_redaction,
)
from radiolens.serve.http.routers import admin, dicomweb, health, monitoring, predictions, session
from radiolens.serve.http.schemas import ADVISORY
from radiolens.serve.http.security import SecurityHeadersMiddleware
from radiolens.serve.runtime.hooks import PredictionHooks
from radiolens.serve.runtime.pool import InferencePool
from radiolens.serve.runtime.service import FeedbackExists, NotAssessed, NotFound, Service
from radiolens.serve.store.audit import IntegrityCheckFailed
from radiolens.serve.store.auth import LastAdminError

log = logging.getLogger("radiolens.serve")
STATIC_DIR = Path(__file__).parent / "static"
DOCS_ASSETS = "/docs-assets"  # the Swagger UI bundle (the fastapi-offline package's files)


def _error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, code, message), status_code=status, headers=headers)


def _status_for(exc: RadiolensError) -> int:
    if isinstance(exc, (NotFound, NotFoundError)):
        return 404
    if isinstance(exc, (IntegrityCheckFailed, LastAdminError, FeedbackExists, NotAssessed)):  # stored state refuses
        return 409
    if isinstance(exc, (NotDicomError, UnreadableImageError)):
        return 415
    if isinstance(exc, InputError):
        return 422
    return 500


def _allowed_methods(app: FastAPI, scope) -> str:
    """Methods some route accepts on this path (asked of the routes themselves: included routers wrap theirs)."""
    from starlette.routing import Match

    methods = set()
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        probe = {**scope, "method": method}
        if any(route.matches(probe)[0] == Match.FULL for route in app.router.routes):
            methods.add(method)
    return ", ".join(sorted(methods))


def _document_label_choices(app: FastAPI, labels: list[str]) -> None:
    """The labels a reader may correct to depend on the served model: put them in the OpenAPI schema as an enum,
    so clients (and schema-driven tests) see exactly what the server accepts."""
    default_openapi = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = default_openapi()
            prop = schema.get("components", {}).get("schemas", {}).get("FeedbackIn", {}).get("properties", {})
            if "corrected_label" in prop:
                prop["corrected_label"]["anyOf"] = [{"type": "string", "enum": labels}, {"type": "null"}]
        return app.openapi_schema

    app.openapi = openapi


def _stow_receiver(service: Service):
    """The STOW-RS receiver: the DICOM spool in the state folder (the one a gateway on this folder reads) and
    its counter on the service's registry. One per app: the spool's claim lock and metrics are per process."""
    from prometheus_client import Counter

    from radiolens.serve.runtime.stow import StowReceiver
    from radiolens.serve.store.spool import SPOOL_SUBDIR, Spool

    settings = service.settings
    counter = Counter("radiolens_stow_instances_total", "STOW-RS instances by outcome (queued, refused, "
                      "out_of_resources)", ["outcome"], registry=service.metrics.registry)
    return StowReceiver(Spool(settings.state_dir / SPOOL_SUBDIR, settings.resolved_secret()), counter)


def create_app(settings: ServeSettings, hooks: PredictionHooks | None = None) -> FastAPI:
    """Build the app. Loads the model, opens (and migrates) the database; ``hooks`` plug into predictions."""
    install_log_redaction()  # before anything can log a request
    service = Service(settings, hooks)

    # Starlette spools multipart uploads above 1 MiB to a temporary file on disk; uploads are raw,
    # identified DICOM, so keep them in memory (the size-limit middleware bounds how much).
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, settings.max_upload_bytes + 1)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        # Graceful shutdown: uvicorn has stopped accepting and finished open requests; wait for worker threads
        # that may still be writing (e.g. after a client timeout) so no audit row is lost.
        pool_drained = await anyio.to_thread.run_sync(app.state.inference_pool.shutdown)
        drained = await anyio.to_thread.run_sync(service.drain) and pool_drained
        if not drained:
            log.error("shutdown: predictions still in flight after the drain timeout")
        service.close()

    # FastAPIOffline: the Swagger UI bundle is served from the fastapi-offline package at /docs-assets (FastAPI's
    # own page loads it from a CDN). Its page is replaced by ours (static/docs.html), which keeps the start-up
    # script in a file so that the CSP needs no 'unsafe-inline'.
    app = FastAPIOffline(title="radiolens inference service", version=__version__, lifespan=lifespan,
                         description=f"Chest X-ray decision support. {ADVISORY}", docs_url=None, redoc_url=None,
                         static_url=DOCS_ASSETS)
    app.state.service = service
    app.state.authenticators = default_authenticators()  # serve/http/authn.py: where single sign-on plugs in
    app.state.inference_pool = InferencePool(settings.pool_threads)  # the only threads that predict

    @app.exception_handler(RadiolensError)
    async def _radiolens_error(request: Request, exc: RadiolensError):
        status = _status_for(exc)
        if status >= 500:  # configuration/model faults: log the type only, the message may quote internals
            log.error("server-side error %s on %s", type(exc).__name__, request.url.path)
            return _error(status, exc.code, "server error")
        return _error(status, exc.code, str(exc))

    @app.exception_handler(HTTPException)  # Starlette's: also the router's own 404/405, not only FastAPI's
    async def _http_error(request: Request, exc: HTTPException):
        codes = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}
        if isinstance(exc, CsrfRefused):
            codes = {403: "csrf_failed"}
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # Starlette names only the first matching route's methods; a path with a GET
            headers["Allow"] = _allowed_methods(app, request.scope) or headers.get("Allow", "")  # and a POST route
        return _error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail),
                      headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors()[:5]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{loc or 'request'}: {e.get('msg', 'invalid')}")
        return _error(422, "validation_error", "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        # Never echo the message: third-party exceptions can quote file contents.
        log.error("unexpected %s on %s", type(exc).__name__, request.url.path)
        return _error(500, "internal_error", "internal server error")

    _document_label_choices(app, service.feedback_labels())
    app.include_router(health.router)
    app.include_router(predictions.router)
    app.include_router(admin.router)
    app.include_router(monitoring.router)
    app.include_router(session.router)
    admission_paths, admission_prefixes = ("/v1/predictions",), ()
    if settings.dicomweb_stow:  # off: the paths are unknown routes (404), and nothing is queued
        app.state.stow = _stow_receiver(service)
        app.include_router(dicomweb.router)
        admission_paths += dicomweb.ADMISSION_PATHS
        admission_prefixes += dicomweb.ADMISSION_PREFIXES

    app.mount("/viewer/static", StaticFiles(directory=STATIC_DIR), name="viewer-static")

    @app.get("/", include_in_schema=False)
    def _root():
        return RedirectResponse("/viewer/")

    @app.get("/viewer/", include_in_schema=False)
    def _viewer():
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/viewer/worklist", include_in_schema=False)
    def _worklist():
        return FileResponse(STATIC_DIR / "worklist.html", headers={"Cache-Control": "no-store"})

    @app.get("/viewer/signin", include_in_schema=False)
    def _signin():
        return FileResponse(STATIC_DIR / "signin.html", headers={"Cache-Control": "no-store"})

    @app.get("/docs", include_in_schema=False)
    def _docs():
        return FileResponse(STATIC_DIR / "docs.html")

    @app.get("/redoc", include_in_schema=False)
    def _redoc():
        # ReDoc's bundle loads its logo from cdn.redoc.ly (no option turns that off): one docs page, Swagger UI.
        return RedirectResponse("docs")

    app.add_middleware(UploadAdmission, max_pending=settings.max_pending_uploads,
                       retry_after_s=settings.retry_after_s, paths=admission_paths,
                       prefixes=admission_prefixes)  # innermost: its 503s are counted by the metrics
    app.add_middleware(SafeErrorsMiddleware)  # added before = inside LimitsMiddleware (its 500s are counted)
    app.add_middleware(LimitsMiddleware, max_body_bytes=settings.max_upload_bytes,
                       timeout_s=settings.request_timeout_s, metrics=service.metrics)
    app.add_middleware(SecurityHeadersMiddleware)  # outermost: also on the limits middleware's 413/504 answers
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` worker processes: settings come from ``RADIOLENS_SERVE_SETTINGS``.

    A worker process is the service: whatever it creates (SQLite WAL files, metrics files) is private to it."""
    import os

    from radiolens.serve.store.state import PRIVATE_UMASK

    os.umask(PRIVATE_UMASK)
    return create_app(ServeSettings.from_env())


__all__ = ["create_app", "app_from_env"]
