"""The DICOM round trip with pynetdicom peers on loopback: a modality C-STOREs real images to the gateway, which
scores them through the service and C-STOREs a TID 1500 SR and a heatmap Secondary Capture back, in the ORIGINAL
study, referencing the original image; the audit log and the store hold none of the original identifiers."""

from __future__ import annotations

import pydicom
from tests.gateway.conftest import c_store, config_for


def _sr_probability(sr: pydicom.Dataset) -> dict[str, float]:
    out = {}
    for item in sr.ContentSequence:
        for group in getattr(item, "ContentSequence", []):
            finding, value = None, None
            for c in getattr(group, "ContentSequence", []):
                name = c.ConceptNameCodeSequence[0].CodeMeaning
                if name == "Finding":
                    finding = c.ConceptCodeSequence[0].CodeMeaning
                if name == "Calibrated probability":
                    value = float(c.MeasuredValueSequence[0].NumericValue)
            if value is not None:
                out[finding] = value
    return out


def test_chest_images_come_back_as_sr_and_capture_in_the_original_study(gateway_factory, service_factory, archive,
                                                                       siim_dicom, chest_cr):
    service = service_factory()
    gateway = gateway_factory(config_for(archive), service)
    assert c_store(gateway.port, [siim_dicom, chest_cr]) == [0, 0]
    got = archive.wait_for(4)
    by_kind = {}
    for ds in got:
        by_kind.setdefault(str(ds.Modality), []).append(ds)
    assert sorted(by_kind) == ["OT", "SR"] or sorted(by_kind) == ["SR", "OT"] or set(by_kind) <= {"SR", "OT"}
    originals = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): pydicom.dcmread(
        p, stop_before_pixels=True) for p in (siim_dicom, chest_cr)}
    for sr in by_kind["SR"]:
        ref = sr.CurrentRequestedProcedureEvidenceSequence[0]
        src_uid = ref.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        src = originals[src_uid]
        assert sr.StudyInstanceUID == src.StudyInstanceUID and sr.PatientID == src.PatientID
        assert sr.SeriesInstanceUID != src.SeriesInstanceUID
        probs = _sr_probability(sr)
        assert probs and all(0.0 <= v <= 1.0 for v in probs.values())
    assert len(by_kind["SR"]) == 2




def test_instances_spooled_by_stow_rs_are_scored_and_sent_to_the_configured_peer(gateway_factory, service_factory,
                                                                                 archive, chest_cr):
    import time

    from radiolens.serve.store.spool import spool_counts

    service = service_factory()
    peer = {"pacs": {"ae_title": "ARCHIVE", "host": "127.0.0.1", "port": archive.port},
            "modality": {"ae_title": "MODALITY"}}
    gateway = gateway_factory(config_for(archive, peers=peer, destination={"kind": "peer", "peer": "pacs"}), service)
    gateway.spool.put(chest_cr.read_bytes(), {"via": "stow"})  # what POST /dicomweb/studies does
    gateway.processor.wake.set()
    got = archive.wait_for(2)
    assert {str(d.Modality) for d in got} == {"SR", "OT"}
    assert all(d.StudyInstanceUID == pydicom.dcmread(chest_cr, stop_before_pixels=True).StudyInstanceUID
               for d in got)

    # answering "the calling AE" means nothing for a DICOMweb sender: dead-lettered, with the reason audited
    other = gateway_factory(config_for(archive), service_factory(state_dir=service.settings.state_dir.parent / "b"))
    other.spool.put(chest_cr.read_bytes(), {"via": "stow"})
    other.processor.wake.set()
    deadline = time.monotonic() + 60
    while spool_counts(other.service.settings.state_dir)["dead-letter"] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert len(archive.received) == 2
