"""What the reading viewer is served: the de-identified image at full bit depth (``pixels.png`` with its rescale
and default window) and the scope record (age band, sex, view, the model's population, out-of-scope warnings)."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import apply_modality_lut
from tests.serve.conftest import PHI

from radiolens.io.image import ImageMeta
from radiolens.models.population import scope_of


def _upload(client, data: bytes, ctype: str = "application/dicom") -> dict:
    r = client.post("/v1/predictions", headers=client.keys.h("clinician"), params={"heatmap": False},
                    files={"file": ("upload", data, ctype)})
    assert r.status_code == 201, r.text
    return r.json()


def _pixels(client, body: dict, role: str = "clinician") -> np.ndarray:
    r = client.get(body["pixels_url"], headers=client.keys.h(role))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
    im = Image.open(io.BytesIO(r.content))
    assert not im.info and not getattr(im, "text", {})  # pixels only: no text chunk, no metadata
    return np.asarray(im)


def test_full_depth_pixels_of_a_signed_16_bit_ct_reproduce_its_modality_values(client, pydicom_data_files):
    """A real CT slice (signed stored values, rescale intercept): the served 16-bit PNG and the prediction's
    rescale give back exactly the Hounsfield values pydicom computes from the file, not an 8-bit rendering."""
    ct = next(p for p in pydicom_data_files if p.name == "693_UNCR.dcm")
    ds = pydicom.dcmread(str(ct))
    body = _upload(client, ct.read_bytes())
    meta = body["pixels"]
    arr = _pixels(client, body)
    assert arr.dtype == np.uint16 and arr.shape == (ds.Rows, ds.Columns) == (meta["rows"], meta["columns"])
    values = arr.astype(np.float64) * meta["rescale_slope"] + meta["rescale_intercept"]
    np.testing.assert_array_equal(values, apply_modality_lut(ds.pixel_array, ds).astype(np.float64))
    assert len(np.unique(arr)) > 256  # more grey levels than any 8-bit copy can hold
    assert meta["window_width"] > 0 and meta["photometric"] == ds.PhotometricInterpretation
    assert body["scope"]["image"]["view"] in ("not stated", str(ds.get("ViewPosition", "")).upper() or "x")
    assert client.get(body["pixels_url"]).status_code == 401  # same sign-in as every other read


def test_adult_siim_film_on_the_paediatric_model_is_out_of_scope(client, phi_dicom_bytes, siim_dicom):
    """The test model states Kermany's population (children aged 1-5, AP films): the real SIIM film of an adult,
    PA, is scored but flagged, and its full-depth pixels are the stored values, with none of the planted PHI."""
    body = _upload(client, phi_dicom_bytes)
    scope = body["scope"]
    ds = pydicom.dcmread(str(siim_dicom))
    age = int(str(ds.PatientAge).rstrip("Y"))
    assert age >= 18 and scope["image"]["age_band"] == ("adult (18-64)" if age < 65 else "geriatric (>=65)")
    assert scope["image"]["sex"] == {"M": "male", "F": "female"}[PHI.get("PatientSex", ds.PatientSex)]
    assert scope["image"]["view"] == ds.ViewPosition
    assert scope["in_scope"] is False
    assert any("Age outside the model's range" in w and "ages 1-5 years" in w for w in scope["warnings"])
    assert scope["model"]["input_size"] == [32, 32] and "Paediatric" in scope["model"]["population"]
    arr = _pixels(client, body, role="auditor")
    np.testing.assert_array_equal(arr, ds.pixel_array.astype(np.uint16))  # 8 bits stored: the values as such
    assert body["pixels"]["bits_stored"] == 8
    raw = client.get(body["pixels_url"], headers=client.keys.h("clinician")).content
    for value in PHI.values():
        assert str(value).encode() not in raw
    models = client.get("/v1/models", headers=client.keys.h("clinician")).json()["models"][0]
    assert models["population"]["age_max_years"] == 5


def test_raster_upload_states_what_could_not_be_checked(client, kermany_samples):
    path, _ = kermany_samples[0]
    body = _upload(client, path.read_bytes(), ctype="image/jpeg")
    scope = body["scope"]
    assert scope["image"] == {"age_band": "not stated", "sex": "not stated", "view": "not stated"}
    assert scope["in_scope"] is None and "the image states no age" in scope["not_checked"]
    arr = _pixels(client, body)
    assert arr.shape == (body["pixels"]["rows"], body["pixels"]["columns"]) and arr.max() <= 255


@pytest.mark.parametrize(("meta", "population", "in_scope", "needle"), [
    (ImageMeta(source_format="dicom", patient_age_years=3, view_position="LL"), {"description": "children",
     "age_min_years": 1, "age_max_years": 5, "views": ["AP"]}, False, "View outside"),
    (ImageMeta(source_format="dicom", patient_age_years=40, view_position="LATERAL"), {}, False, "Lateral view"),
    (ImageMeta(source_format="dicom", patient_age_years=3, view_position="AP"), {"description": "children",
     "age_min_years": 1, "age_max_years": 5, "views": ["AP"]}, True, None),
    (ImageMeta(source_format="dicom", patient_age_years=70, view_position="PA"), {}, None, None),
])
def test_scope_of(meta, population, in_scope, needle):
    scope = scope_of(population, (224, 224), meta)
    assert scope["in_scope"] is in_scope
    if needle:
        assert any(needle in w for w in scope["warnings"])
    if not population:
        assert scope["model"]["population"] == "population not stated"
    assert scope["model"]["input_size"] == [224, 224]
