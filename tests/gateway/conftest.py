"""Fixtures for the DICOM gateway: a service on the small real-data model, a gateway around it on a free
loopback port, a plain pynetdicom storage SCP standing for the archive results go back to, and real files
(the SIIM chest DICOM as a site would send it, pydicom-data's chest CR, extremity CR and MR)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE, AllStoragePresentationContexts, evt
from tests.serve.conftest import (  # noqa: F401 - fixtures shared with the service tests
    SECRET,
    bundle_path,
    free_port,
    kermany_dir,
    phi_dicom_bytes,
    siim_dicom,
    siim_original,
)

from radiolens.gateway.config import GatewayConfig

MODALITY_AE, ARCHIVE_AE = "MODALITY", "ARCHIVE"


def pydicom_file(pydicom_data_files: list[Path], name: str) -> Path:
    for p in pydicom_data_files:
        if p.name == name:
            return p
    pytest.fail(f"pydicom-data lacks {name}")


@pytest.fixture(scope="session")
def chest_cr(pydicom_data_files) -> Path:
    return pydicom_file(pydicom_data_files, "RG1_UNCR.dcm")  # CR, CHEST, PA


@pytest.fixture(scope="session")
def extremity_cr(pydicom_data_files) -> Path:
    return pydicom_file(pydicom_data_files, "RG3_UNCR.dcm")  # CR, EXTREMITY, AP


@pytest.fixture(scope="session")
def mr_image(pydicom_data_files) -> Path:
    return pydicom_file(pydicom_data_files, "MR2_UNCR.dcm")


class Archive:
    """A pynetdicom storage SCP that keeps what it receives (the PACS results go back to)."""

    def __init__(self, ae_title: str = ARCHIVE_AE, status: int = 0x0000):
        self.received: list[pydicom.Dataset] = []
        self.status = status
        self.calls = 0
        self._lock = threading.Lock()
        ae = AE(ae_title=ae_title)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax)
        self.port = free_port()
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def _store(self, event):
        with self._lock:
            self.calls += 1
            if self.status == 0x0000:
                ds = event.dataset
                ds.file_meta = event.file_meta
                self.received.append(ds)
        return self.status

    def wait_for(self, n: int, timeout: float = 90.0) -> list[pydicom.Dataset]:
        deadline = time.monotonic() + timeout
        while len(self.received) < n:
            assert time.monotonic() < deadline, f"archive got {len(self.received)} of {n} objects"
            time.sleep(0.1)
        return list(self.received)

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def archive():
    a = Archive()
    yield a
    a.stop()


@pytest.fixture
def service_factory(tmp_path, bundle_path):  # noqa: F811 - the imported fixture
    from radiolens.serve.config import ServeSettings
    from radiolens.serve.runtime.service import Service

    made = []

    def make(state_dir: Path | None = None, **kw) -> Service:
        settings = ServeSettings(model_path=bundle_path, state_dir=state_dir or tmp_path / "state",
                                 deid_secret=SECRET, inference_workers=1, mc_dropout_passes=0, **kw)
        s = Service(settings)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def config_for(archive: Archive | None, **kw) -> GatewayConfig:
    peers = {"modality": {"ae_title": MODALITY_AE, "host": "127.0.0.1", "port": archive.port if archive else None}}
    base = {"port": 0, "peers": peers, "send": {"backoff_s": 0.2, "max_attempts": 3, "timeout_s": 10}}
    return GatewayConfig.model_validate(base | kw)


@pytest.fixture
def gateway_factory(service_factory):
    from radiolens.gateway.node import Gateway

    made = []

    def make(config: GatewayConfig, service=None):
        g = Gateway(config, service or service_factory()).start()
        made.append(g)
        return g

    yield make
    for g in made:
        g.stop()


def c_store(port: int, paths_or_datasets, calling: str = MODALITY_AE, called: str = "RADIOLENS") -> list[int]:
    """C-STORE each file (or data set) in one association; the statuses (or [] when the association failed)."""
    ae = AE(ae_title=calling)
    datasets = [d if isinstance(d, pydicom.Dataset) else pydicom.dcmread(d) for d in paths_or_datasets]
    for sop, ts in sorted({(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets}):
        ae.add_requested_context(sop, ts)  # one context per pair: an acceptor picks one syntax per context
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return []
    try:
        return [int(assoc.send_c_store(d).Status) for d in datasets]
    finally:
        assoc.release()
