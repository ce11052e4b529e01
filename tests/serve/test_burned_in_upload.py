"""Uploads whose pixels may carry burned-in text are refused by the service (422, nothing stored or audited),
in every form the header can say so: multi-valued BurnedInAnnotation, multi-valued Modality, Secondary Capture
without Modality. Regression: those three were accepted, and their pixels stored and served."""

from __future__ import annotations

import io

import pydicom
import pytest
from tests.serve.conftest import START_ROWS

SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


def _variant(src, **attrs) -> bytes:
    ds = pydicom.dcmread(str(src))
    for keyword, value in attrs.items():
        if value is None:
            if keyword in ds:
                del ds[keyword]
        else:
            setattr(ds, keyword, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


CASES = {
    "burned_in_yes_no": {"BurnedInAnnotation": ["YES", "NO"]},
    "modality_us_cr": {"Modality": ["US", "CR"]},
    "secondary_capture_without_modality": {"Modality": None, "SOPClassUID": SC_STORAGE},
    "secondary_capture_as_distributed": {},  # SIIM is an SC of a CR with no BurnedInAnnotation at all
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_possibly_burned_in_uploads_are_refused(client, siim_original, case, tmp_path):
    from radiolens.serve.store import audit

    data = _variant(siim_original, **CASES[case])
    artefacts = client.app_.state.service.artefact_dir
    before = sorted(p for p in artefacts.rglob("*") if p.is_file())
    r = client.post("/v1/predictions", headers=client.keys.h("clinician"),
                    files={"file": ("upload.dcm", data, "application/dicom")})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "burned_in_annotation"
    assert audit.verify(client.app_.state.service.engine).rows == START_ROWS  # no prediction row
    assert sorted(p for p in artefacts.rglob("*") if p.is_file()) == before  # no image stored
    # the same file stating a single, exact NO (the site's statement after review) is accepted and stored
    reviewed = _variant(siim_original, **{**CASES[case], "BurnedInAnnotation": "NO"})
    r = client.post("/v1/predictions", headers=client.keys.h("clinician"),
                    files={"file": ("upload.dcm", reviewed, "application/dicom")})
    assert r.status_code == 201, r.text
    assert client.get(r.json()["image_url"], headers=client.keys.h("clinician")).status_code == 200


def test_text_burned_into_the_pixels_is_refused_by_default(client, siim_original):
    """The header says NO, the pixels show a name and an ID: the service's default pixel-text policy (refuse)
    reads them with OCR and refuses the upload, storing nothing."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    from radiolens.serve.store import audit

    ds = pydicom.dcmread(str(siim_original))
    ds.decompress()
    pixels = ds.pixel_array.copy()
    canvas = Image.new("L", (pixels.shape[1], pixels.shape[0]), 0)
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 40)
    ImageDraw.Draw(canvas).text((40, 40), "DOE^JANE 4471230", fill=255, font=font)
    pixels[np.asarray(canvas) > 127] = pixels.max()
    ds.PixelData = pixels.tobytes()
    ds.BurnedInAnnotation = "NO"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    assert client.app_.state.service.settings.pixel_text.policy == "refuse"
    artefacts = client.app_.state.service.artefact_dir
    before = sorted(p for p in artefacts.rglob("*") if p.is_file())
    r = client.post("/v1/predictions", headers=client.keys.h("clinician"),
                    files={"file": ("upload.dcm", buf.getvalue(), "application/dicom")})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "burned_in_annotation"
    assert "DOE" not in r.text and "4471230" not in r.text
    assert audit.verify(client.app_.state.service.engine).rows == START_ROWS
    assert sorted(p for p in artefacts.rglob("*") if p.is_file()) == before
