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


def _scan_for_phi(client, capfd, caplog, responses: list[bytes]):
    """Every stored file (DB + WAL, artefacts), their names, logs, stdout/stderr and the responses, searched
    for every planted PHI string: (files, blobs, leaks)."""
    svc = client.app_.state.service
    svc.engine.dispose()  # flush connections so the WAL content is on disk either way
    state = svc.settings.state_dir
    files = [p for p in state.rglob("*") if p.is_file()]
    blobs = {str(p.relative_to(state)): p.read_bytes() for p in files}
    captured = capfd.readouterr()
    blobs["<logs>"] = "\n".join(rec.getMessage() for rec in caplog.records).encode()
    blobs["<stdout+stderr>"] = (captured.out + captured.err).encode()
    for i, body in enumerate(responses):
        blobs[f"<response {i}>"] = body
    names = " ".join(str(p.relative_to(state)) for p in files).encode()
    leaks = [(where, needle) for where, data in blobs.items() for needle in _needles() if needle in data]
    leaks += [("<file names>", n) for n in _needles() if n in names]
    return files, blobs, leaks

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

    files, blobs, leaks = _scan_for_phi(client, capfd, caplog, responses)
    assert any(p.name.endswith(".db") for p in files)
    assert any(p.name == f"{pid}.heatmap.png" for p in files) and any(p.name == f"{pid}.image.png" for p in files)
    assert not leaks, leaks
    # The original study UID is replaced too (a UID can be linked back to the patient by the sending site).
    assert all(original_uid.encode() not in data for data in blobs.values())
    assert len(caplog.records) > 0  # logging was on, so its silence about PHI means something


# ---------------------------------------------------------------------- PHI in raster file metadata
def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def _exif(tags: dict[int, str]) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    for tag, value in tags.items():
        exif[tag] = value
    return exif.tobytes()  # b"Exif\0\0" + TIFF structure, as an APP1 segment / eXIf chunk carries it


def png_with_phi(path) -> bytes:
    """A real NIH PNG re-saved (losslessly) with PHI in tEXt, zTXt, iTXt and eXIf chunks."""
    import io

    from PIL import Image, PngImagePlugin

    with Image.open(path) as im:
        im.load()
        info = PngImagePlugin.PngInfo()
        info.add_text("PatientName", PHI["PatientName"])  # tEXt
        info.add_text("Comment", PHI["ImageComments"], zip=True)  # zTXt (compressed)
        info.add_itxt("Description", f"{PHI['InstitutionName']} / {PHI['AccessionNumber']}", lang="en",
                      tkey="Beschreibung")  # iTXt
        buf = io.BytesIO()
        im.save(buf, format="PNG", pnginfo=info,
                exif=_exif({0x010E: PHI["PatientID"], 0x013B: PHI["ReferringPhysicianName"]}))  # eXIf
    data = buf.getvalue()
    for chunk in (b"tEXt", b"zTXt", b"iTXt", b"eXIf"):
        assert chunk in data
    with Image.open(io.BytesIO(data)) as back:  # a reader really sees the planted values
        assert back.text["PatientName"] == PHI["PatientName"] and back.text["Comment"] == PHI["ImageComments"]
        assert back.getexif()[0x010E] == PHI["PatientID"]
    return data


def jpeg_with_phi(path) -> bytes:
    """A real Kermany JPEG with EXIF (APP1), XMP (APP1) and COM segments holding PHI, inserted after the JFIF
    APP0 segment without re-encoding the image."""
    import io

    from PIL import Image

    data = path.read_bytes()
    assert data[:4] == b"\xff\xd8\xff\xe0"
    cut = 4 + int.from_bytes(data[4:6], "big")
    xmp = (b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF xmlns:rdf="
           b"'http://www.w3.org/1999/02/22-rdf-syntax-ns#'><rdf:Description xmlns:dc='http://purl.org/dc/elements/1.1/'"
           b"><dc:creator>" + PHI["PerformingPhysicianName"].encode() + b"</dc:creator><dc:description>"
           + PHI["PatientBirthDate"].encode() + b"</dc:description></rdf:Description></rdf:RDF></x:xmpmeta>")
    segments = (_segment(0xE1, _exif({0x010E: PHI["PatientName"], 0x013B: PHI["PatientID"]}))
                + _segment(0xE1, xmp) + _segment(0xFE, PHI["ImageComments"].encode()))
    out = data[:cut] + segments + data[cut:]
    with Image.open(io.BytesIO(out)) as back:
        assert back.getexif()[0x010E] == PHI["PatientName"]
        assert back.info["comment"] == PHI["ImageComments"].encode()
        assert PHI["PerformingPhysicianName"].encode() in back.info["xmp"]
        back.load()  # still a decodable image
    return out


def test_phi_in_raster_metadata_never_stored_or_logged(client, data_dir, kermany_samples, caplog, capfd):
    import io

    from PIL import Image

    caplog.set_level(logging.DEBUG)
    keys = client.keys
    nih = sorted((data_dir / "nih_chestxray14" / "images_fullres").glob("*.png"))[0]
    uploads = [("Zebulon_Quixotic.png", png_with_phi(nih), "image/png"),
               ("PID-99887766.jpg", jpeg_with_phi(kermany_samples[0][0]), "image/jpeg")]
    for _, data, _ in uploads:  # the plain-text ones are really in the upload bytes
        assert PHI["PatientName"].encode() in data and PHI["PatientID"].encode() in data

    responses, ids = [], []
    for name, data, ctype in uploads:
        r = client.post("/v1/predictions", headers=keys.h("clinician"), files={"file": (name, data, ctype)})
        assert r.status_code == 201, r.text
        assert r.json()["source_format"] == ctype.split("/")[1]
        ids.append(r.json()["id"])
        responses.append(r.content)
        for kind in ("image", "heatmap"):
            art = client.get(f"/v1/predictions/{ids[-1]}/{kind}.png", headers=keys.h("clinician"))
            assert art.status_code == 200
            with Image.open(io.BytesIO(art.content)) as im:  # served copies carry no text/EXIF chunks at all
                assert not getattr(im, "text", {}) and not im.getexif()
            responses.append(art.content)
        responses.append(client.post(f"/v1/predictions/{ids[-1]}/feedback", headers=keys.h("clinician"),
                                     json={"agree": True}).content)
        responses.append(client.get(f"/v1/predictions/{ids[-1]}", headers=keys.h("auditor")).content)
        # The same metadata in files cut off after the metadata: refused with a message that quotes none of it.
        for broken in (data[: len(data) // 2], data[: data.index(PHI["PatientID"].encode()) + 200]):
            bad = client.post("/v1/predictions", headers=keys.h("clinician"), files={"file": (name, broken, ctype)})
            assert 400 <= bad.status_code < 500 or bad.status_code == 201, bad.text
            responses.append(bad.content)
    responses.append(client.get("/v1/audit", headers=keys.h("auditor")).content)
    responses.append(client.get("/v1/audit", params={"fmt": "csv"}, headers=keys.h("auditor")).content)

    files, _, leaks = _scan_for_phi(client, capfd, caplog, responses)
    assert any(p.name.endswith(".db") for p in files) and len([p for p in files if p.suffix == ".png"]) >= 4
    assert not leaks, leaks
    assert len(caplog.records) > 0
    assert not any(p.name.startswith("upload.") for p in files)  # the raster temp file is gone
