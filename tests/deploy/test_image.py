"""The serving image (deploy/container/Dockerfile, built by scripts/build-image.sh) runs as the Kubernetes
manifests run it and answers a real DICOM.

The image is built (or taken from podman's layer cache) and started as deploy/kubernetes/base does:
read-only root filesystem, user 10001, a tmpfs /tmp, the state volume, the de-identification secret as a file,
the model read-only at /models/model.onnx; ``--init`` makes an init process PID 1, which forwards SIGTERM. The
model is a real export of the service tests' trained bundle; the upload is the real SIIM chest DICOM.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless
from tests.serve.conftest import (  # noqa: F401
    SECRET,
    bundle_path,
    free_port,
    kermany_dir,
    siim_dicom,
    siim_original,
    wait_until_ready,
)
from tests.serve.test_torch_free import exported  # noqa: F401

import radiolens
from radiolens.models.export import FP32_TOLERANCE

ROOT = Path(radiolens.__file__).parents[2]
IMAGE = f"radiolens-serve:{radiolens.__version__}"
MAX_IMAGE_BYTES = 600 * 1000 * 1000
UID = 10001

pytestmark = pytest.mark.slow


def _podman(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    assert not check or done.returncode == 0, f"podman {' '.join(args)}: {done.stderr[-3000:]}"
    return done


class _Container:
    """A running container seen as a process (``poll()`` is None while it runs), for the service tests'
    readiness wait."""

    def __init__(self, name: str):
        self.name = name

    def poll(self) -> int | None:
        running = _podman("inspect", "--format", "{{.State.Running}}", self.name, check=False).stdout.strip()
        return None if running == "true" else 1


def _with_text(path: Path, folder: Path) -> Path:
    """``path`` with a name and an ID burned into its pixels while its header still says BurnedInAnnotation NO:
    only OCR of the pixels can refuse it."""
    from PIL import Image, ImageDraw, ImageFont

    ds = pydicom.dcmread(path)
    ds.decompress(decoding_plugin="pillow")
    pixels = ds.pixel_array
    canvas = Image.fromarray(np.zeros(pixels.shape, dtype=np.uint8))
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", max(12, pixels.shape[0] // 30))
    ImageDraw.Draw(canvas).text((pixels.shape[1] // 20, pixels.shape[0] // 20), "DOE^JANE 4417203", fill=255, font=font)
    pixels = np.where(np.asarray(canvas) > 127, np.iinfo(pixels.dtype).max, pixels).astype(pixels.dtype)
    ds.PixelData = pixels.tobytes()
    ds.BurnedInAnnotation = "NO"
    out = folder / "burned-in-text.dcm"
    ds.save_as(out, enforce_file_format=True)
    return out


def _recoded(path: Path, syntax: pydicom.uid.UID, folder: Path) -> Path:
    """``path`` decoded as the service decodes JPEG baseline (Pillow) and losslessly re-encoded as ``syntax``."""
    ds = pydicom.dcmread(path)
    ds.decompress(decoding_plugin="pillow")
    ds.compress(syntax)
    out = folder / f"recoded-{syntax.name.split()[0]}.dcm"
    ds.save_as(out, enforce_file_format=True)
    return out


@pytest.fixture(scope="module")
def image() -> str:
    if os.geteuid() != 0 and shutil.which("podman") is None:
        pytest.skip("building the image needs podman, or root to install it")
    t0 = time.monotonic()
    build = subprocess.run([str(ROOT / "scripts" / "build-image.sh")], env={**os.environ, "IMAGE": IMAGE},
                           capture_output=True, text=True, timeout=3600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    print(f"[image] build (or cache reuse): {time.monotonic() - t0:.0f} s")
    return IMAGE


def test_image_is_non_root_and_serves_a_real_dicom(image, exported, siim_dicom, tmp_path):  # noqa: F811
    info = json.loads(_podman("image", "inspect", image).stdout)[0]
    size = info["Size"]
    config = info["Config"]
    print(f"[image] size: {size / 1e6:.0f} MB")
    assert config["User"] == f"{UID}:{UID}"
    assert "/healthz" in " ".join(info["Healthcheck"]["Test"])

    # The volumes, owned as the pod's fsGroup/runAsUser would leave them; the secret private to the user.
    _, onnx_path = exported
    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(onnx_path, models / "model.onnx")
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, UID, UID)
    secret = tmp_path / "deid-secret"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    os.chown(secret, UID, UID)

    name = f"radiolens-image-test-{os.getpid()}"
    port = free_port()
    started = time.monotonic()
    _podman("run", "-d", "--name", name, "--read-only", "--init", "--user", f"{UID}:{UID}",
            "--cap-drop=ALL", "--security-opt=no-new-privileges",
            "--tmpfs", "/tmp:rw,size=512m,mode=1777",
            "-v", f"{state}:/var/lib/radiolens",
            "-v", f"{models}:/models:ro",
            "-v", f"{secret}:/run/secrets/radiolens/deid-secret:ro",
            "-p", f"127.0.0.1:{port}:8000", image)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, _Container(name), started + 300 - time.monotonic(),
                         why=lambda: _podman("logs", name, check=False).stderr)
        load = os.getloadavg()
        print(f"[image] cold start (run -> /readyz 200): {time.monotonic() - started:.1f} s on {os.cpu_count()} "
              f"cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")

        assert _podman("exec", name, "id", "-u").stdout.strip() == str(UID)
        ro = _podman("exec", name, "python", "-c", "open('/opt/radiolens/probe', 'w')", check=False)
        assert ro.returncode != 0 and "Read-only file system" in ro.stderr
        assert _podman("healthcheck", "run", name, check=False).returncode == 0

        created = _podman("exec", name, "radiolens", "users", "create", "--role", "clinician", "--state-dir",
                          "/var/lib/radiolens/state")
        key = created.stdout.strip().splitlines()[-1]
        r = httpx.post(f"{url}/v1/predictions", headers={"Authorization": f"Bearer {key}"},
                       files={"file": ("upload", siim_dicom.read_bytes(), "application/dicom")}, timeout=120)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["model"]["backend"] == "onnx"
        assert body["source_format"] == "dicom"
        assert body["status"] != "ok" or 0.0 <= body["probabilities"][0]["probability"] <= 1.0
        # JPEG 2000 and JPEG-LS DICOM decode in the image without python-gdcm (pylibjpeg plugins): the same
        # pixels, losslessly re-encoded, give the same prediction as the original upload.
        for syntax in (JPEG2000Lossless, JPEGLSLossless):
            recoded = _recoded(siim_dicom, syntax, tmp_path)
            again = httpx.post(f"{url}/v1/predictions", headers={"Authorization": f"Bearer {key}"},
                               files={"file": ("upload", recoded.read_bytes(), "application/dicom")}, timeout=120)
            assert again.status_code == 201, (syntax.name, again.text)
            assert again.json()["status"] == body["status"], syntax.name
            np.testing.assert_allclose([p["probability"] for p in again.json()["probabilities"]],
                                       [p["probability"] for p in body["probabilities"]], atol=FP32_TOLERANCE)
        # OCR runs in the image (tesserocr's libtesseract, Debian's English model; no Tesseract program): text
        # burned into the pixels is refused by the default policy although the header says there is none.
        assert _podman("exec", name, "sh", "-c", "command -v tesseract", check=False).returncode != 0
        # The learned text detector's model was fetched at build time: found offline, where the image names it.
        found = _podman("exec", name, "python", "-c", "import os; from radiolens.io import text_detector as t; "
                        "p = t.model_path(download=False); t.check(p); "
                        "print(p == t.Path(os.environ[t.ENV]), t._sha256(p.read_bytes()) == t.MODEL_SHA256)")
        assert found.stdout.split() == ["True", "True"], found
        text = httpx.post(f"{url}/v1/predictions", headers={"Authorization": f"Bearer {key}"},
                          files={"file": ("upload", _with_text(siim_dicom, tmp_path).read_bytes(),
                                          "application/dicom")}, timeout=120)
        assert text.status_code == 422 and text.json()["error"]["code"] == "burned_in_annotation", text.text
        # Written as the service's user into the state volume; nothing outside it.
        assert all(p.stat().st_uid == UID for p in (state / "state").rglob("*"))

        # SIGTERM reaches the service through the init process: it stops well before podman's SIGKILL.
        stop_started = time.monotonic()
        _podman("stop", "--time", "60", name, timeout=120)
        assert time.monotonic() - stop_started < 60
        assert _podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip() != "137"
    finally:
        _podman("rm", "-f", name, check=False)


def test_image_is_under_600_mb(image):
    size = json.loads(_podman("image", "inspect", image).stdout)[0]["Size"]
    assert size < MAX_IMAGE_BYTES, f"{size / 1e6:.0f} MB"
