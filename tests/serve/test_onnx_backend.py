"""The service on ONNX Runtime: same calibrated probabilities as PyTorch (fp32), close on INT8, the
backend named in responses and audit rows, the input gate fed by the exported embedding, and an export of
another model refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from tests.serve.conftest import registered_export
from typer.testing import CliRunner

from radiolens.cli import app as cli_app
from radiolens.errors import ConfigError
from radiolens.models.quantize import quantize_onnx
from radiolens.serve.store.tables import AuditEntry

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def exported(bundle_path: Path, kermany_dir: Path, tmp_path_factory):
    """The service test model registered with a monitoring baseline, its fp32 export and an INT8 version."""
    out = tmp_path_factory.mktemp("onnx")
    model, _, batch = registered_export(bundle_path, kermany_dir, out, "m.onnx", 64)
    quantize_onnx(out / "m.onnx", out / "m.int8.onnx", batch)
    return model, out / "m.onnx", out / "m.int8.onnx"


def _predict_all(app, keys, files):
    out = []
    with TestClient(app) as c:
        for p in files:
            ctype = "application/dicom" if p.suffix == ".dcm" else "image/jpeg"
            r = c.post("/v1/predictions", headers=keys.h("clinician"), params={"heatmap": "false"},
                       files={"file": ("u", p.read_bytes(), ctype)})
            assert r.status_code == 201, r.text
            out.append(r.json())
    return out


def test_onnx_backend_matches_torch(app_factory, exported, kermany_samples, siim_dicom, pydicom_data_files):
    model, fp32, int8 = exported
    files = [p for p, _ in kermany_samples] + [siim_dicom, next(p for p in pydicom_data_files
                                                                if p.name == "MR2_UNCR.dcm")]
    app_t, keys_t = app_factory(model_path=model, state_dir=Path(str(model) + "-t"))
    ref = _predict_all(app_t, keys_t, files)
    app_o, keys_o = app_factory(model_path=model, backend="onnx", onnx_path=fp32, state_dir=Path(str(model) + "-o"))
    got = _predict_all(app_o, keys_o, files)
    assert got[0]["model"]["backend"] == "onnx" and got[0]["model"]["precision"] == "fp32"
    assert got[0]["model"]["backend_sha256"] and got[0]["model"]["sha256"] == ref[0]["model"]["sha256"]
    for a, b in zip(ref, got, strict=True):
        assert a["status"] == b["status"]
        assert a["monitoring"]["gate"]["ood_score"] == pytest.approx(b["monitoring"]["gate"]["ood_score"], rel=1e-3)
        pa = [p["probability"] for p in a["probabilities"]]
        pb = [p["probability"] for p in b["probabilities"]]
        np.testing.assert_allclose(pa, pb, atol=1e-4)
    assert got[-1]["status"] == "out_of_distribution"  # the MR slice, on either backend
    with Session(app_o.state.service.engine) as s:
        rows = [json.loads(a.outputs_json) for a in s.scalars(select(AuditEntry).where(
            AuditEntry.event == "prediction"))]
    assert rows and all(r["backend"] == "onnx" for r in rows)

    app_q, keys_q = app_factory(model_path=model, backend="onnx", onnx_path=int8, state_dir=Path(str(model) + "-q"))
    q = _predict_all(app_q, keys_q, files[:-1])
    assert q[0]["model"]["precision"] == "int8"
    for a, b in zip(ref[:-1], q, strict=True):
        np.testing.assert_allclose([p["probability"] for p in a["probabilities"]],
                                   [p["probability"] for p in b["probabilities"]], atol=0.05)


def test_export_of_another_model_is_refused(app_factory, exported, bundle_path, tmp_path):
    _, fp32, _ = exported
    with pytest.raises(ConfigError, match="not exported from"):
        app_factory(model_path=bundle_path, backend="onnx", onnx_path=fp32)
    r = CliRunner().invoke(cli_app, ["serve", "--model", str(bundle_path), "--backend", "onnx"])
    assert r.exit_code == 2 and "needs --onnx" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli_app, ["serve", "--model", str(bundle_path), "--backend", "onnx", "--onnx", str(fp32)],
                           env={"RADIOLENS_DEID_SECRET": "a-long-enough-test-secret"})
    assert r.exit_code == 2 and "not exported from" in r.output
