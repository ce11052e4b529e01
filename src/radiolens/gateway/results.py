"""The DICOM result objects of one scored instance: the TID 1500 SR and the heatmap Secondary Capture (the
io layer's writers), with UIDs derived from the DE-IDENTIFIED source UIDs and the model.

Derived rather than random, so scoring an instance again (after a crash between scoring and queueing its
results) makes objects with the same UIDs, which the archive stores once; keyed (the de-identified UIDs are an
HMAC of the originals), so the result UIDs written to the audit log cannot be linked to the original image by
anyone without the secret.
"""

from __future__ import annotations

import io

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from radiolens.io.writers.dicom_sc import build_sc
from radiolens.io.writers.dicom_sr import SourceRef, build_sr

SR_SERIES_NUMBER, SC_SERIES_NUMBER = 9901, 9902


def derived_uid(*parts: str) -> str:
    return generate_uid(prefix=None, entropy_srcs=["radiolens-result", *parts])


def encode(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def decode(data: bytes) -> Dataset:
    return dcmread(io.BytesIO(data))


def result_objects(source: Dataset, deid_study_uid: str, deid_sop_uid: str, served, capture: bool
                   ) -> dict[str, bytes]:
    """``{"sr": bytes[, "sc": bytes]}`` for ``served`` (a ``serve.runtime.service.Served``) of ``source`` (the
    ORIGINAL data set: the results go back to the archive it came from)."""
    ref = SourceRef.from_dataset(source)
    model = served.result["model"]["sha256"]
    out = {"sr": encode(build_sr(served.result, ref, series_number=SR_SERIES_NUMBER,
                                 series_instance_uid=derived_uid(deid_study_uid, model, "sr-series"),
                                 sop_instance_uid=derived_uid(deid_sop_uid, model, "sr")))}
    heat = served.record.heatmap
    if capture and heat is not None:
        out["sc"] = encode(build_sc(served.image.pixels, heat.array, ref, target=heat.target,
                                    series_number=SC_SERIES_NUMBER,
                                    series_instance_uid=derived_uid(deid_study_uid, model, "sc-series"),
                                    sop_instance_uid=derived_uid(deid_sop_uid, model, "sc")))
    return out
