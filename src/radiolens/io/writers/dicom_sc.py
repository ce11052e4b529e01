"""The Grad-CAM overlay as a DICOM Secondary Capture (RGB, 8-bit), built with highdicom.

Like the SR it joins the ORIGINAL study in a new series and references the original image (Source Image
Sequence, original SOP Class/Instance UIDs); patient and study attributes come from the
:class:`~radiolens.io.writers.dicom_sr.SourceRef` only.

Burned In Annotation (PS3.3 C.7.6.1.1.7) says whether the pixels carry text identifying the patient. The heatmap
adds colour, never text, so the overlay identifies the patient exactly as much as the source pixels do: the value
is the source's when it is NO; otherwise (YES, or not stated) it is YES, because the source pixels are copied
into the capture and an unknown source must be assumed to carry text. Recognizable Visual Features follows the
same rule. Patient Orientation is copied from the source (empty when the source left it empty), never guessed.
"""

from __future__ import annotations

import warnings

import highdicom as hd
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from radiolens.io.writers.dicom_sr import MANUFACTURER, SourceRef


def blend_heatmap(grey: np.ndarray, heat: np.ndarray, max_alpha: float = 0.6) -> np.ndarray:
    """(H, W, 3) uint8: ``grey`` (display pixels in [0, 1]) under the heatmap (any size, in [0, 1]) resized to it,
    coloured with the same perceptual map as the service's PNG overlay, opacity following the heat."""
    from matplotlib import colormaps

    g = np.clip(np.asarray(grey, dtype=np.float32), 0, 1)
    h, w = g.shape
    hm = Image.fromarray((np.clip(heat, 0, 1) * 255).astype(np.uint8), mode="L").resize((w, h),
                                                                                         Image.Resampling.BILINEAR)
    v = np.asarray(hm, dtype=np.float32) / 255.0
    colour = colormaps["inferno"](v)[..., :3]
    alpha = (v * max_alpha)[..., None]
    out = (1 - alpha) * g[..., None] + alpha * colour
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def build_sc(grey: np.ndarray, heat: np.ndarray, source: SourceRef, *, target: str, series_number: int = 9902,
             series_instance_uid: str | None = None, sop_instance_uid: str | None = None) -> Dataset:
    """The Secondary Capture of the heatmap for class ``target`` blended on ``grey`` (the source image's display
    pixels, VOI-windowed, in [0, 1])."""
    rgb = blend_heatmap(grey, heat)
    orientation = tuple(source.patient_orientation or ())
    with warnings.catch_warnings():  # highdicom's person-name warnings quote the name
        warnings.simplefilter("ignore")
        sc = hd.sc.SCImage(
            pixel_array=rgb, photometric_interpretation="RGB", bits_allocated=8, coordinate_system="PATIENT",
            study_instance_uid=source.study_instance_uid,
            series_instance_uid=series_instance_uid or generate_uid(), series_number=series_number,
            sop_instance_uid=sop_instance_uid or generate_uid(), instance_number=1, manufacturer=MANUFACTURER,
            patient_id=source.patient_id, patient_name=source.patient_name,
            patient_birth_date=source.patient_birth_date, patient_sex=source.patient_sex,
            accession_number=source.accession_number, study_id=source.study_id, study_date=source.study_date,
            study_time=source.study_time, referring_physician_name=source.referring_physician_name,
            patient_orientation=orientation if len(orientation) == 2 else ("L", "F"))
    sc.PatientOrientation = list(orientation) if len(orientation) == 2 else ""  # Type 2: empty if unknown
    if "Laterality" not in sc:  # General Series, Type 2C: the chest is not a paired structure; empty, not guessed
        sc.Laterality = ""
    sc.ConversionType = "WSD"  # produced by a workstation (software), not digitised from film or video
    text_free = source.burned_in_annotation == "NO"
    sc.BurnedInAnnotation = "NO" if text_free else "YES"
    sc.RecognizableVisualFeatures = "NO" if text_free else "YES"
    sc.SeriesDescription = "radiolens heatmap (advisory)"
    sc.DerivationDescription = f"Grad-CAM heatmap for {target} blended on the source image; advisory only"[:1024]
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.sop_class_uid
    ref.ReferencedSOPInstanceUID = source.sop_instance_uid
    sc.SourceImageSequence = [ref]
    return sc
