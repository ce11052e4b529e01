"""HTTP security headers on every response (viewer, API, API docs, errors), set by the ``secure`` library.

* ``Content-Security-Policy``: scripts, styles, images and fetches from this origin only; nothing inline, no
  plugins, no ``<base>``, forms post here only, and no page may be framed (``frame-ancestors 'none'``). The viewer
  and the API docs page (Swagger UI) keep all script and style in files, so no ``'unsafe-inline'`` is needed;
  ``data:`` images are allowed for the viewer's empty favicon and Swagger UI's icons, ``blob:`` images for the
  viewer's mouse cursors (Cornerstone3D draws them as SVG blobs in the page).
* ``X-Frame-Options: DENY`` (browsers that predate ``frame-ancestors``), ``X-Content-Type-Options: nosniff``,
  ``Referrer-Policy: no-referrer`` (prediction URLs never leak to another site), ``Cross-Origin-Opener-Policy`` and
  ``Cross-Origin-Resource-Policy: same-origin``, a ``Permissions-Policy`` that turns off camera, microphone,
  geolocation and the like.
* ``Strict-Transport-Security`` only on requests that arrived over TLS (``scope["scheme"] == "https"``: uvicorn
  started with a certificate, or a trusted proxy's ``X-Forwarded-Proto: https`` with ``--proxy-headers``). Sent over
  plain HTTP it would be ignored by browsers; TLS termination is described in docs/serve.md.

The ``secure`` middleware applies one fixed header set; the small dispatcher below picks the set per request
(TLS or not) and is the only hand-written part.
"""

from __future__ import annotations

from secure import Secure
from secure.headers import (
    ContentSecurityPolicy,
    CrossOriginOpenerPolicy,
    CrossOriginResourcePolicy,
    PermissionsPolicy,
    ReferrerPolicy,
    StrictTransportSecurity,
    XContentTypeOptions,
    XFrameOptions,
)
from secure.middleware import SecureASGIMiddleware

HSTS_MAX_AGE_S = 31_536_000  # one year, the usual value once TLS is known to work


def content_security_policy() -> ContentSecurityPolicy:
    return (ContentSecurityPolicy()
            .default_src("'none'")
            .script_src("'self'")
            .style_src("'self'")
            .connect_src("'self'")
            .img_src("'self'", "data:", "blob:")
            .font_src("'self'")
            .base_uri("'none'")
            .form_action("'self'")
            .frame_ancestors("'none'")
            .object_src("'none'"))


def security_headers(tls: bool = False) -> Secure:
    return Secure(
        csp=content_security_policy(),
        xfo=XFrameOptions().deny(),
        xcto=XContentTypeOptions().nosniff(),
        referrer=ReferrerPolicy().no_referrer(),
        coop=CrossOriginOpenerPolicy().same_origin(),
        corp=CrossOriginResourcePolicy().same_origin(),
        permissions=PermissionsPolicy().camera().microphone().geolocation().payment().usb(),
        hsts=StrictTransportSecurity().max_age(HSTS_MAX_AGE_S) if tls else None,
    )


class SecurityHeadersMiddleware:
    """Every HTTP response, whatever answered it (route, static files, error handler, limits middleware)."""

    def __init__(self, app):
        self.app = app
        self._plain = SecureASGIMiddleware(app, secure=security_headers(tls=False))
        self._tls = SecureASGIMiddleware(app, secure=security_headers(tls=True))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await (self._tls if scope.get("scheme") == "https" else self._plain)(scope, receive, send)
