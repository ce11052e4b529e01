"""Every error the API answers with tells the person at the viewer what to do, in words they can act on: an
``action`` beside the ``message``, and no command-line flag in either (a clinician cannot restart the service)."""

from __future__ import annotations

import io
import re

import pydicom
import pytest
from tests.serve.conftest import dataset_without_pixels

import radiolens.errors
from radiolens.serve.http.error_actions import ACTIONS, action_for

CLI_FLAG = re.compile(r"(^|\s)--[a-z]")


def _assert_actionable(r, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert err["message"].strip() and err["action"].strip()
    assert err["action"] == ACTIONS[code]  # a specific action, not the generic fallback
    for text in (err["message"], err["action"]):
        assert not CLI_FLAG.search(text), text


def _upload(client, key: str, data: bytes, ctype: str = "application/dicom"):
    return client.post("/v1/predictions", headers={"Authorization": f"Bearer {key}"},
                       files={"file": ("upload.dcm", data, ctype)})


def _with(path, **attrs) -> bytes:
    ds = pydicom.dcmread(str(path))
    for k, v in attrs.items():
        setattr(ds, k, v)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_refused_ultrasound_names_no_flag_and_says_what_to_do(client, pydicom_data_files):
    us = next(p for p in pydicom_data_files if p.name == "US1_UNCR.dcm")  # real ultrasound, BurnedInAnnotation absent
    r = _upload(client, client.keys.clinician, us.read_bytes())
    _assert_actionable(r, 422, "burned_in_annotation")
    assert "US" in r.json()["error"]["message"] and "allow-burned-in" not in r.text


def test_every_upload_error_is_actionable(client, siim_dicom, pydicom_data_files):
    chest = siim_dicom.read_bytes()
    k = client.keys.clinician
    by_name = {p.name: p for p in pydicom_data_files}
    cases = [
        (b"", "application/octet-stream", 415, "unreadable_image"),
        (b"plain text, not an image " * 10, "application/octet-stream", 415, "unreadable_image"),
        (chest[: len(chest) // 2], "application/dicom", 422, "truncated_file"),
        (dataset_without_pixels(), "application/dicom", 422, "no_pixel_data"),
        (_with(siim_dicom, BurnedInAnnotation="YES"), "application/dicom", 422, "burned_in_annotation"),
        (by_name["US1_UNCR.dcm"].read_bytes(), "application/dicom", 422, "burned_in_annotation"),
    ]
    for data, ctype, status, code in cases:
        _assert_actionable(_upload(client, k, data, ctype), status, code)
    _assert_actionable(client.post("/v1/predictions", headers=client.keys.h("clinician")), 422, "validation_error")


def test_every_request_error_is_actionable(client, app_factory, siim_dicom):
    from fastapi.testclient import TestClient

    keys = client.keys
    _assert_actionable(client.get("/v1/me"), 401, "unauthorized")
    _assert_actionable(client.get("/v1/me", headers={"Authorization": "Bearer rlk_nope_nope"}), 401, "unauthorized")
    _assert_actionable(_upload(client, keys.auditor, siim_dicom.read_bytes()), 403, "forbidden")
    _assert_actionable(client.get("/v1/predictions/" + "0" * 32, headers=keys.h("clinician")), 404, "not_found")
    _assert_actionable(client.get("/v1/no-such-route"), 404, "not_found")
    _assert_actionable(client.put("/v1/predictions", headers=keys.h("clinician")), 405, "method_not_allowed")
    small, small_keys = app_factory(max_upload_bytes=4096)
    with TestClient(small) as c:
        _assert_actionable(_upload(c, small_keys.clinician, siim_dicom.read_bytes()), 413, "payload_too_large")
        r = c.post("/v1/predictions", headers={**small_keys.h("clinician"), "Content-Length": "x"}, content=b"")
        _assert_actionable(r, 400, "bad_request")


def test_server_faults_are_actionable_without_internals(app_factory, siim_dicom):
    from fastapi.testclient import TestClient

    from radiolens.errors import ModelError
    from radiolens.serve.runtime.hooks import PredictionHooks

    def broken(ctx):
        raise ModelError("/secret/path/model.pt: layer conv1 shape mismatch")

    app, keys = app_factory(hooks=PredictionHooks(input_gates=[broken]))
    with TestClient(app, raise_server_exceptions=False) as c:
        r = _upload(c, keys.clinician, siim_dicom.read_bytes())
    assert r.status_code == 500 and "secret" not in r.text
    err = r.json()["error"]
    assert err["action"] == action_for("internal_error", 500) and not CLI_FLAG.search(err["action"])


def _codes(module) -> set[str]:
    return {obj.code for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, radiolens.errors.InputError)}


def test_every_input_error_code_has_its_own_action():
    """A new error type without an entry would fall back to a generic action: fail here instead."""
    from radiolens.serve.runtime import service
    from radiolens.serve.store import audit, auth

    # inputs of CLI commands only (manifests, `monitor baseline`) and of the Python API only (in-memory arrays
    # and objects given to `radiolens.load_model(...).predict`), never an HTTP answer
    cli_only = {radiolens.errors.ManifestError.code, radiolens.errors.DataLeakageError.code,
                radiolens.errors.GateCalibrationError.code, radiolens.errors.PixelRangeError.code,
                radiolens.errors.UnsupportedInputError.code}
    missing = (_codes(radiolens.errors) | _codes(service) | _codes(audit) | _codes(auth)) - cli_only - set(ACTIONS)
    assert not missing
    for code, action in ACTIONS.items():
        assert action.strip() and not CLI_FLAG.search(action), code


@pytest.mark.parametrize("status", [400, 500])
def test_unknown_codes_still_get_an_action(status):
    assert action_for("something_new", status).strip()
