"""No PHI reaches the database, logs, stored artefacts, file names, responses or error messages.

A real chest DICOM (SIIM) gets patient name, id, birth date, institution, physicians, comments, accession
number and a private tag planted in its header; after uploads (good and broken) every byte the service
wrote is scanned for each of those strings.
"""

from __future__ import annotations

import logging

from tests.serve.conftest import PHI, PRIVATE_VALUE


def _needles() -> list[bytes]:
    values = list(PHI.values()) + [PRIVATE_VALUE]
    out = set()
    for v in values:
        out.add(v.encode())
        for part in v.replace("^", " ").split():  # name components on their own, e.g. "Zebulon"
            if len(part) >= 5:
                out.add(part.encode())
    return sorted(out)


def test_planted_phi_never_stored_or_logged(client, phi_dicom_bytes, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    keys = client.keys
    original_uid = None
    import io

    import pydicom

    original_uid = str(pydicom.dcmread(io.BytesIO(phi_dicom_bytes), stop_before_pixels=True).StudyInstanceUID)

    # A patient-named upload file name, as a careless export would produce.
    fname = "Zebulon_Quixotic_PID-99887766.dcm"
    r = client.post("/v1/predictions", headers=keys.h("clinician"),
                    files={"file": (fname, phi_dicom_bytes, "application/dicom")})
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    responses = [r.content]
    responses.append(client.post(f"/v1/predictions/{pid}/feedback", headers=keys.h("clinician"),
                                 json={"agree": False, "corrected_label": "normal"}).content)
    responses.append(client.get(f"/v1/predictions/{pid}", headers=keys.h("auditor")).content)
    responses.append(client.get("/v1/audit", headers=keys.h("auditor")).content)
    # Broken uploads carrying the same PHI: error messages must not quote it.
    for broken in (phi_dicom_bytes[: len(phi_dicom_bytes) // 2], phi_dicom_bytes[:2000],
                   phi_dicom_bytes[132:]):
        bad = client.post("/v1/predictions", headers=keys.h("clinician"),
                          files={"file": (fname, broken, "application/dicom")})
        assert 400 <= bad.status_code < 500 or bad.status_code == 201, bad.text
        responses.append(bad.content)

    svc = client.app_.state.service
    svc.engine.dispose()  # flush connections so the WAL content is on disk either way
    state = svc.settings.state_dir
    files = [p for p in state.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".db") for p in files)
    assert any(p.name == f"{pid}.heatmap.png" for p in files) and any(p.name == f"{pid}.image.png" for p in files)
    blobs = {str(p.relative_to(state)): p.read_bytes() for p in files}
    captured = capfd.readouterr()
    blobs["<logs>"] = "\n".join(rec.getMessage() for rec in caplog.records).encode()
    blobs["<stdout+stderr>"] = (captured.out + captured.err).encode()
    for i, body in enumerate(responses):
        blobs[f"<response {i}>"] = body
    names = " ".join(str(p.relative_to(state)) for p in files).encode()

    leaks = [(where, needle) for where, data in blobs.items() for needle in _needles() if needle in data]
    leaks += [("<file names>", n) for n in _needles() if n in names]
    assert not leaks, leaks
    # The original study UID is replaced too (a UID can be linked back to the patient by the sending site).
    assert all(original_uid.encode() not in data for data in blobs.values())
    assert len(caplog.records) > 0  # logging was on, so its silence about PHI means something
