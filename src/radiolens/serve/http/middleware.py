"""Pure-ASGI middleware: request size limit (413), per-request timeout (504), HTTP metrics, a bound on uploads
in progress (503), PHI-safe handling of unexpected exceptions (500, type and route logged, no traceback), and
credentials kept out of every log line (``redact``, ``install_log_redaction``).

Written as raw ASGI rather than BaseHTTPMiddleware so the size check sees the body as it streams in
(before the multipart parser buffers it) and a timeout can still answer when the handler is stuck.
"""

from __future__ import annotations

import json
import logging
import re
import time

import anyio

from radiolens.serve.http.error_actions import error_body
from radiolens.serve.runtime.metrics import ServiceMetrics

log = logging.getLogger("radiolens.serve")

# Credentials must never reach a log line. The service only accepts a key in the Authorization (or X-API-Key)
# header, but clients put keys in URLs anyway (``?api_key=...``, a key pasted into a path), and uvicorn's access
# log prints the path with its query string. Three patterns (hand-written: no logging library knows our key
# format): query parameters named like a credential, our key format anywhere, and "Bearer <token>".
_CREDENTIAL_PARAM = re.compile(
    r"(?i)((?:^|[?&;])(?:api[_-]?key|x[_-]api[_-]key|key|token|access[_-]?token|id[_-]?token|auth|authorization|"
    r"bearer|password|passwd|pwd|secret|session)=)[^&;#\s\"']*")
_API_KEY = re.compile(r"rlk_[A-Za-z0-9]+_[A-Za-z0-9_\-]+|rlk(?:_|%5[Ff])[A-Za-z0-9%_\-]{8,}")
_BEARER = re.compile(r"(?i)(bearer(?:\s+|%20|\+))[^\s\"',&]+")
REDACTED = "[REDACTED]"
# A DICOMweb path names a study by its original StudyInstanceUID (``/dicomweb/studies/{study}``): an identifier
# from the sending site, so log lines show the route's shape only.
_DICOMWEB_STUDY = re.compile(r"(/dicomweb/studies/)[^/?#\s\"']+")
#: Loggers whose records are redacted: uvicorn's access and error logs and the service's own.
REDACTED_LOGGERS = ("uvicorn", "uvicorn.access", "uvicorn.error", "radiolens", "radiolens.serve")


def redact(text: str) -> str:
    """``text`` with credential query values, API keys, bearer tokens and DICOMweb study UIDs replaced by
    ``[REDACTED]``."""
    text = _API_KEY.sub("rlk_" + REDACTED, text)
    text = _DICOMWEB_STUDY.sub(lambda m: m.group(1) + REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    return _CREDENTIAL_PARAM.sub(lambda m: m.group(1) + REDACTED, text)


class RedactingFilter(logging.Filter):
    """Redacts a record's message and each argument in place, so formatters that read ``record.args`` as a
    tuple (uvicorn's access formatter does) keep working and still print no credential."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        return True


def _redact_arg(value):
    if isinstance(value, (int, float)) or value is None:
        return value
    text = value if isinstance(value, str) else str(value)
    clean = redact(text)
    return clean if clean != text or isinstance(value, str) else value


def install_log_redaction() -> None:
    """Add ``RedactingFilter`` to ``REDACTED_LOGGERS`` (idempotent). Logger filters survive uvicorn's
    ``dictConfig`` (which replaces handlers), whichever of the two runs first."""
    for name in REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())


def _redact_scope(scope) -> None:
    # What uvicorn (and other ASGI servers) print in the access log is read from the scope after the response:
    # rewrite it in place. No route reads a credential from the URL, so nothing the app needs is lost.
    qs = scope.get("query_string") or b""
    if qs:
        clean = redact("?" + qs.decode("latin-1"))[1:].encode("latin-1")
        if clean != qs:
            scope["query_string"] = clean
    path = scope.get("path") or ""
    if "rlk" in path:
        scope["path"] = redact(path)
        if scope.get("raw_path"):
            scope["raw_path"] = redact(scope["raw_path"].decode("latin-1")).encode("latin-1")


def _json_message(status: int, code: str, message: str) -> tuple[dict, dict]:
    body = json.dumps(error_body(status, code, message)).encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    return start, {"type": "http.response.body", "body": body}


class LimitsMiddleware:
    def __init__(self, app, max_body_bytes: int, timeout_s: float, metrics: ServiceMetrics):
        self.app, self.max_body, self.timeout, self.metrics = app, max_body_bytes, timeout_s, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        _redact_scope(scope)
        t0 = time.perf_counter()
        state = {"started": False, "status": 500, "too_large": False}

        async def send_error(status: int, code: str, message: str) -> None:
            start, body = _json_message(status, code, message)
            state["started"], state["status"] = True, status
            await send(start)
            await send(body)

        limit_msg = f"request body exceeds the limit of {self.max_body} bytes"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        try:
            if declared is not None and int(declared) > self.max_body:
                await send_error(413, "payload_too_large", limit_msg)
                self._observe(scope, state, t0)
                return
        except ValueError:
            await send_error(400, "bad_request", "invalid Content-Length header")
            self._observe(scope, state, t0)
            return

        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    state["too_large"] = True
                    raise _TooLarge()
            return message

        async def guarded_send(message):
            if state["too_large"]:
                return  # whatever the app answers after the body was cut off, the client gets a 413
            if message["type"] == "http.response.start":
                state["started"], state["status"] = True, message["status"]
            await send(message)

        timed_out = False
        try:
            with anyio.move_on_after(self.timeout) as cancel_scope:
                await self.app(scope, limited_receive, guarded_send)
            timed_out = cancel_scope.cancelled_caught
        except _TooLarge:
            pass
        except Exception:
            if not state["too_large"]:
                raise
        if state["too_large"] and not state["started"]:
            await send_error(413, "payload_too_large", limit_msg)
        elif timed_out and not state["started"]:
            log.warning("request timed out after %.1f s: %s %s", self.timeout, scope.get("method"),
                        _route(scope))
            await send_error(504, "timeout", f"request did not complete within {self.timeout:g} s")
        self._observe(scope, state, t0)

    def _observe(self, scope, state, t0) -> None:
        route, method = _route(scope), scope.get("method", "")
        self.metrics.requests.labels(method, route, str(state["status"])).inc()
        self.metrics.latency.labels(method, route).observe(time.perf_counter() - t0)


class _TooLarge(Exception):
    pass


class UploadAdmission:
    """At most ``max_pending`` uploads (POST to one of ``paths``, or under one of ``prefixes``) in the app at once,
    from the first byte of their body to their response; more are answered 503 with Retry-After before their
    body is read, so waiting uploads cannot pile up in memory (12 clients x 60 MB waiting for the pool cost
    700 MB). One event loop per process runs this, so a plain counter is exact."""

    def __init__(self, app, max_pending: int, retry_after_s: int, paths: tuple[str, ...] = ("/v1/predictions",),
                 prefixes: tuple[str, ...] = ()):
        self.app, self.max_pending, self.retry_after, self.paths = app, max_pending, retry_after_s, paths
        self.prefixes = prefixes  # routes with a path parameter (e.g. ``/dicomweb/studies/{study}``)
        self.pending = 0
        self.peak = 0  # high-water mark, for tests and diagnostics
        self.refused = 0

    async def __call__(self, scope, receive, send):
        path = scope.get("path") or ""
        if scope["type"] != "http" or scope.get("method") != "POST" or \
                (path not in self.paths and not path.startswith(self.prefixes)):
            await self.app(scope, receive, send)
            return
        if self.pending >= self.max_pending:
            self.refused += 1
            start, body = _json_message(503, "overloaded", f"{self.pending} uploads are already in progress; "
                                        f"retry in {self.retry_after} s")
            start["headers"].append((b"retry-after", str(self.retry_after).encode()))
            start["headers"].append((b"connection", b"close"))  # the unread body is not waited for
            await send(start)
            await send(body)
            return
        self.pending += 1
        self.peak = max(self.peak, self.pending)
        try:
            await self.app(scope, receive, send)
        finally:
            self.pending -= 1


class SafeErrorsMiddleware:
    """Unexpected exceptions end here: logged as type and route only, answered 500 JSON, never re-raised.

    Starlette's ServerErrorMiddleware re-raises after running the app's ``Exception`` handler (so that the
    server can log it), and uvicorn then logs the whole traceback, exception message included; messages of
    third-party errors, or of a hook, can quote PHI. Pure ASGI (not BaseHTTPMiddleware) so it sees the raw
    exception and works for streaming responses too. Sits inside ``LimitsMiddleware``, whose 413 signal
    passes through untouched.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except _TooLarge:
            raise
        except Exception as exc:  # noqa: BLE001 - the point of this middleware
            log.error("unexpected %s on %s %s", type(exc).__name__, scope.get("method", ""), _route(scope))
            if not started:  # otherwise the client sees a cut-off response, which is all we can do
                start, body = _json_message(500, "internal_error", "internal server error")
                await send(start)
                await send(body)


def _route(scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
