"""The HTTP API: predictions, reads, feedback, models, health, metrics, OpenAPI, auth codes, bad input."""

from __future__ import annotations

import concurrent.futures as cf
import time

import httpx
import numpy as np
import pytest
from tests.serve.conftest import SECRET, START_ROWS, dataset_without_pixels, decode_png

from radiolens.errors import InputError
from radiolens.serve.runtime.hooks import PredictionHooks


def _upload(client, keys, data: bytes, name="upload.dcm", ctype="application/dicom", **params):
    return client.post("/v1/predictions", headers=keys.h("clinician"), files={"file": (name, data, ctype)},
                       params=params)


def test_health_is_anonymous_and_ready(client):
    assert client.get("/healthz").json()["status"] == "ok"
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"model": "ok", "database": "ok", "accepting": "ok"}


def test_prediction_on_real_dicom(client, siim_dicom):
    r = _upload(client, client.keys, siim_dicom.read_bytes())
    assert r.status_code == 201, r.text
    body = r.json()
    bundle = client.app_.state.service.bundle
    # Probabilities are the bundle's calibrated output for the same image.
    from radiolens.io import read_image

    expected = bundle.predict_image(read_image(siim_dicom))
    assert body["probabilities"][0]["name"] == "pneumonia"
    assert body["probabilities"][0]["probability"] == pytest.approx(float(expected[0]), abs=1e-5)
    positive = bool(bundle.decisions(expected)[0, 0])
    assert body["decision"]["label"] == ("pneumonia" if positive else "normal")
    assert body["model"]["sha256"] == bundle.sha256 and body["model"]["version"] == "0.test"
    assert isinstance(body["review"]["flag"], bool) and body["review"]["reason"]
    # The study reference is the remapped UID, not the original one.
    original_uid = str(__import__("pydicom").dcmread(str(siim_dicom), stop_before_pixels=True).StudyInstanceUID)
    assert body["study_ref"] and body["study_ref"] != original_uid
    from radiolens.io.deid import Deidentifier

    assert body["study_ref"] == Deidentifier(SECRET).remap_uid(original_uid)  # remapped by the io layer, keyed
    assert body["heatmap_url"] == f"/v1/predictions/{body['id']}/heatmap.png"
    assert "not a diagnosis" in body["advisory"]

    heat = client.get(body["heatmap_url"], headers=client.keys.h("clinician"))
    assert heat.status_code == 200 and heat.headers["content-type"] == "image/png"
    rgba = decode_png(heat.content)
    assert rgba.ndim == 3 and rgba.shape[2] == 4 and rgba[..., 3].max() > 0
    img = decode_png(client.get(body["image_url"], headers=client.keys.h("clinician")).content)
    assert img.shape[:2] == rgba.shape[:2]

    again = client.get(f"/v1/predictions/{body['id']}", headers=client.keys.h("auditor"))
    assert again.status_code == 200 and again.json()["probabilities"] == body["probabilities"]


def test_jpeg_prediction_separates_classes(client, kermany_samples):
    """The briefly trained model scores real pneumonia images above normal ones on average."""
    probs = {0: [], 1: []}
    refs = set()
    for path, label in kermany_samples:
        r = _upload(client, client.keys, path.read_bytes(), name="x.jpeg", ctype="image/jpeg", heatmap=False)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["heatmap_url"] is None and body["source_format"] == "jpeg"
        assert body["study_ref"].startswith("raster:")
        refs.add(body["study_ref"])
        probs[label].append(body["probabilities"][0]["probability"])
    assert len(refs) == len(kermany_samples)  # keyed hash differs per image
    assert np.mean(probs[1]) > np.mean(probs[0])


def test_feedback_round_trip_and_validation(client, kermany_samples):
    keys = client.keys
    pid = _upload(client, keys, kermany_samples[0][0].read_bytes(), ctype="image/jpeg", heatmap=False).json()["id"]
    r = client.post(f"/v1/predictions/{pid}/feedback", headers=keys.h("clinician"),
                    json={"agree": False, "corrected_label": "pneumonia"})
    assert r.status_code == 201 and r.json()["corrected_label"] == "pneumonia"
    bad = client.post(f"/v1/predictions/{pid}/feedback", headers=keys.h("clinician"),
                      json={"agree": False, "corrected_label": "fracture"})
    assert bad.status_code == 422 and "corrected_label" in bad.json()["error"]["message"]
    missing = client.post(f"/v1/predictions/{'0' * 32}/feedback", headers=keys.h("clinician"), json={"agree": True})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    got = client.get(f"/v1/predictions/{pid}", headers=keys.h("clinician")).json()
    assert [f["agree"] for f in got["feedback"]] == [False]


def test_auth_codes(client):
    keys = client.keys
    r = client.get("/v1/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert client.get("/v1/models", headers={"Authorization": "Bearer rlk_nothere_xxxx"}).status_code == 401
    bad_secret = keys.clinician.rsplit("_", 1)[0] + "_wrong"
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {bad_secret}"}).status_code == 401
    assert client.get("/v1/models", headers={"X-API-Key": keys.auditor}).status_code == 200
    # wrong roles
    r = client.post("/v1/predictions", headers=keys.h("auditor"), files={"file": ("u", b"x")})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert client.get("/v1/audit/verify", headers=keys.h("clinician")).status_code == 403
    assert client.get("/v1/keys", headers=keys.h("auditor")).status_code == 403
    assert client.get("/metrics", headers=keys.h("clinician")).status_code == 403
    assert client.get("/metrics").status_code == 401
    assert client.get("/viewer/").status_code == 200  # the viewer shell is public; its data calls are not


def test_admin_manages_keys(client):
    keys = client.keys
    r = client.post("/v1/keys", headers=keys.h("admin"), json={"role": "clinician", "label": "ward 3"})
    assert r.status_code == 201
    new = r.json()
    assert new["api_key"].startswith("rlk_")
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {new['api_key']}"}).json()["role"] == "clinician"
    listed = client.get("/v1/keys", headers=keys.h("admin")).json()
    assert all(k["api_key"] is None for k in listed) and new["key_id"] in {k["key_id"] for k in listed}
    assert client.delete(f"/v1/keys/{new['key_id']}", headers=keys.h("admin")).json()["revoked_at"]
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {new['api_key']}"}).status_code == 401


@pytest.mark.parametrize("payload, status, code", [
    (b"", 415, "unreadable_image"),
    (b"this is not an image at all", 415, "unreadable_image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, 415, "unreadable_image"),
    (b"\xff\xd8\xff\xe0" + b"garbage" * 10, 415, "unreadable_image"),
])
def test_bad_uploads_are_4xx_json(client, payload, status, code):
    r = _upload(client, client.keys, payload, ctype="application/octet-stream")
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]


def test_truncated_and_pixelless_dicom(client, siim_dicom):
    data = siim_dicom.read_bytes()
    r = _upload(client, client.keys, data[: len(data) // 2])
    assert r.status_code == 422 and r.json()["error"]["code"] == "truncated_file"
    r = _upload(client, client.keys, dataset_without_pixels())
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_pixel_data"
    r = client.post("/v1/predictions", headers=client.keys.h("clinician"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"


def test_models_metrics_openapi(client, kermany_samples):
    keys = client.keys
    m = client.get("/v1/models", headers=keys.h("clinician")).json()["models"][0]
    assert m["class_names"] == ["pneumonia"] and m["input_size"] == [32, 32]
    # the .pt bundle with the default settings: Grad-CAM, drawn as the class activation map from the forward
    # pass (equal for small_cnn's pooling + linear head), and the review flag sees the MC-dropout spread
    assert m["heatmap_method"] == "cam" and m["uncertainty_method"] == "mc-dropout"
    assert "MC-dropout spread of 8 passes" in m["review_basis"]
    _upload(client, keys, kermany_samples[0][0].read_bytes(), ctype="image/jpeg", heatmap=False)
    text = client.get("/metrics", headers=keys.h("auditor")).text
    assert 'radiolens_predictions_total{class_name="pneumonia"' in text
    assert 'radiolens_http_requests_total{method="POST",route="/v1/predictions",status="201"} 1.0' in text
    assert "radiolens_http_request_duration_seconds_bucket" in text
    schema = client.get("/openapi.json").json()
    for path in ("/v1/predictions", "/v1/predictions/{prediction_id}", "/v1/predictions/{prediction_id}/heatmap.png",
                 "/v1/predictions/{prediction_id}/feedback", "/v1/models", "/healthz", "/readyz", "/metrics"):
        assert path in schema["paths"], path
    out = schema["components"]["schemas"]["PredictionOut"]["properties"]
    for field in ("probabilities", "decision", "review", "model", "study_ref", "heatmap_url"):
        assert field in out
    ref = schema["paths"]["/v1/predictions"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    assert ref["$ref"].endswith("/PredictionOut")


def test_hooks_gate_and_annotate(app_factory, kermany_samples):
    from fastapi.testclient import TestClient

    class OutOfScope(InputError):
        code = "out_of_distribution"

    def gate(ctx):
        if ctx.image.pixels.mean() > 0.99:
            raise OutOfScope("upload: image is out of the model's scope")

    def annotate(ctx, result):
        result["monitoring"]["mean_intensity"] = ctx.image.pixels.mean()  # a numpy scalar on purpose

    app, keys = app_factory(PredictionHooks(input_gates=[gate], result_hooks=[annotate]))
    with TestClient(app) as c:
        r = _upload(c, keys, kermany_samples[0][0].read_bytes(), ctype="image/jpeg", heatmap=False)
        assert r.status_code == 201 and 0 < r.json()["monitoring"]["mean_intensity"] < 1
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.new("L", (64, 64), 255).save(buf, format="PNG")
        r = _upload(c, keys, buf.getvalue(), ctype="image/png")
        assert r.status_code == 422 and r.json()["error"]["code"] == "out_of_distribution"


# ---------------------------------------------------------------------- over a real socket
def test_size_limit_413_over_http(live, kermany_samples):
    srv, keys = live(max_upload_bytes=20_000)
    big = b"\x00" * 50_000
    r = httpx.post(f"{srv.url}/v1/predictions", headers=keys.h("clinician"), files={"file": ("u", big)}, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

    def chunks():  # no Content-Length: the limit must hold on the streamed body too
        # A well-formed multipart part whose file content streams on past the limit, so the parser keeps
        # reading (a malformed body would rightly be refused with 400 before the limit is reached).
        yield (b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"u\"\r\n"
               b"Content-Type: application/octet-stream\r\n\r\n")
        for _ in range(10):
            yield b"\x00" * 10_000
        yield b"\r\n--xyz--\r\n"

    r = httpx.post(f"{srv.url}/v1/predictions", headers=keys.h("clinician") | {"content-type": "multipart/form-data; "
                   "boundary=xyz"}, content=chunks(), timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    small = kermany_samples[0][0].read_bytes()
    assert len(small) < 20_000
    ok = httpx.post(f"{srv.url}/v1/predictions", headers=keys.h("clinician"), files={"file": ("u", small)},
                    params={"heatmap": "false"}, timeout=30)
    assert ok.status_code == 201


def test_timeout_504_over_http(live, kermany_samples):
    def slow_gate(ctx):
        time.sleep(2.0)

    srv, keys = live(PredictionHooks(input_gates=[slow_gate]), request_timeout_s=0.5)
    t0 = time.perf_counter()
    r = httpx.post(f"{srv.url}/v1/predictions", headers=keys.h("clinician"),
                   files={"file": ("u", kermany_samples[0][0].read_bytes())}, timeout=30)
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
    assert time.perf_counter() - t0 < 1.8


def test_concurrent_requests_over_http(live, kermany_samples, siim_dicom):
    from radiolens.serve.store import audit

    uploads = [p.read_bytes() for p, _ in kermany_samples] + [siim_dicom.read_bytes()] * 4
    # all 8 admitted at once (the default bound of 6 would answer two with 503: tests/serve/test_uploads.py)
    srv, keys = live(inference_workers=2, max_pending_uploads=len(uploads))

    def one(data):
        with httpx.Client(timeout=120) as c:
            return c.post(f"{srv.url}/v1/predictions", headers=keys.h("clinician"), files={"file": ("u", data)})

    with cf.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, uploads))
    assert [r.status_code for r in results] == [201] * len(uploads)
    ids = {r.json()["id"] for r in results}
    assert len(ids) == len(uploads)
    # identical uploads give identical answers under concurrency
    dicom_probs = {r.json()["probabilities"][0]["probability"] for r in results[-4:]}
    assert len(dicom_probs) == 1
    report = audit.verify(srv.server.config.app.state.service.engine)
    assert report.ok and report.rows == START_ROWS + len(uploads)


def test_png_upload_real_nih(client, data_dir):
    png = sorted((data_dir / "nih_chestxray14" / "images_fullres").glob("*.png"))[0]
    r = _upload(client, client.keys, png.read_bytes(), ctype="image/png")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["source_format"] == "png" and body["study_ref"].startswith("raster:")
    img = decode_png(client.get(body["image_url"], headers=client.keys.h("clinician")).content)
    assert max(img.shape) == 1024  # display copy capped at display_max_side


def test_burned_in_annotation_refused(client, siim_dicom):
    import io

    import pydicom

    ds = pydicom.dcmread(str(siim_dicom))
    ds.BurnedInAnnotation = "YES"
    buf = io.BytesIO()
    ds.save_as(buf)
    r = _upload(client, client.keys, buf.getvalue())
    assert r.status_code == 422 and r.json()["error"]["code"] == "burned_in_annotation"
    from radiolens.serve.store import audit

    assert audit.verify(client.app_.state.service.engine).rows == START_ROWS  # refused uploads leave no row


def test_mc_dropout_spread(app_factory, kermany_samples):
    from fastapi.testclient import TestClient

    data = kermany_samples[-1][0].read_bytes()
    spreads = {}
    for passes in (0, 16):
        app, keys = app_factory(mc_dropout_passes=passes)
        with TestClient(app) as c:
            r = _upload(c, keys, data, ctype="image/jpeg", heatmap=False)
            assert r.status_code == 201
            spreads[passes] = r.json()["review"]["spread"]
    assert spreads[0] is None
    assert 0.0 < spreads[16] < 0.5  # small_cnn has dropout 0.2 before its head: the passes really differ


def test_triage_rule_is_used_and_failure_falls_back(client, kermany_samples):
    triage = client.app_.state.service.predictor.triage
    seen = []

    class Rule:
        def flag(self, prob, spread):  # the rule sees every output's probability and spread
            seen.append((prob, spread))
            return True, f"uncertain (spread {float(max(spread)):.3f})"

    class Broken:
        def flag(self, prob, spread):
            raise RuntimeError("boom")

    data = kermany_samples[0][0].read_bytes()
    triage.rule, triage.rule_name = Rule(), "bundle_triage_rule"
    body = _upload(client, client.keys, data, ctype="image/jpeg", heatmap=False).json()
    assert body["review"]["flag"] is True and body["review"]["rule"] == "bundle_triage_rule"
    assert seen and list(seen[0][0]) == pytest.approx([p["probability"] for p in body["probabilities"]], abs=1e-6)
    assert list(seen[0][1]) == pytest.approx([body["review"]["spread"]], abs=1e-6)
    triage.rule = Broken()
    r = _upload(client, client.keys, data, ctype="image/jpeg", heatmap=False)
    assert r.status_code == 201 and "failed->near_threshold_fallback" in r.json()["review"]["rule"]
