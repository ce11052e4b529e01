"""Serving and batch scoring an ONNX export with PyTorch made unimportable (a ``radiolens[serve]`` install).

The subprocesses run with an import blocker (``sitecustomize``) that refuses torch, every other train-only
package and the other extras' packages (pandas, pyarrow, python-gdcm: ``radiolens.errors.EXTRA_OF_MODULE``) as an
uninstalled package would. They serve the export over a
real socket and batch-score with it; the probabilities must equal the PyTorch bundle's on the same real images
within the export's own parity tolerance (``models.export.FP32_TOLERANCE``), the preprocessed input must
equal PyTorch's to float rounding, and the heatmaps (drawn from the export's feature maps, no gradients) must
equal the Grad-CAM heatmaps of the PyTorch bundle up to their 8-bit rendering.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from tests.serve.conftest import SECRET, decode_png, free_port, registered_export, wait_until_ready
from typer.testing import CliRunner

import radiolens
from radiolens.cli import app as cli_app
from radiolens.data.model_input import to_model_array_pillow
from radiolens.data.transforms import to_model_tensor
from radiolens.errors import EXTRA_OF_MODULE, RadiolensError
from radiolens.io import read_image
from radiolens.models.bundle import ModelBundle
from radiolens.models.export import FP32_TOLERANCE

pytestmark = pytest.mark.realdata

#: Pillow's and PyTorch's antialiased bilinear resize differ by float rounding only: measured <= 1.1e-5 on
#: [0, 1] pixels, so <= 5e-5 after normalising with std 0.25.
PREPROCESS_TOLERANCE = 1e-4
#: Heatmap PNGs are 8-bit renderings of maps in [0, 1] that agree to 1e-4 (tests/models/test_feature_cam.py):
#: truncation to 8 bits, the bilinear resize and the colour map's steps can move a pixel by a level or two
#: (measured: at most 1 level, over the service's and batch scoring's PNGs).
HEATMAP_PNG_LEVELS = 2

BLOCKER = f"""
import importlib.abc
import sys

BLOCKED = {sorted(EXTRA_OF_MODULE)!r}


class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
"""


@pytest.fixture(scope="module")
def exported(bundle_path: Path, kermany_dir: Path, tmp_path_factory):
    """The service test model registered with a monitoring profile, and its fp32 ONNX export."""
    model, onnx_path, _ = registered_export(bundle_path, kermany_dir, tmp_path_factory.mktemp("torch_free"),
                                            "model.onnx", 32)
    return model, onnx_path


@pytest.fixture(scope="module")
def no_torch_env(tmp_path_factory) -> dict[str, str]:
    site = tmp_path_factory.mktemp("no_torch_site")
    (site / "sitecustomize.py").write_text(BLOCKER)
    src = str(Path(radiolens.__file__).parents[1])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=os.pathsep.join([str(site), src]), RADIOLENS_DEID_SECRET=SECRET)
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert check.returncode != 0 and "No module named 'torch'" in check.stderr  # the blocker works
    return env


def _cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "radiolens.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_preprocessing_without_torch_equals_torch_on_real_images(kermany_samples, siim_dicom, pydicom_data_files):
    images = [read_image(p) for p, _ in kermany_samples] + [read_image(siim_dicom)]
    for path in pydicom_data_files:  # CT, MR, US, ...: other sizes and intensity histograms
        if len(images) >= len(kermany_samples) + 5:
            break
        try:
            images.append(read_image(path))
        except RadiolensError:
            continue
    worst = 0.0
    for image in images:
        for size in ((32, 32), (224, 224), (320, 256)):
            ref = to_model_tensor(image.first_frame(), size, 0.5, 0.25).numpy()
            ours = to_model_array_pillow(image.first_frame(), size, 0.5, 0.25)
            assert ours.shape == ref.shape == (1, *size) and ours.dtype == np.float32
            worst = max(worst, float(np.max(np.abs(ours - ref))))
    assert worst < PREPROCESS_TOLERANCE, worst


def test_serves_a_real_dicom_without_torch(exported, no_torch_env, siim_dicom, kermany_samples, app_factory,
                                           tmp_path):
    pt, onnx_path = exported
    state = tmp_path / "lean-state"
    created = _cli(no_torch_env, "users", "create", "--role", "clinician", "--state-dir", str(state))
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "radiolens.cli", "serve", "--model", str(onnx_path),
                             "--state-dir", str(state), "--port", str(port), "--inference-workers", "1"],
                            env=no_torch_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    uploads = [(siim_dicom, "application/dicom")] + [(p, "image/jpeg") for p, _ in kermany_samples[:2]]
    auth = {"Authorization": f"Bearer {key}"}
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, proc, 180, why=lambda: proc.stdout.read() if proc.poll() is not None else "no start")
        models = httpx.get(f"{url}/v1/models", headers=auth, timeout=60).json()["models"][0]
        lean, lean_heat = [], []
        for path, ctype in uploads:
            r = httpx.post(f"{url}/v1/predictions", headers=auth,
                           files={"file": ("upload", path.read_bytes(), ctype)}, timeout=120)
            assert r.status_code == 201, r.text
            lean.append(r.json())
            hurl = r.json()["heatmap_url"]
            lean_heat.append(None if hurl is None else httpx.get(url + hurl, headers=auth, timeout=60).content)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert "MC-dropout is unavailable" in out and "no heatmaps" not in out
    # what is in force instead of Grad-CAM and MC-dropout, said by the API
    assert models["heatmap_method"] == "cam" and models["uncertainty_method"] == "none"
    assert "probabilities" in models["review_basis"]
    app, keys = app_factory(model_path=pt, mc_dropout_passes=0, heatmaps=True)
    with TestClient(app) as c:
        ref_models = c.get("/v1/models", headers=keys.h("clinician")).json()["models"][0]
        ref = [c.post("/v1/predictions", headers=keys.h("clinician"),
                      files={"file": ("upload", p.read_bytes(), ctype)}).json() for p, ctype in uploads]
        ref_heat = [None if r["heatmap_url"] is None else c.get(r["heatmap_url"], headers=keys.h("clinician")).content
                    for r in ref]
    assert ref_models["heatmap_method"] == "cam" and ref_models["uncertainty_method"] == "none"
    bundle_sha = ModelBundle.load(pt).sha256
    for got, want, got_png, want_png in zip(lean, ref, lean_heat, ref_heat, strict=True):
        assert got["model"]["backend"] == "onnx" and want["model"]["backend"] == "torch"
        assert got["model"]["sha256"] == want["model"]["sha256"] == bundle_sha  # audit names the same model
        assert got["status"] == want["status"]
        assert got["review"]["flag"] == want["review"]["flag"]
        p_got = [s["probability"] for s in got["probabilities"]]
        p_want = [s["probability"] for s in want["probabilities"]]
        assert len(p_got) == len(p_want)
        np.testing.assert_allclose(p_got, p_want, atol=FP32_TOLERANCE)
        assert got["decision"] == want["decision"]
        # a heatmap without torch exactly where the PyTorch bundle draws one, for the same target, same picture
        assert (got["heatmap_url"] is None) == (want["heatmap_url"] is None)
        assert got["heatmap_target"] == want["heatmap_target"]
        if want_png is not None:
            a, b = decode_png(got_png).astype(int), decode_png(want_png).astype(int)
            assert a.shape == b.shape and a.shape[-1] == 4
            assert np.abs(a - b).max() <= HEATMAP_PNG_LEVELS, np.abs(a - b).max()
    assert any(r["status"] == "ok" and r["probabilities"] for r in lean)  # something was really scored
    assert any(png is not None for png in lean_heat)  # and a heatmap came back without torch


def test_predict_scores_without_torch(exported, no_torch_env, siim_dicom, kermany_samples, tmp_path):
    pt, onnx_path = exported
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "chest.dcm").write_bytes(siim_dicom.read_bytes())
    for i, (p, _) in enumerate(kermany_samples[:3]):
        (folder / f"k{i}.jpeg").write_bytes(p.read_bytes())
    lean = _cli(no_torch_env, "predict", str(folder), "--model", str(onnx_path), "--out", str(tmp_path / "lean.csv"),
                "--no-progress", "--workers", "0", "--heatmaps-for-flagged", str(tmp_path / "lean-heat"))
    assert lean.returncode == 0, lean.stderr
    ref = CliRunner().invoke(cli_app, ["predict", str(folder), "--model", str(pt), "--out",
                                       str(tmp_path / "ref.csv"), "--no-progress", "--workers", "0",
                                       "--heatmaps-for-flagged", str(tmp_path / "ref-heat")])
    assert ref.exit_code == 0, ref.output

    def rows(name):
        with open(tmp_path / name) as fh:
            return {Path(r["path"]).name: r for r in csv.DictReader(fh)}

    got, want = rows("lean.csv"), rows("ref.csv")
    assert set(got) == set(want) == {"chest.dcm", "k0.jpeg", "k1.jpeg", "k2.jpeg"}
    assert sum(r["status"] == "ok" for r in got.values()) >= 3  # scored, not refused or failed
    for name in got:
        assert got[name]["status"] == want[name]["status"]
        if want[name]["status"] == "ok":
            assert abs(float(got[name]["p_pneumonia"]) - float(want[name]["p_pneumonia"])) <= FP32_TOLERANCE
        # heatmaps (positive or flagged cases) for the same rows, equal to the Grad-CAM ones up to 8-bit rendering
        assert got[name]["heatmap"] == want[name]["heatmap"]
        if want[name]["heatmap"]:
            a = np.asarray(Image.open(tmp_path / "lean-heat" / got[name]["heatmap"])).astype(int)
            b = np.asarray(Image.open(tmp_path / "ref-heat" / want[name]["heatmap"])).astype(int)
            assert a.shape == b.shape and np.abs(a - b).max() <= HEATMAP_PNG_LEVELS, np.abs(a - b).max()
    assert any(r["heatmap"] for r in got.values())


def test_training_commands_say_which_extra_to_install(no_torch_env, tmp_path):
    config = Path(radiolens.__file__).parents[2] / "configs" / "kermany_binary.yaml"
    r = _cli(no_torch_env, "train", "--config", str(config), "--out", str(tmp_path / "run"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'radiolens[train]'" in lines[0] and "Traceback" not in r.stderr
    pt = _cli(no_torch_env, "predict", str(tmp_path), "--model", str(tmp_path / "model.pt"), "--out",
              str(tmp_path / "r.csv"))
    assert pt.returncode == 2 and "radiolens[train]" in pt.stderr and "Traceback" not in pt.stderr


def test_parquet_output_says_which_extra_before_scoring(exported, no_torch_env, kermany_samples, tmp_path):
    """Without pyarrow (a ``radiolens[serve]`` install) Parquet output is refused up front, naming its extra."""
    _, onnx_path = exported
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "k.jpeg").write_bytes(kermany_samples[0][0].read_bytes())
    r = _cli(no_torch_env, "predict", str(folder), "--model", str(onnx_path), "--out", str(tmp_path / "r.parquet"),
             "--no-progress", "--workers", "0")
    assert r.returncode == 2 and "pip install 'radiolens[tables]'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "r.parquet").exists() and not (tmp_path / "r.parquet.parts").exists()


@pytest.mark.slow
def test_serve_extra_installs_without_torch_and_serves_a_real_dicom(exported, siim_dicom, tmp_path):
    """``pip install 'radiolens[serve]'`` into a fresh virtualenv (from PyPI, through this machine's pip
    configuration): no torch, pandas, pyarrow or python-gdcm there, and ``radiolens serve --model FILE.onnx``
    answers a real DICOM."""
    _, onnx_path = exported
    root = Path(radiolens.__file__).parents[2]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run([str(py), "-m", "pip", "install", "--quiet", f"{root}[serve]"], env=env,
                             capture_output=True, text=True, timeout=1800)
    assert install.returncode == 0, install.stderr[-3000:]
    for absent in ("torch", "pandas", "pyarrow", "gdcm"):  # train stack and the tables/gdcm extras stay out
        check = subprocess.run([str(py), "-c", f"import {absent}"], env=env, capture_output=True, text=True)
        assert check.returncode != 0 and f"No module named '{absent}'" in check.stderr
    env["RADIOLENS_DEID_SECRET"] = SECRET
    cli = venv / "bin" / "radiolens"
    state = tmp_path / "state"
    created = subprocess.run([str(cli), "users", "create", "--role", "clinician", "--state-dir", str(state)],
                             env=env, capture_output=True, text=True, timeout=300)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    port = free_port()
    proc = subprocess.Popen([str(cli), "serve", "--model", str(onnx_path), "--state-dir", str(state), "--port",
                             str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, proc, 180, why=lambda: proc.stdout.read() if proc.poll() is not None else "no start")
        r = httpx.post(f"{url}/v1/predictions", headers={"Authorization": f"Bearer {key}"},
                       files={"file": ("upload", siim_dicom.read_bytes(), "application/dicom")}, timeout=120)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["model"]["backend"] == "onnx"
        assert body["status"] != "ok" or body["heatmap_url"] is not None  # drawn from the feature maps
        assert body["source_format"] == "dicom"
        assert body["status"] != "ok" or 0.0 <= body["probabilities"][0]["probability"] <= 1.0
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    sizes = subprocess.run(["du", "-sh", str(venv)], capture_output=True, text=True).stdout.split()
    print(f"[serve] virtualenv: {sizes[0] if sizes else '?'}")
