"""The Orthanc test peer works with real DICOM: REST storage and lookup, C-ECHO and C-STORE in both directions
with pynetdicom, and the access rules its configuration promises (authentication, registered senders only)."""

from __future__ import annotations

import io
import threading

import httpx
import pydicom
import pytest
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import (
    ComputedRadiographyImageStorage,
    SecondaryCaptureImageStorage,
    Verification,
)
from tests.pacs.orthanc import free_port

pytestmark = pytest.mark.realdata


def _header(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)


def test_uploads_are_found_back_by_study_uid(orthanc_factory, siim_path, pydicom_chest_cr):
    orthanc = orthanc_factory()
    files = {p.name: p.read_bytes() for p in (siim_path, pydicom_chest_cr)}
    ids = {name: orthanc.upload(data) for name, data in files.items()}

    assert sorted(orthanc.studies()) == sorted(_header(d).StudyInstanceUID for d in files.values())
    for name, data in files.items():
        ds = _header(data)
        [found] = orthanc.study_instances(ds.StudyInstanceUID)
        assert found["ID"] == ids[name]
        assert found["SOPInstanceUID"] == ds.SOPInstanceUID
        assert found["SOPClassUID"] == ds.SOPClassUID
        assert orthanc.instance_tags(ids[name])["Modality"] == ds.Modality
        assert orthanc.instance_file(ids[name]) == data  # stored as received, not transcoded
        assert [i["ID"] for i in orthanc.find_instances(SOPInstanceUID=ds.SOPInstanceUID)] == [ids[name]]


def test_a_resent_instance_replaces_the_stored_one(orthanc_factory, siim_path):
    orthanc = orthanc_factory()
    first = orthanc.upload(siim_path.read_bytes())
    ds = pydicom.dcmread(siim_path)
    ds.ImageComments = "corrected resend"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    second = orthanc.upload(buffer.getvalue())

    assert second == first  # Orthanc ids derive from the UIDs: the same instance
    assert len(orthanc.study_instances(ds.StudyInstanceUID)) == 1
    assert orthanc.instance_tags(first)["ImageComments"] == "corrected resend"


def test_rest_api_requires_the_generated_credentials(orthanc_factory):
    orthanc = orthanc_factory()
    assert httpx.get(f"{orthanc.url}/system").status_code == 401
    assert httpx.get(f"{orthanc.url}/system", auth=(orthanc.auth[0], "wrong")).status_code == 401
    assert httpx.get(f"{orthanc.url}/system", auth=orthanc.auth).json()["DicomAet"] == orthanc.aet


def test_c_echo_from_a_pynetdicom_scu(orthanc_factory):
    orthanc = orthanc_factory(aet="PACS_UNDER_TEST")
    ae = AE(ae_title="ANY_SCU")
    ae.add_requested_context(Verification)

    assoc = ae.associate("127.0.0.1", orthanc.dicom_port, ae_title=orthanc.aet)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()

    # the called AE title is checked, as a strict PACS does
    wrong = ae.associate("127.0.0.1", orthanc.dicom_port, ae_title="NOT_THE_PACS")
    assert wrong.is_rejected


def test_c_store_into_orthanc_is_accepted_from_registered_senders_only(orthanc_factory, siim_path):
    orthanc = orthanc_factory(modalities={"radiolens": ("RL_SENDER", "127.0.0.1", 1)})
    ds = pydicom.dcmread(siim_path)

    stranger = AE(ae_title="STRANGER")
    stranger.add_requested_context(SecondaryCaptureImageStorage, ds.file_meta.TransferSyntaxUID)
    assoc = stranger.associate("127.0.0.1", orthanc.dicom_port, ae_title=orthanc.aet)
    # Orthanc 1.10 accepts the association of an unknown AE title, then aborts it at the C-STORE request
    assert assoc.is_established
    assert not assoc.send_c_store(ds)  # no response dataset: the association was aborted
    orthanc.wait_for(lambda: assoc.is_aborted, timeout=5)
    assert orthanc.find_instances(SOPInstanceUID=ds.SOPInstanceUID) == []

    sender = AE(ae_title="RL_SENDER")
    sender.add_requested_context(SecondaryCaptureImageStorage, ds.file_meta.TransferSyntaxUID)
    assoc = sender.associate("127.0.0.1", orthanc.dicom_port, ae_title=orthanc.aet)
    assert assoc.is_established
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    [stored] = orthanc.find_instances(SOPInstanceUID=ds.SOPInstanceUID)
    assert stored["SOPClassUID"] == ds.SOPClassUID


def test_orthanc_c_stores_to_a_pynetdicom_scp(orthanc_factory, siim_path, pydicom_chest_cr):
    received: list[tuple[str, pydicom.Dataset]] = []
    lock = threading.Lock()

    def on_store(event):
        with lock:
            received.append((event.assoc.requestor.ae_title, event.dataset))
        return 0x0000

    scp = AE(ae_title="RL_RECEIVER")
    for sop_class in (SecondaryCaptureImageStorage, ComputedRadiographyImageStorage):
        scp.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
    scp.add_supported_context(Verification)
    server = scp.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        port = server.server_address[1]
        orthanc = orthanc_factory(modalities={"radiolens": ("RL_RECEIVER", "127.0.0.1", port)})
        assert orthanc.modality_echo("radiolens")
        orthanc.set_modality("late", "RL_RECEIVER", "127.0.0.1", port)  # registered after start
        assert orthanc.modality_echo("late")
        orthanc.set_modality("nobody", "NOBODY", "127.0.0.1", free_port())  # nothing listens there
        assert not orthanc.modality_echo("nobody")
        originals = [pydicom.dcmread(p) for p in (siim_path, pydicom_chest_cr)]
        ids = [orthanc.upload(p.read_bytes()) for p in (siim_path, pydicom_chest_cr)]

        result = orthanc.send_to_modality("radiolens", ids)

        assert result["InstancesCount"] == 2
        orthanc.wait_for(lambda: len(received) == 2, timeout=10)
        by_uid = {ds.SOPInstanceUID: (aet, ds) for aet, ds in received}
        for original in originals:
            aet, ds = by_uid[original.SOPInstanceUID]
            assert aet == orthanc.aet
            assert ds.SOPClassUID == original.SOPClassUID
            assert ds.PixelData == original.PixelData  # the receiver accepts the stored syntax: no transcoding
    finally:
        server.shutdown()
