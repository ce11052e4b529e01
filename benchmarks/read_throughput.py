"""Read throughput on real files: radiolens (read + window + resize to 224) beside the naive approach.

radiolens: ``read_image`` (typed errors, Modality LUT, VOI window / VOI LUT, MONOCHROME1, colour -> grey,
first frame only) then ``data.transforms.resize_unit`` (antialiased bilinear) to 224x224.

naive: what a hand-written loop typically does: ``pydicom.dcmread(...).pixel_array`` * RescaleSlope +
RescaleIntercept, min-max scaled to [0, 1] (no window, no MONOCHROME1 handling), or ``PIL.Image.open`` ->
``convert("L")`` / 255 for rasters, then ``torchvision.transforms.functional.resize`` to 224x224.

Columns: images/s for each, with and without the resize step (median of --repeats timed passes over the
group's files, after one warm-up pass),
and ``corr`` = Pearson correlation between the two 224x224 outputs averaged over the group: near +1 means the
naive loop sees the same picture, negative means it sees it inverted (MONOCHROME1 without the inversion).

Usage (about a minute on 2 shared cores):

    RADIOLENS_DATA_DIR=../shared/data python benchmarks/read_throughput.py
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from radiolens.data.transforms import resize_unit
from radiolens.io import read_image
from radiolens.settings import data_dir

SIZE = (224, 224)


def radiolens_load(path: Path) -> torch.Tensor:
    return resize_unit(read_image(path).pixels, SIZE)


def radiolens_read(path: Path) -> np.ndarray:
    return read_image(path).pixels


def naive_read(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".dcm":
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array.astype(np.float32)
        arr = arr * float(getattr(ds, "RescaleSlope", 1) or 1) + float(getattr(ds, "RescaleIntercept", 0) or 0)
        if arr.ndim == 3 and arr.shape[-1] == 3:
            arr = arr.mean(-1)
        arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-6)
    else:
        arr = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0
    return arr


def naive_load(path: Path) -> torch.Tensor:
    return TF.resize(torch.from_numpy(naive_read(path))[None], list(SIZE), antialias=True)


def groups(root: Path, n_raster: int) -> dict[str, list[Path]]:
    import data_store

    corpus = Path(data_store.__file__).parent / "data"
    with open(root / "kermany_pediatric_pneumonia" / "manifest.csv", newline="") as fh:
        kermany = [root / "kermany_pediatric_pneumonia" / r["path"] for r in csv.DictReader(fh)][:n_raster]
    with open(root / "nih_chestxray14" / "manifest.csv", newline="") as fh:
        nih64 = [root / "nih_chestxray14" / r["path"] for r in csv.DictReader(fh)][:n_raster]
    siim = sorted((root / "siim_acr_pneumothorax" / "dicom").glob("*.dcm"))  # the data set holds one file
    # every DICOM group on all matching pydicom-data files (RG1 + RG3, reversible + irreversible copies)
    return {
        f"SIIM CR DICOM (JPEG baseline, 1024^2) x{len(siim)}": siim,
        "CR chest MONOCHROME1 uncompressed (RG1,RG3 x UNCR,UNCI)": [corpus / f"{s}_{v}.dcm" for s in ("RG1", "RG3")
                                                                 for v in ("UNCR", "UNCI")],
        "CR chest MONOCHROME1 J2K lossless (RG1,RG3)": [corpus / f"{s}_J2KR.dcm" for s in ("RG1", "RG3")],
        "CR chest MONOCHROME1 J2K lossy (RG1,RG3)": [corpus / f"{s}_J2KI.dcm" for s in ("RG1", "RG3")],
        "CT/MR 16-bit uncompressed (693,MR2 x UNCR,UNCI)": [corpus / f"{s}_{v}.dcm" for s in ("693", "MR2")
                                                            for v in ("UNCR", "UNCI")],
        "CT/MR J2K lossless (693,MR2)": [corpus / f"{s}_J2KR.dcm" for s in ("693", "MR2")],
        f"Kermany JPEG 224^2 x{len(kermany)}": kermany,
        "NIH PNG full-res 1024^2 / 512^2 x4": sorted((root / "nih_chestxray14" / "images_fullres").glob("*.png")),
        f"NIH PNG 64^2 RGB/RGBA x{len(nih64)}": nih64,
    }


def time_group(fn, files: list[Path], repeats: int) -> float:
    for path in files:  # warm-up (imports, codec init, page cache)
        fn(path)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for path in files:
            fn(path)
        times.append(time.perf_counter() - t0)
    return len(files) / statistics.median(times)


def correlation(files: list[Path]) -> float:
    values = []
    for path in files[:20]:
        a, b = radiolens_load(path).flatten().numpy(), naive_load(path).flatten().numpy()
        values.append(float(np.corrcoef(a, b)[0, 1]))
    return float(np.mean(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rasters", type=int, default=200, help="Kermany / NIH-64px files per group.")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    root = data_dir(required=True)
    rows = []
    for name, files in groups(root, args.rasters).items():
        if not files:
            raise SystemExit(f"no files for {name} under {root}")
        ours = time_group(radiolens_load, files, args.repeats)
        naive = time_group(naive_load, files, args.repeats)
        ours_read = time_group(radiolens_read, files, args.repeats)
        naive_read_rate = time_group(naive_read, files, args.repeats)
        rows.append((name, len(files), ours, naive, ours_read, naive_read_rate, correlation(files)))
    print(f"\n{'':62s} {'read+window+resize 224':>24s}   {'read+window only':>20s}")
    print(f"{'group':56s} {'files':>5s} {'radiolens':>10s} {'naive':>8s} {'ratio':>5s}   {'radiolens':>10s} "
          f"{'naive':>8s}  {'corr':>5s}")
    for name, n, ours, naive, ours_r, naive_r, corr in rows:
        print(f"{name:56s} {n:5d} {ours:10.1f} {naive:8.1f} {ours / naive:5.2f}   {ours_r:10.1f} {naive_r:8.1f}  "
              f"{corr:5.2f}")
    print("(images/s)")
    import os

    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n(load average 1/5/15 min at the end: {load}; torch threads={args.threads}; median of {args.repeats} "
          "passes; corr = mean Pearson r of the two 224x224 outputs, first 20 files)")


if __name__ == "__main__":
    main()
