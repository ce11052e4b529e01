"""PNG previews of radiographs, named so that no patient identity can leak through a file name.

Input file names are often patient names or accession numbers, and a real SOP Instance UID can be linked
back to the patient by anyone with PACS access, so neither is used: a file that was de-identified by
radiolens (PatientIdentityRemoved YES) is named by its already-remapped SOP Instance UID (so previews line
up with ``radiolens deid`` output), anything else by a SHA-256 prefix of its bytes.

:func:`preview_files` is the batch: a bad file costs its ``on_error`` call and the run goes on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from radiolens.errors import RadiolensError
from radiolens.io import formats
from radiolens.io.formats import Frames, read_image
from radiolens.io.image import RadioImage, Window
from radiolens.io.writers.preview import write_preview_png
from radiolens.progress import track


def preview_stem(path: Path, image: RadioImage, deidentified: bool) -> str:
    if deidentified and image.meta.sop_instance_uid:
        return image.meta.sop_instance_uid
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return "img-" + digest.hexdigest()[:16]


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
            dst = out_dir / f"{stem}_f{i:04d}{formats.PNG.suffix}"
            write_preview_png(frame, dst)
            written.append(dst)
    else:
        dst = out_dir / f"{stem}{formats.PNG.suffix}"
        write_preview_png(image.pixels, dst)
        written.append(dst)
    return written


@dataclass
class PreviewSummary:
    """What a batch of previews did: the PNGs written and the number of input files that failed."""

    written: list[Path] = field(default_factory=list)
    failed: int = 0


def preview_files(items: Iterable[str | Path], out_dir: str | Path, *, window: Window | None = None,
                  all_frames: bool = False,
                  on_error: Callable[[Path, RadiolensError], None] | None = None) -> PreviewSummary:
    """Previews of files and folders (searched recursively) into ``out_dir``.

    A folder contributes every file of the format table and every extension-less file (one nothing recognises
    is reported through ``on_error``, not skipped: it may be a DICOM the sniffing missed); a file named
    directly is always tried, so a missing or unreadable one is reported too.
    """
    summary = PreviewSummary()
    def keep(p: Path) -> bool:
        return formats.is_candidate(p, keep_unrecognised=True)

    # listed first so the bar knows the total (a listing is cheap next to decoding)
    paths = [path for item in map(Path, items)
             for path in (formats.iter_input_files(item, keep=keep) if item.is_dir() else [item])]
    for path in track(paths, "previews", unit="file"):
        try:
            summary.written += render_preview(path, out_dir, window=window, all_frames=all_frames)
        except RadiolensError as exc:
            summary.failed += 1
            if on_error is not None:
                on_error(path, exc)
    return summary
