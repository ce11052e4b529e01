"""Every request that reaches an authenticated route is audited: each read (whose prediction, which image, the
key list, the audit export, ...), each refused key (401: the reason, never the key) and each wrong role (403).

The routes are enumerated from the app itself, so a route added later without auditing (or without a request
below to exercise it) fails this test."""

from __future__ import annotations

import json

from fastapi.routing import APIRoute
from sqlalchemy import text
from sqlalchemy.orm import Session
from starlette.routing import Mount, Route

from radiolens.serve.store import audit
from radiolens.serve.store.auth import create_key

#: Routes that need no key (liveness, readiness, the viewer shell and the API schema): nothing to audit.
ANONYMOUS = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/"), ("GET", "/viewer/"), ("GET", "/openapi.json"),
             ("GET", "/docs"), ("GET", "/docs/oauth2-redirect"), ("GET", "/redoc"), ("GET", "/viewer/worklist"),
             ("GET", "/viewer/signin")}
#: Signing in takes no key; its successes, refusals and rate limiting are audited (tests/serve/test_signin.py).
SIGN_IN = {("POST", "/v1/session")}


def _flat(routes):
    for r in routes:
        nested = getattr(r, "effective_candidates", None)  # FastAPI >= 0.16x keeps included routers nested
        nested = nested() if callable(nested) else nested
        if nested is not None:
            yield from _flat(nested)
        else:
            yield r


def _routes(app) -> list[tuple[str, str]]:
    out = []
    for r in _flat(app.routes):
        if isinstance(r, Mount):
            # static files only (the viewer's and Swagger UI's scripts and styles): nothing to audit
            assert r.path in ("/viewer/static", "/docs-assets"), f"unexpected mount {r.path}: does it need auditing?"
            continue
        assert isinstance(r, (APIRoute, Route)) or (r.path and r.methods), r
        out += [(m, r.path) for m in sorted(set(r.methods) - {"HEAD"})]
    assert len(out) >= 20, out  # the enumeration found the included routers' routes
    return out


def _rows(engine) -> list[dict]:
    return list(audit.rows_between(engine))


def test_every_route_audits_reads_refusals_and_wrong_roles(client, kermany_samples):
    c, keys, app = client, client.keys, client.app_
    engine = app.state.service.engine
    users = {role: c.get("/v1/me", headers=keys.h(role)).json()["user_id"] for role in ("clinician", "auditor",
                                                                                        "admin")}
    jpeg = kermany_samples[0][0].read_bytes()
    pid = c.post("/v1/predictions", headers=keys.h("clinician"), files={"file": ("u", jpeg, "image/jpeg")}).json()["id"]

    def fresh_key_id() -> str:
        return c.post("/v1/keys", headers=keys.h("admin"), json={"role": "clinician"}).json()["key_id"]

    # How to exercise each route (a route missing here fails the test: add it, with what it needs).
    requests = {
        ("POST", "/v1/predictions"): lambda: {"files": {"file": ("u", jpeg, "image/jpeg")}},
        ("GET", "/v1/predictions/{prediction_id}"): lambda: {},
        ("GET", "/v1/predictions/{prediction_id}/heatmap.png"): lambda: {},
        ("GET", "/v1/predictions/{prediction_id}/image.png"): lambda: {},
        ("GET", "/v1/predictions/{prediction_id}/pixels.png"): lambda: {},
        ("GET", "/v1/predictions"): lambda: {"params": {"flagged": "false"}},
        ("POST", "/v1/predictions/{prediction_id}/feedback"): lambda: {"json": {"agree": False}},
        ("PUT", "/v1/predictions/{prediction_id}/feedback"): lambda: {"json": {"agree": True}},
        ("DELETE", "/v1/session"): lambda: {},
        ("GET", "/v1/models"): lambda: {},
        ("GET", "/v1/me"): lambda: {},
        ("GET", "/v1/service"): lambda: {},
        ("GET", "/v1/keys"): lambda: {},
        ("POST", "/v1/keys"): lambda: {"json": {"role": "auditor"}},
        ("DELETE", "/v1/keys/{key_id}"): lambda: {},
        ("GET", "/v1/audit"): lambda: {"params": {"fmt": "csv"}},
        ("GET", "/v1/audit/verify"): lambda: {},
        ("GET", "/v1/monitoring"): lambda: {},
        ("GET", "/metrics"): lambda: {},
    }
    routes = _routes(app)
    for method, path in (r for r in routes if r in ANONYMOUS):  # anonymous indeed, so nothing to attribute
        assert c.request(method, path, follow_redirects=False).status_code < 400, path
    authenticated = [r for r in routes if r not in ANONYMOUS and r not in SIGN_IN]
    missing = [r for r in authenticated if r not in requests]
    assert not missing, f"routes without a request in this test (and maybe without auditing): {missing}"

    revoked = c.post("/v1/keys", headers=keys.h("admin"), json={"role": "clinician"}).json()
    assert c.delete(f"/v1/keys/{revoked['key_id']}", headers=keys.h("admin")).status_code == 200
    wrong_secret = keys.clinician.rsplit("_", 1)[0] + "_" + "x" * 43
    attempts = {"missing": ({}, 0), "malformed": ({"Authorization": "Bearer not-a-key"}, 0),
                "unknown_key": ({"X-API-Key": "rlk_00000000deadbeef_" + "y" * 43}, 0),
                "wrong_secret": ({"Authorization": f"Bearer {wrong_secret}"}, users["clinician"]),
                "revoked": ({"Authorization": f"Bearer {revoked['api_key']}"}, revoked["id"])}
    for method, template in authenticated:
        served = False
        for role in ("clinician", "auditor", "admin"):
            path = template.replace("{prediction_id}", pid)
            if "{key_id}" in path:
                path = path.replace("{key_id}", fresh_key_id())
            n = len(_rows(engine))
            r = c.request(method, path, headers=keys.h(role), **requests[(method, template)]())
            new = _rows(engine)[n:]
            assert r.status_code not in (401, 404, 409, 422), (method, template, role, r.status_code, r.text[:200])
            assert any(row["user_id"] == users[role] and row["role"] == role for row in new), \
                f"{method} {template} as {role} ({r.status_code}) added no audit row naming the caller"
            if r.status_code == 403:
                denied = [row for row in new if row["event"] == audit.ACCESS_DENIED]
                assert len(denied) == 1 and denied[0]["outputs"]["route"] == template
                assert denied[0]["outputs"]["method"] == method
            served |= r.status_code < 300
        assert served, f"{method} {template}: no role was served, so its auditing was never exercised"
        for reason, (headers, user_id) in attempts.items():
            path = template.replace("{prediction_id}", pid).replace("{key_id}", "0123456789abcdef")
            n = len(_rows(engine))
            r = c.request(method, path, headers=headers, **requests[(method, template)]())
            assert r.status_code == 401, (method, template, reason, r.status_code)
            new = _rows(engine)[n:]
            assert [(x["event"], x["user_id"], x["outputs"]) for x in new] == [
                (audit.AUTH_FAILED, user_id, {"resource": "auth", "reason": reason, "method": method,
                                              "route": template})]

    # Nothing of any presented key reaches the audit log: not the keys, their secrets, nor the key ids tried.
    dumped = "".join(audit.export(engine, "jsonl"))
    for key in (keys.clinician, keys.auditor, keys.admin, wrong_secret, revoked["api_key"]):
        key_id, secret = key.split("_", 2)[1:]
        assert secret not in dumped and key_id not in dumped
    assert "deadbeef" not in dumped and "not-a-key" not in dumped
    assert audit.verify(engine).ok


def test_reading_a_colleagues_prediction_is_audited_with_its_study(client, kermany_samples):
    c, keys = client, client.keys
    engine = c.app_.state.service.engine
    with Session(engine) as s, s.begin():
        row, second = create_key(s, "clinician")
        second_id = row.id
    r = c.post("/v1/predictions", headers=keys.h("clinician"),
               files={"file": ("u", kermany_samples[1][0].read_bytes(), "image/jpeg")})
    pid, study = r.json()["id"], r.json()["study_ref"]
    for what in ("", "/image.png"):
        assert c.get(f"/v1/predictions/{pid}{what}", headers={"Authorization": f"Bearer {second}"}).status_code == 200
    reads = [x for x in _rows(engine) if x["event"] == audit.READ and x["prediction_id"] == pid]
    assert [(x["user_id"], x["role"], x["study_uid"], x["outputs"]["resource"]) for x in reads] == [
        (second_id, "clinician", study, "prediction"), (second_id, "clinician", study, "image")]
    export = c.get("/v1/audit", headers=keys.h("auditor"), params={"since": "2020-01-01"})
    last = _rows(engine)[-1]
    assert (last["event"], last["outputs"]) == (audit.READ, {"resource": "audit_export",
                                                             "since": "2020-01-01T00:00:00",
                                                             "until": None, "fmt": "jsonl",
                                                             "rows": len(export.text.splitlines())})
    with engine.connect() as conn:  # no PHI, no credential columns in the read rows: ids and hashes only
        outputs = [json.loads(o) for o in conn.execute(text("SELECT outputs_json FROM audit_log WHERE event = 'read'"))
                   .scalars()]
    assert all(set(o) <= {"resource", "found", "since", "until", "fmt", "rows", "count", "ok", "refresh"}
               for o in outputs)
