"""Fixtures for the service tests: a small model trained briefly on real Kermany images, apps on SQLite or
PostgreSQL, live uvicorn servers on loopback, API keys, and a real chest DICOM with planted PHI."""

from __future__ import annotations

import csv
import io
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset

from radiolens.models.bundle import BundleInfo, ModelBundle
from radiolens.models.registry import create_model

SECRET = "test-deid-secret-not-for-production"

# PHI planted into uploads; none of these strings may reach the DB, logs or artefacts.
PHI = {
    "PatientName": "Zebulon^Quixotic",
    "PatientID": "PID-99887766",
    "PatientBirthDate": "19470329",
    "InstitutionName": "Saint Hypothetical Infirmary",
    "ReferringPhysicianName": "Drummond^Wexley",
    "PerformingPhysicianName": "Ottoline^Vargas",
    "ImageComments": "patient Zebulon came by ambulance from 12 Larkspur Lane",
    "AccessionNumber": "ACC5544332211",
}
PRIVATE_VALUE = "PRIVATE-TAG-SECRET-7781"
#: Audit rows a fresh database holds once the service (or `radiolens serve`) has started: the ``deid_key_set``
#: row registering the de-identification secret's fingerprint (``service.check_deid_secret``).
START_ROWS = 1



#: What the Kermany data's documentation says of its patients (PROVENANCE.md: Kermany et al. 2018), as
#: configs/kermany_binary.yaml states it for a trained bundle.
KERMANY_POPULATION = {"description": "Paediatric chest radiographs (children aged 1-5 years, anterior-posterior "
                      "films; Kermany et al. 2018, Guangzhou)", "age_min_years": 1, "age_max_years": 5,
                      "views": ["AP"]}


@pytest.fixture(scope="session")
def kermany_dir(data_dir: Path) -> Path:
    root = data_dir / "kermany_pediatric_pneumonia"
    if not (root / "manifest.csv").is_file():
        pytest.fail(f"Kermany data missing under {root}")
    return root


def _kermany_rows(kermany_dir: Path, split: str, per_class: int) -> list[tuple[Path, int]]:
    rows: dict[int, list[tuple[Path, int]]] = {0: [], 1: []}
    with open(kermany_dir / "manifest.csv") as fh:
        for r in csv.DictReader(fh):
            if r["split"] == split and len(rows[int(r["label_int"])]) < per_class:
                rows[int(r["label_int"])].append((kermany_dir / r["path"], int(r["label_int"])))
    return rows[0] + rows[1]


@pytest.fixture(scope="session")
def bundle_path(tmp_path_factory, kermany_dir: Path, quick_fit) -> Path:
    """small_cnn (32 px input, to stay fast on 2 shared cores) trained for a few seconds on 240 real Kermany
    images, so outputs are meaningful rather than constant."""
    from radiolens.io import read_image

    torch.manual_seed(0)
    torch.set_num_threads(2)
    info = BundleInfo(arch="small_cnn", task="binary", class_names=["pneumonia"], input_size=(32, 32),
                      name="test-small-cnn", version="0.test", triage={}, population=KERMANY_POPULATION)
    bundle = ModelBundle(info=info, model=create_model("small_cnn", 1))
    rows = _kermany_rows(kermany_dir, "train", 120)
    x = torch.stack([bundle.preprocess(read_image(p)) for p, _ in rows])
    y = torch.tensor([[float(lab)] for _, lab in rows])
    quick_fit(bundle, x, y, epochs=3)
    path = tmp_path_factory.mktemp("model") / "small_cnn.pt"
    bundle.save(path)
    return path


def registered_export(bundle_path: Path, kermany_dir: Path, out: Path, onnx_name: str, n_check: int):
    """The service test model registered with a monitoring profile from every 5th Kermany validation image,
    saved as ``out/registered.pt``, and its fp32 ONNX export checked on the first ``n_check`` of those images.
    Returns (bundle file, ONNX file, the check batch)."""
    import csv

    import torch

    from radiolens.io import read_image
    from radiolens.models.bundle import ModelBundle
    from radiolens.models.export import export_onnx
    from radiolens.monitor import build_profile, register

    with open(kermany_dir / "manifest.csv") as fh:
        val = [kermany_dir / r["path"] for r in csv.DictReader(fh) if r["split"] == "val"][::5]
    bundle = ModelBundle.load(bundle_path)
    register(bundle, build_profile(bundle, (read_image(p) for p in val), None, source="kermany val"))
    model = out / "registered.pt"
    bundle.save(model)
    bundle = ModelBundle.load(model)
    batch = torch.stack([bundle.preprocess(read_image(p)) for p in val[:n_check]]).numpy()
    export_onnx(bundle, out / onnx_name, batch)
    return model, out / onnx_name, batch


@pytest.fixture(scope="session")
def kermany_samples(kermany_dir: Path) -> list[tuple[Path, int]]:
    return _kermany_rows(kermany_dir, "test", 4) or _kermany_rows(kermany_dir, "val", 4)


@pytest.fixture(scope="session")
def siim_original(data_dir: Path) -> Path:
    files = sorted((data_dir / "siim_acr_pneumothorax" / "dicom").glob("*.dcm"))
    if not files:
        pytest.fail("the SIIM chest DICOM is missing from RADIOLENS_DATA_DIR")
    return files[0]


@pytest.fixture(scope="session")
def siim_dicom(siim_original: Path, tmp_path_factory) -> Path:
    """The real SIIM chest DICOM as a site would upload it after looking at the pixels: it is a Secondary
    Capture without BurnedInAnnotation, which the service refuses (text may be burned in), so this copy
    states BurnedInAnnotation = NO (the image has none). Everything else is the file as distributed."""
    ds = pydicom.dcmread(str(siim_original))
    ds.BurnedInAnnotation = "NO"
    path = tmp_path_factory.mktemp("siim_reviewed") / siim_original.name
    ds.save_as(path, enforce_file_format=True)
    return path


def plant_phi(src: Path) -> bytes:
    """The real SIIM chest DICOM with identifying values (and a private tag) written into its header."""
    ds = pydicom.dcmread(str(src))
    for kw, value in PHI.items():
        setattr(ds, kw, value)
    block = ds.private_block(0x0011, "RADIOLENS TEST", create=True)
    block.add_new(0x01, "LO", PRIVATE_VALUE)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture(scope="session")
def phi_dicom_bytes(siim_dicom: Path) -> bytes:
    data = plant_phi(siim_dicom)
    for value in list(PHI.values()) + [PRIVATE_VALUE]:
        assert value.encode() in data  # the planted values really are in the upload
    return data


# ---------------------------------------------------------------------- apps and keys
@dataclass
class Keys:
    clinician: str
    auditor: str
    admin: str

    def h(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {getattr(self, role)}"}


def make_keys(app) -> Keys:
    from sqlalchemy.orm import Session

    from radiolens.serve.store.auth import create_key

    out = {}
    with Session(app.state.service.engine) as s, s.begin():
        for role in ("clinician", "auditor", "admin"):
            out[role] = create_key(s, role, label=f"test {role}")[1]
    return Keys(**out)


@pytest.fixture
def settings_factory(tmp_path: Path, bundle_path: Path):
    from radiolens.serve.config import ServeSettings

    def make(**kw) -> ServeSettings:
        base = dict(model_path=bundle_path, state_dir=tmp_path / "state", deid_secret=SECRET,
                    inference_workers=2)
        base.update(kw)
        return ServeSettings(**base)

    return make


@pytest.fixture
def app_factory(settings_factory):
    from radiolens.serve import create_app

    made = []

    def make(hooks=None, **kw):
        app = create_app(settings_factory(**kw), hooks)
        made.append(app)
        return app, make_keys(app)

    yield make
    for app in made:
        app.state.service.close()


@pytest.fixture
def client(app_factory):
    from fastapi.testclient import TestClient

    app, keys = app_factory()
    with TestClient(app) as c:
        c.keys = keys
        c.app_ = app
        yield c


# ---------------------------------------------------------------------- live server over a real socket
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_ready(url: str, proc, timeout_s: float, why=lambda: "server did not become ready") -> None:
    """Poll ``url``/readyz until it answers 200; fail (with ``why()``) if ``proc`` exits (anything with
    ``poll()``: a Popen, or the container in tests/deploy) or time runs out."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, why()
        time.sleep(0.3)


class LiveServer:
    def __init__(self, app):
        import uvicorn

        from radiolens.serve.http.server import HeaderTimeoutH11Protocol

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on", http=HeaderTimeoutH11Protocol))  # as `serve`
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


@pytest.fixture
def live(app_factory) -> Iterator:
    """``live(**settings) -> (LiveServer, Keys)``; servers stop at the end of the test."""
    servers = []

    def start(hooks=None, **kw):
        app, keys = app_factory(hooks, **kw)
        srv = LiveServer(app).__enter__()
        servers.append(srv)
        return srv, keys

    yield start
    for srv in servers:
        srv.__exit__(None, None, None)


def png_bytes(path: Path) -> bytes:
    return path.read_bytes()


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


def dataset_without_pixels() -> bytes:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPInstanceUID = "1.2.3.4"
    ds.StudyInstanceUID = "1.2.3"
    ds.Modality = "CR"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# ---------------------------------------------------------------------- a real PostgreSQL server
def _pg_bin(name: str) -> str:
    import glob
    import shutil

    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)),
                                       None)
    if not found:
        pytest.fail(f"PostgreSQL binary '{name}' not found: install Debian's postgresql package "
                    "(scripts/install-system-deps.sh). PostgreSQL tests fail rather than skip.")
    return found


@pytest.fixture(scope="session")
def postgres_server():
    """initdb into a temp dir, pg_ctl start on a free loopback port (as user postgres when we are root)."""
    import os
    import shutil
    import subprocess
    import tempfile

    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    root = Path(tempfile.mkdtemp(prefix="radiolens-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(root, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data, log = root / "data", root / "server.log"
    subprocess.run(prefix + [initdb, "-D", str(data), "-U", "radiolens", "--auth=trust", "-E", "UTF8",
                             "--no-sync"], check=True, capture_output=True)
    subprocess.run(prefix + [pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
                             f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://radiolens@127.0.0.1:{port}"
    finally:
        subprocess.run(prefix + [pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_server: str) -> str:
    """A fresh, empty database on the session's server for each test."""
    import uuid

    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(postgres_server.replace("+psycopg", "") + "/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{postgres_server}/{name}"
