"""Security headers on every response (viewer, API, docs, errors) over a real socket, the API docs served without
any outside host, and the viewer and docs pages working in Chromium under the Content-Security-Policy."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from tests.serve.test_browser import (  # noqa: F401 - browser: the shared Chromium fixture
    RECORD_CSP_VIOLATIONS,
    _save_screenshot,
    browser,
)

from radiolens.serve.http.security import HSTS_MAX_AGE_S


def _csp(headers) -> dict[str, list[str]]:
    out = {}
    for part in headers["content-security-policy"].split(";"):
        name, *values = part.split()
        out[name] = values
    return out


def _assert_secure(r: httpx.Response) -> None:
    h = r.headers
    where = f"{r.request.method} {r.request.url.path} -> {r.status_code}"
    assert h.get("x-frame-options") == "DENY", where
    assert h.get("x-content-type-options") == "nosniff", where
    assert h.get("referrer-policy") == "no-referrer", where
    assert h.get("cross-origin-opener-policy") == "same-origin", where
    assert h.get("cross-origin-resource-policy") == "same-origin", where
    assert "camera=()" in h.get("permissions-policy", ""), where
    assert "strict-transport-security" not in h, where  # plain HTTP: HSTS would be ignored (and wrong)
    csp = _csp(h)
    assert csp["default-src"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"], where
    assert csp["script-src"] == ["'self'"], where  # no inline script, no eval, no outside host
    assert csp["object-src"] == ["'none'"] and csp["base-uri"] == ["'none'"], where
    assert csp["connect-src"] == ["'self'"], where
    assert csp["style-src"] == ["'self'"], where
    for values in csp.values():
        assert not any(v.startswith(("http:", "https:")) or "*" in v for v in values), where


def test_every_response_carries_the_security_headers(live, siim_dicom):
    srv, keys = live()
    small, small_keys = live(max_upload_bytes=4096)
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        ok = c.post("/v1/predictions", headers=keys.h("clinician"),
                    files={"file": ("upload.dcm", siim_dicom.read_bytes(), "application/dicom")})
        assert ok.status_code == 201
        pid = ok.json()["id"]
        responses = [
            ok,
            c.get("/", follow_redirects=False),  # redirect to the viewer
            c.get("/viewer/"), c.get("/viewer/static/app/viewer.js"), c.get("/viewer/static/viewer.css"),
            c.get("/openapi.json"), c.get("/docs-assets/swagger-ui-bundle.js"), c.get("/healthz"), c.get("/readyz"),
            c.get("/v1/models", headers=keys.h("clinician")),
            c.get(f"/v1/predictions/{pid}", headers=keys.h("clinician")),
            c.get(f"/v1/predictions/{pid}/image.png", headers=keys.h("clinician")),
            c.get(f"/v1/predictions/{pid}/heatmap.png", headers=keys.h("clinician")),
            c.get("/metrics", headers=keys.h("auditor")),
            c.get("/v1/me"),  # 401
            c.post("/v1/predictions", headers=keys.h("auditor"), files={"file": ("u", b"x", "image/png")}),  # 403
            c.get("/v1/no-such-route"),  # 404
            c.put("/v1/predictions", headers=keys.h("clinician")),  # 405
            c.post("/v1/predictions", headers=keys.h("clinician"),
                   files={"file": ("u", b"not an image", "application/octet-stream")}),  # 415
            httpx.post(f"{small.url}/v1/predictions", headers=small_keys.h("clinician"), timeout=60,
                       files={"file": ("u", siim_dicom.read_bytes(), "application/dicom")}),  # 413 (limits middleware)
        ]
        responses += [c.get("/docs"), c.get("/redoc", follow_redirects=False)]
        assert {r.status_code for r in responses} >= {200, 201, 307, 401, 403, 404, 405, 413, 415}
        for r in responses:
            _assert_secure(r)


def test_hsts_only_over_tls(app_factory):
    """Behind a TLS-terminating proxy (``--proxy-headers``, X-Forwarded-Proto) or uvicorn's own TLS the ASGI scheme
    is https: then, and only then, Strict-Transport-Security is sent."""
    from fastapi.testclient import TestClient

    app, _ = app_factory()
    with TestClient(app, base_url="https://radiolens.example") as tls, TestClient(app) as plain:
        for path in ("/viewer/", "/healthz", "/docs", "/v1/me"):
            assert tls.get(path).headers["strict-transport-security"] == f"max-age={HSTS_MAX_AGE_S}"
            assert "strict-transport-security" not in plain.get(path).headers


_ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", re.I)


def test_api_docs_reference_no_outside_host_and_their_assets_load(live):
    srv, _ = live()
    page_path = "/docs"
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        redoc = c.get("/redoc", follow_redirects=True)  # ReDoc's bundle loads a logo from its CDN: not served
        assert redoc.url.path == "/docs" and redoc.text == c.get("/docs").text
        html = c.get(page_path).text
        refs = _ASSET.findall(html)
        assert len(refs) >= 2, html
        assert "cdn" not in html.lower() and "http://" not in html and "https://" not in html
        for ref in refs:
            url = urljoin(srv.url + page_path, ref)
            assert urlsplit(url).netloc == urlsplit(srv.url).netloc, ref
            r = c.get(url)
            assert r.status_code == 200 and len(r.content) > 0, (ref, r.status_code)


@pytest.mark.browser
def test_api_docs_render_offline_under_the_csp(browser, live, tmp_path):  # noqa: F811
    srv, _ = live()
    origin = urlsplit(srv.url).netloc
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    requests, problems = [], []
    page.on("request", lambda req: requests.append(req.url))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    page.goto(srv.url + "/docs")
    page.wait_for_selector(".opblock-summary-path[data-path='/v1/predictions']", timeout=60_000)
    page.click(".opblock-summary-path[data-path='/v1/predictions']")  # expand one operation: more rendering
    page.wait_for_selector(".opblock-body", timeout=30_000)
    page.wait_for_load_state("networkidle")
    _save_screenshot(page, tmp_path, "api_docs.png")
    outside = [u for u in requests if urlsplit(u).scheme in ("http", "https") and urlsplit(u).netloc != origin]
    assert not outside, outside
    assert page.evaluate("window.__cspViolations") == []
    assert not problems, problems  # Chromium also reports a CSP violation as a console error


@pytest.mark.browser
def test_viewer_cannot_be_framed_by_another_site(browser, live):  # noqa: F811
    """Clickjacking: a page of another origin that frames the viewer gets nothing (frame-ancestors 'none')."""
    srv, _ = live()
    page = browser.new_page()
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    page.goto(srv.url.replace("127.0.0.1", "localhost") + "/healthz")  # another origin than the viewer's
    page.set_content(f'<iframe id="f" src="{srv.url}/viewer/" width="600" height="400"></iframe>')
    page.wait_for_timeout(1500)
    frame = page.frame_locator("#f")
    assert frame.locator("#advisory").count() == 0  # the viewer did not load inside the frame
