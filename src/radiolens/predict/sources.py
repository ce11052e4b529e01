"""What to score: a folder tree (any mix of DICOM/PNG/JPEG/TIFF), a manifest CSV, or a DICOM tree whose
files carry no extension (common in PACS exports).

Every item is keyed by its path relative to the input (POSIX separators): stable across machines, the
resume key of batch scoring, and free of DICOM header content.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radiolens.errors import InputError, ManifestError, RadiolensError
from radiolens.io import formats
from radiolens.io.formats import read_image
from radiolens.models.backends import preprocess
from radiolens.models.info import BundleInfo
from radiolens.progress import track


@dataclass(frozen=True)
class ScoreItem:
    key: str  # path relative to the input root, POSIX
    path: Path
    label: float | None = None
    group: str = ""  # e.g. patient pseudonym from a manifest, used only to keep splits disjoint


def discover(source: str | Path, *, split: str | None = None, label_column: str | None = None,
             exclude: tuple[Path, ...] = ()) -> list[ScoreItem]:
    """All scorable items under a folder (recursive, sorted) or listed by a manifest ``.csv``."""
    source = Path(source)
    if not source.exists():
        raise InputError(f"input not found: {source.name}")
    if source.is_file():
        if source.suffix.lower() == ".csv":
            return read_manifest(source, split=split, label_column=label_column)
        if formats.is_candidate(source):
            return [ScoreItem(source.name, source)]
        raise InputError(f"{source.name}: neither an image, a manifest .csv nor a folder")
    excluded = {p.resolve() for p in exclude}
    items = []
    for path in sorted(source.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(source).parts):
            continue
        if path.is_file() and path.resolve() not in excluded and formats.is_candidate(path):
            items.append(ScoreItem(path.relative_to(source).as_posix(), path))
    if not items:
        raise InputError(f"{source.name}: no DICOM/PNG/JPEG/TIFF files found")
    return items


def read_manifest(path: Path, *, split: str | None = None, label_column: str | None = None) -> list[ScoreItem]:
    """A CSV with a ``path`` column (relative to the CSV's folder, or absolute)."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise ManifestError(f"{path.name}: not a readable CSV ({type(exc).__name__})") from exc
    if "path" not in frame.columns:
        raise ManifestError(f"{path.name}: manifest needs a 'path' column")
    if split is not None:
        if "split" not in frame.columns:
            raise ManifestError(f"{path.name}: --split given but the manifest has no 'split' column")
        frame = frame[frame["split"] == split]
    if label_column is not None and label_column not in frame.columns:
        raise ManifestError(f"{path.name}: no label column '{label_column}'")
    root = path.parent
    items = []
    for _, row in frame.iterrows():
        rel = row["path"].strip()
        if not rel:
            raise ManifestError(f"{path.name}: empty path in a row")
        label = None
        if label_column is not None:
            try:
                label = float(row[label_column])
            except ValueError as exc:
                raise ManifestError(f"{path.name}: label column '{label_column}' is not numeric") from exc
        p = Path(rel)
        items.append(ScoreItem(Path(rel).as_posix(), p if p.is_absolute() else root / p, label,
                               str(row.get("patient_id", ""))))
    if not items:
        raise ManifestError(f"{path.name}: no rows" + (f" with split '{split}'" if split else ""))
    return items


def group_half(item: ScoreItem, salt: str = "radiolens") -> int:
    """0 or 1, stable per group (patient when known): splits one labelled set into two disjoint halves."""
    digest = hashlib.sha256(f"{salt}:{item.group or item.key}".encode()).digest()
    return digest[0] & 1


def load_preprocessed(items: list[ScoreItem], info: BundleInfo, limit: int | None = None
                      ) -> tuple[np.ndarray, list[ScoreItem]]:
    """Read + preprocess up to ``limit`` readable items (unreadable ones are skipped) -> (N, 1, H, W)."""
    arrays, kept = [], []
    for item in track(items, "reading images", total=len(items) if limit is None else min(limit, len(items))):
        if limit is not None and len(arrays) >= limit:
            break
        try:
            arrays.append(preprocess(info, read_image(item.path)))
            kept.append(item)
        except RadiolensError:
            continue
    if not arrays:
        raise InputError("none of the given images could be read")
    return np.stack(arrays).astype(np.float32), kept
