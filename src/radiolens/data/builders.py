"""Writers of the manifest CSV from the layouts data usually arrives in.

Each builder returns a validated :class:`Manifest` and (with ``out``) writes ``manifest.csv``; after this
step nothing else in radiolens cares where the data came from.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd

from radiolens.data.manifest import Manifest, manifest_from_frame
from radiolens.errors import ConfigError, ManifestError
from radiolens.io import formats

#: Source layouts :func:`build_manifest` knows.
MANIFEST_KINDS = ("imagefolder", "kermany", "nih", "medmnist")


NIH_FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)

# Official Data_Entry_2017(_v2020).csv header -> manifest column
_NIH_OFFICIAL = {"Image Index": "image_index", "Finding Labels": "finding_labels", "Patient ID": "patient_id",
                 "Patient Age": "age", "Patient Gender": "sex", "View Position": "view",
                 "Follow-up #": "follow_up"}


def _finish(frame: pd.DataFrame, root: Path, out: str | Path | None, name: str) -> Manifest:
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        frame = frame.copy()
        base = out.parent.resolve()
        frame["path"] = [_relative_or_absolute(root / p, base) for p in frame["path"]]
        manifest = manifest_from_frame(frame, base, out.name)
        manifest.frame.to_csv(out, index=False)
        return manifest
    return manifest_from_frame(frame, root, name)


def _relative_or_absolute(path: Path, base: Path) -> str:
    path = path.resolve()
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def _images_under(folder: Path) -> list[Path]:
    """Image files under a folder, by the format table's candidate test (as scoring walks folders)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and formats.is_candidate(p))


# ---------------------------------------------------------------------------- ImageFolder
def from_image_folder(root: str | Path, out: str | Path | None = None, label_column: str = "label") -> Manifest:
    """``root/<class>/**/image`` -> one row per image, label = sub-folder name.

    An ImageFolder tree carries no patient identity, so each image is its own patient: say so rather than
    guess, and prefer a builder that knows the naming scheme (Kermany, NIH) when there is one.
    """
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"image folder not found: {root.name}")
    rows = []
    for cls in sorted(d for d in root.iterdir() if d.is_dir()):
        for img in _images_under(cls):
            rel = img.relative_to(root).as_posix()
            rows.append({"path": rel, label_column: cls.name, "patient_id": f"img:{rel}"})
    if not rows:
        raise ManifestError(f"{root.name}: no images in class sub-folders (expected root/<class>/<image>)")
    return _finish(pd.DataFrame(rows), root.resolve(), out, root.name)


# ---------------------------------------------------------------------------- Kermany
_KERMANY_PERSON = re.compile(r"^(person\d+)_(bacteria|virus)_\d+", re.IGNORECASE)
_KERMANY_IM = re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+", re.IGNORECASE)


def kermany_patient_and_type(file_name: str) -> tuple[str, str]:
    """Patient id and pneumonia type from a Kermany file name (the scheme in its PROVENANCE.md).

    ``personN_(bacteria|virus)_M`` -> (personN, bacterial|viral); ``[NORMAL2-]IM-XXXX-YYYY`` -> (.., normal).
    """
    stem = Path(file_name).stem
    m = _KERMANY_PERSON.match(stem)
    if m:
        return m.group(1).lower(), "bacterial" if m.group(2).lower() == "bacteria" else "viral"
    m = _KERMANY_IM.match(stem)
    if m:
        return m.group(1).upper(), "normal"
    raise ManifestError(f"{file_name}: not a Kermany file name (personN_bacteria_M / IM-XXXX-YYYY)")


def from_kermany(root: str | Path, out: str | Path | None = None) -> Manifest:
    """``root/{NORMAL,PNEUMONIA}/*.jpeg`` (any nesting, e.g. train/test above) -> label + 3-class subtype.

    Columns: ``label`` (normal|pneumonia), ``subtype`` (normal|bacterial|viral), ``patient_id``.
    """
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"Kermany folder not found: {root.name}")
    rows = []
    for img in _images_under(root):
        folder = {p.upper() for p in img.relative_to(root).parts[:-1]}
        if "NORMAL" in folder:
            label = "normal"
        elif "PNEUMONIA" in folder:
            label = "pneumonia"
        else:
            continue
        patient, subtype = kermany_patient_and_type(img.name)
        if (label == "normal") != (subtype == "normal"):
            raise ManifestError(f"{img.name}: file name says {subtype} but it sits in a {label.upper()} folder")
        rows.append({"path": img.relative_to(root).as_posix(), "label": label, "subtype": subtype,
                     "patient_id": patient})
    if not rows:
        raise ManifestError(f"{root.name}: no images under NORMAL/ or PNEUMONIA/ folders")
    return _finish(pd.DataFrame(rows), root.resolve(), out, root.name)


# ---------------------------------------------------------------------------- NIH ChestX-ray14
#: The official split lists of the NIH release, next to Data_Entry_2017.csv: patient-disjoint train+val / test.
NIH_SPLIT_LISTS = ("train_val_list.txt", "test_list.txt")
#: Share of the official train_val patients held out as ``val`` (by a keyed hash of the patient id, so it is
#: the same on every machine and for every subset of the images).
NIH_VAL_FRACTION = 0.1


def _nih_official_split(table: pd.DataFrame, folders: list[Path], name: str) -> pd.DataFrame | None:
    """``official_split`` ("train_val" / "test") and ``split`` (train / val / test) from the release's lists,
    when both lists are in one of ``folders``; None without them. ``val`` is a patient-level share of
    train_val, so the official test set stays untouched and no patient spans two splits."""
    for folder in folders:
        lists = [folder / n for n in NIH_SPLIT_LISTS]
        if all(p.is_file() for p in lists):
            break
    else:
        return None
    train_val, test = ({ln.strip() for ln in p.read_text().splitlines() if ln.strip()} for p in lists)
    official = np.where(table["image_index"].isin(test), "test",
                        np.where(table["image_index"].isin(train_val), "train_val", ""))
    if (official == "").any():
        raise ManifestError(f"{name}: {int((official == '').sum())} image(s) are in neither {NIH_SPLIT_LISTS[0]} "
                            f"nor {NIH_SPLIT_LISTS[1]}")
    patients = table["patient_id"].astype(str).str.lstrip("0")
    in_val = patients.map(lambda p: int(hashlib.sha256(f"nih-val:{p}".encode()).hexdigest()[:8], 16) / 2**32
                          < NIH_VAL_FRACTION).to_numpy()
    split = np.where(official == "test", "test", np.where(in_val, "val", "train"))
    return pd.DataFrame({"official_split": official, "split": split})


def from_nih(data_entry_csv: str | Path, image_dir: str | Path, out: str | Path | None = None,
             require_all: bool = False) -> Manifest:
    """NIH ChestX-ray14: the official ``Data_Entry_2017*.csv`` (or a table with ``image_index`` and
    ``finding_labels`` columns) plus the image folder -> one 0/1 column per finding (``NIH_FINDINGS``).

    The image folder may be the public release's layout (``images_001/images/*.png`` ... ``images_012``): images
    are found at any depth. Rows whose image is not in ``image_dir`` are dropped (the full table lists 112,120
    images; most users hold a subset) unless ``require_all``. A ``split`` column in the table is kept; otherwise
    the release's ``train_val_list.txt`` / ``test_list.txt`` (next to the table or in the image folder) give the
    official split, with a patient-level ``val`` share of train_val (``NIH_VAL_FRACTION``).
    """
    csv, image_dir = Path(data_entry_csv), Path(image_dir)
    if not csv.is_file():
        raise ManifestError(f"NIH table not found: {csv.name}")
    if not image_dir.is_dir():
        raise ManifestError(f"NIH image folder not found: {image_dir.name}")
    table = pd.read_csv(csv, dtype=str)
    table = table.rename(columns={k: v for k, v in _NIH_OFFICIAL.items() if k in table.columns})
    for col in ("image_index", "finding_labels", "patient_id"):
        if col not in table.columns:
            raise ManifestError(f"{csv.name}: column '{col}' (official: "
                                f"{[k for k, v in _NIH_OFFICIAL.items() if v == col][0]}) missing")
    table = table.drop_duplicates("image_index")  # one row per image (a table may list several copies)
    available = {p.name: p for p in _images_under(image_dir)}
    present = table["image_index"].isin(available)
    if require_all and not present.all():
        raise ManifestError(f"{csv.name}: {int((~present).sum())} listed image(s) not in {image_dir.name}")
    table = table[present].reset_index(drop=True)
    if table.empty:
        raise ManifestError(f"{csv.name}: none of the listed images is in {image_dir.name}")
    findings = table["finding_labels"].fillna("").str.split("|")
    unknown = sorted({f for fs in findings for f in fs if f and f != "No Finding" and f not in NIH_FINDINGS})
    if unknown:
        raise ManifestError(f"{csv.name}: unknown finding label(s): {', '.join(unknown[:5])}")
    frame = pd.DataFrame({"path": [available[n].resolve().as_posix() for n in table["image_index"]],
                          "patient_id": table["patient_id"].astype(str).str.lstrip("0").replace("", "0")})
    for f in NIH_FINDINGS:
        frame[f] = [int(f in fs) for fs in findings]
    frame["no_finding"] = [int(fs == ["No Finding"]) for fs in findings]
    if "age" in table.columns:  # official ages may be '058Y'-style in old releases
        frame["age"] = pd.to_numeric(table["age"].astype(str).str.extract(r"(\d+)")[0], errors="coerce")
    for col in ("sex", "view", "follow_up", "split"):
        if col in table.columns:
            frame[col] = table[col].to_numpy()
    if "split" not in table.columns:
        official = _nih_official_split(table, [csv.parent, image_dir], csv.name)
        if official is not None:
            frame["official_split"], frame["split"] = official["official_split"], official["split"]
    return _finish(frame, Path("/"), out, csv.name)


# ---------------------------------------------------------------------------- MedMNIST
def _npz_arrays(npz_path: Path) -> dict[str, np.ndarray]:
    with np.load(npz_path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def medmnist_npz(flag: str, root: str | Path | None, size: int = 28, download: bool = True) -> Path:
    """Path of the MedMNIST npz for ``flag``: the local copy under ``root`` when present, otherwise
    downloaded there through the ``medmnist`` package (which checks the official MD5)."""
    try:
        from medmnist import INFO
    except ImportError as exc:  # pragma: no cover - medmnist is a dependency
        raise ConfigError("the medmnist package is required for MedMNIST data") from exc
    if flag not in INFO:
        raise ConfigError(f"unknown MedMNIST flag '{flag}' (e.g. pneumoniamnist, chestmnist)")
    root = Path(root).expanduser() if root is not None else Path.home() / ".medmnist"
    name = f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"
    path = root / name
    if path.is_file():
        return path
    if not download:
        raise ConfigError(f"MedMNIST file not found: {path} (offline: copy {name} there)")
    import medmnist

    root.mkdir(parents=True, exist_ok=True)
    cls = getattr(medmnist, INFO[flag]["python_class"])
    try:
        cls(split="train", root=str(root), download=True, size=size)
    except Exception as exc:
        raise ConfigError(f"could not download {name} into {root} ({type(exc).__name__}); "
                          f"offline, copy the file there") from exc
    return path


def from_medmnist(flag: str, root: str | Path | None, cache_dir: str | Path, size: int = 28,
                  download: bool = True, patient_disjoint: bool = True, seed: int = 0) -> Manifest:
    """A MedMNIST npz -> PNG files in ``cache_dir/images`` + ``cache_dir/manifest.csv``.

    The official file is checked through the ``medmnist`` package; a file that fails its length check
    (e.g. the patient-disjoint subset shipped in RADIOLENS_DATA_DIR) is read with numpy, which gives the
    same arrays. PNGs keep the manifest the single entry point; the PNGs of 4,000 28-px images take ~1 MB.
    Patient id: from the ``*_kermany_match`` key where the file has it (PneumoniaMNIST subset), else each
    image is its own patient (MedMNIST publishes no patient ids).

    ``patient_disjoint``: the official PneumoniaMNIST splits are NOT patient-disjoint (in the shared file,
    214 patients span train/val and 118 train/test, found through the Kermany match). When patient ids are
    known, the test split is kept as published (comparable with the literature), train/val images of test
    patients are dropped, and train+val are re-split by patient with the published val share.
    """
    from medmnist import INFO
    from PIL import Image

    npz = medmnist_npz(flag, root, size, download)
    arrays = _npz_arrays(npz)
    info = INFO[flag]
    label_names = info["label"]
    multilabel = info["task"].startswith("multi-label")
    cache_dir = Path(cache_dir)
    img_dir = cache_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for split in ("train", "val", "test"):
        key = f"{split}_images"
        if key not in arrays:
            raise ManifestError(f"{npz.name}: key '{key}' missing (not a MedMNIST npz)")
        images, labels = arrays[key], arrays[f"{split}_labels"]
        match = arrays.get(f"{split}_kermany_match")
        for i in range(len(images)):
            rel = f"images/{split}_{i:06d}.png"
            target = cache_dir / rel
            if not target.is_file():
                img = images[i]
                Image.fromarray(img if img.ndim == 2 else img.squeeze()).save(target)
            row: dict = {"path": rel, "split": split}
            if match is not None:
                pid, _ = kermany_patient_and_type(str(match[i]))
                row["patient_id"] = pid
            else:
                row["patient_id"] = f"{flag}:{split}:{i}"
            if multilabel:
                for j, name in label_names.items():
                    row[name.replace(" ", "_")] = int(labels[i][int(j)])
            else:
                row["label"] = label_names[str(int(labels[i][0]))]
            rows.append(row)
    frame = pd.DataFrame(rows)
    frame["published_split"] = frame["split"]
    manifest = manifest_from_frame(frame, cache_dir, "manifest.csv")
    if patient_disjoint and "train_kermany_match" in arrays:
        manifest = _patient_disjoint(manifest, seed)
    manifest.frame.to_csv(cache_dir / "manifest.csv", index=False)
    return manifest


def _patient_disjoint(manifest: Manifest, seed: int) -> Manifest:
    from radiolens.data.manifest import LabelSpec
    from radiolens.data.splits import assign_splits

    frame = manifest.frame
    test_patients = set(frame.loc[frame["split"] == "test", "patient_id"])
    keep = (frame["split"] == "test") | ~frame["patient_id"].isin(test_patients)
    frame = frame[keep].reset_index(drop=True)
    dev = frame["split"] != "test"
    val_share = float((frame.loc[dev, "split"] == "val").mean())
    frame.loc[dev, "split"] = "dev"
    spec = LabelSpec(task="multiclass", columns=["label"]) if "label" in frame.columns else None
    if spec is None:  # multi-label MedMNIST: stratify on its label columns
        cols = [c for c in frame.columns if c not in ("path", "split", "patient_id", "published_split")]
        spec = LabelSpec(task="multilabel", columns=cols)
    out = assign_splits(manifest.with_frame(frame), spec, val=val_share, test=0.0, seed=seed, only="dev",
                        names=("train", "val", "test"))
    return out


def build_manifest(kind: str, source: str | Path, out: str | Path, *, data_entry: str | Path | None = None,
                   root: str | Path | None = None, size: int = 28) -> Manifest:
    """The manifest of one source layout (``MANIFEST_KINDS``), written to ``out``.

    ``imagefolder`` / ``kermany``: ``source`` is the image folder and ``out`` the CSV. ``nih``: ``source`` is the
    image folder and ``data_entry`` the Data_Entry_2017 CSV. ``medmnist``: ``source`` is the MedMNIST flag,
    ``root`` the folder holding ``<flag>.npz`` (downloaded if absent), ``size`` its image size, and ``out`` a
    folder receiving the PNGs and ``manifest.csv``.
    """
    if kind == "imagefolder":
        return from_image_folder(source, out)
    if kind == "kermany":
        return from_kermany(source, out)
    if kind == "nih":
        if data_entry is None:
            raise ConfigError("nih needs --data-entry Data_Entry_2017.csv")
        return from_nih(data_entry, source, out)
    if kind == "medmnist":
        return from_medmnist(str(source), root, out, size=size)
    raise ConfigError(f"unknown manifest kind '{kind}' (one of {', '.join(MANIFEST_KINDS)})")
