"""Fixtures of the PACS interoperability tests: a real Orthanc server per test, and the real DICOM files sent."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from tests.gateway.conftest import (  # noqa: F401 - the gateway's and the service's fixtures, used here too
    bundle_path,
    gateway_factory,
    kermany_dir,
    mr_image,
    service_factory,
    siim_dicom,
    siim_original,
)
from tests.serve.conftest import app_factory, settings_factory  # noqa: F401

if TYPE_CHECKING:
    from tests.pacs.orthanc import Orthanc


@pytest.fixture(scope="session")
def siim_path(siim_original: Path) -> Path:  # noqa: F811 - the service tests' fixture, imported above
    """The real SIIM chest DICOM (a Secondary Capture, JPEG Baseline) exactly as distributed."""
    return siim_original


@pytest.fixture(scope="session")
def pydicom_chest_cr(pydicom_data_files: list[Path]) -> Path:
    """pydicom-data's real chest CR (RG1, JPEG 2000 lossless): a second study, modality CR."""
    matches = [p for p in pydicom_data_files if p.name == "RG1_J2KR.dcm"]
    if not matches:
        pytest.fail("pydicom-data has no RG1_J2KR.dcm (chest CR)")
    return matches[0]


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator[Callable[..., Orthanc]]:
    """``orthanc_factory(**kwargs)`` starts an :class:`Orthanc` (kwargs as its constructor) in its own folder
    under ``tmp_path`` and returns it running; every server started is stopped at teardown."""
    # imported here, not at module level, so that a run started without the repository root on sys.path
    # (bare `pytest` rather than `python -m pytest`) fails in these tests only, not in collecting the suite
    from tests.pacs.orthanc import INSTALL_HINT, ORTHANC_BINARY, Orthanc

    if not ORTHANC_BINARY.is_file():
        pytest.fail(f"{ORTHANC_BINARY} is missing. {INSTALL_HINT}")
    started: list[Orthanc] = []

    def make(**kwargs) -> Orthanc:
        server = Orthanc(tmp_path / f"orthanc{len(started)}", **kwargs)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()
