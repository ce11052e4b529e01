"""PNG previews of radiographs, named so that no patient identity can leak through a file name.

Input file names are often patient names or accession numbers, and a real SOP Instance UID can be linked
back to the patient by anyone with PACS access, so neither is used: a file that was de-identified by
radiolens (PatientIdentityRemoved YES) is named by its already-remapped SOP Instance UID (so previews line
up with ``radiolens deid`` output), anything else by a SHA-256 prefix of its bytes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from radiolens.io.dicom import Frames
from radiolens.io.image import RadioImage, Window
from radiolens.io.raster import RASTER_SUFFIXES
from radiolens.io.reader import looks_like_dicom, read_image


def is_image_candidate(path: Path) -> bool:
    """In folder scans: raster suffixes, DICOM magic/suffix, or no suffix (reports and notes are skipped)."""
    return path.suffix.lower() in RASTER_SUFFIXES or path.suffix == "" or looks_like_dicom(path)


def preview_stem(path: Path, image: RadioImage, deidentified: bool) -> str:
    if deidentified and image.meta.sop_instance_uid:
        return image.meta.sop_instance_uid
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return "img-" + digest.hexdigest()[:16]


def _to_png(frame: np.ndarray, dst: Path) -> None:
    Image.fromarray(np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8), mode="L").save(dst, optimize=False)


def render_preview(path: str | Path, out_dir: str | Path, *, window: Window | None = None,
                   all_frames: bool = False) -> list[Path]:
    """Write ``<stem>.png`` (or ``<stem>_f0000.png``... for every frame) and return the written paths."""
    path, out_dir = Path(path), Path(out_dir)
    frames: Frames = "all" if all_frames else "first"
    image = read_image(path, window=window, frames=frames)
    deidentified = bool(image.meta.extra.get("patient_identity_removed", False))
    stem = preview_stem(path, image, deidentified)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if image.pixels.ndim == 3:
        for i, frame in enumerate(image.pixels):
            dst = out_dir / f"{stem}_f{i:04d}.png"
            _to_png(frame, dst)
            written.append(dst)
    else:
        dst = out_dir / f"{stem}.png"
        _to_png(image.pixels, dst)
        written.append(dst)
    return written
