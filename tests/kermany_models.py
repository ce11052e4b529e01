"""A small real model shared by the tests that compare drivers of the one prediction path (the Python API, batch
scoring, the service): small_cnn (32 px) trained for seconds on real Kermany images, registered with a monitoring
profile from Kermany validation images (so the learned out-of-distribution score takes part in the gate), saved
as a .pt bundle and exported to ONNX with its embedding and feature outputs."""

from __future__ import annotations

import csv
from pathlib import Path


def kermany_rows(data_dir: Path, split: str, per_class: int) -> list[tuple[Path, int]]:
    """The first ``per_class`` images of each label of a Kermany split, as (path, label) pairs."""
    root = data_dir / "kermany_pediatric_pneumonia"
    rows: dict[int, list[tuple[Path, int]]] = {0: [], 1: []}
    with open(root / "manifest.csv") as fh:
        for r in csv.DictReader(fh):
            lab = int(r["label_int"])
            if r["split"] == split and len(rows[lab]) < per_class:
                rows[lab].append((root / r["path"], lab))
    return rows[0] + rows[1]


def registered_small_cnn(data_dir: Path, quick_fit, out: Path, name: str) -> tuple[Path, Path]:
    """(registered .pt bundle, its fp32 ONNX export) written into ``out``."""
    import torch

    from radiolens.io import read_image
    from radiolens.models.bundle import BundleInfo, ModelBundle
    from radiolens.models.export import export_onnx
    from radiolens.models.registry import create_model
    from radiolens.monitor import build_profile, register

    torch.manual_seed(0)
    info = BundleInfo(arch="small_cnn", task="binary", class_names=["pneumonia"], input_size=(32, 32),
                      name=name, version="0.test")
    bundle = ModelBundle(info=info, model=create_model("small_cnn", 1))
    train = kermany_rows(data_dir, "train", 100)
    x = torch.stack([bundle.preprocess(read_image(p)) for p, _ in train])
    quick_fit(bundle, x, torch.tensor([[float(lab)] for _, lab in train]), epochs=3)
    root = data_dir / "kermany_pediatric_pneumonia"
    with open(root / "manifest.csv") as fh:  # enough validation patients for the gate's calibration half
        val = [root / r["path"] for r in csv.DictReader(fh) if r["split"] == "val"][::5]
    register(bundle, build_profile(bundle, (read_image(p) for p in val), None, source="kermany val"))
    bundle.save(out / "model.pt")
    bundle = ModelBundle.load(out / "model.pt")
    export_onnx(bundle, out / "model.onnx",
                torch.stack([bundle.preprocess(read_image(p)) for p in val[:16]]).numpy())
    return out / "model.pt", out / "model.onnx"


NON_CHEST = ("693_UNCR.dcm", "MR2_UNCR.dcm", "US1_UNCR.dcm")  # CT, MR, ultrasound (pydicom-data)


def driver_images(root: Path, data_dir: Path, pydicom_data_files: list[Path], reviewed: bool) -> Path:
    """A folder of real images under plain names: 4 + 4 Kermany validation JPEGs, the SIIM chest DICOM and the
    :data:`NON_CHEST` pydicom-data files. ``reviewed``: the DICOMs say BurnedInAnnotation NO, as a site sends
    them after review (the service refuses a file that does not declare it)."""
    import shutil

    import pydicom

    for i, (path, _) in enumerate(kermany_rows(data_dir, "val", 4)):
        shutil.copy(path, root / f"kermany_{i}.jpeg")
    by_name = {p.name: p for p in pydicom_data_files}
    siim = sorted((data_dir / "siim_acr_pneumothorax" / "dicom").glob("*.dcm"))[0]
    for source, name in [(siim, "siim.dcm"), *((by_name[n], n) for n in NON_CHEST)]:
        if reviewed:
            ds = pydicom.dcmread(str(source))
            ds.BurnedInAnnotation = "NO"
            ds.save_as(root / name, enforce_file_format=True)
        else:
            shutil.copy(source, root / name)
    return root


#: Per-pixel bound between heatmaps (maps in [0, 1]) computed two ways, e.g. from ONNX Runtime's feature maps
#: and by pytorch-grad-cam on PyTorch: they differ only by float rounding (measured at most 4.1e-6 on the
#: images of :func:`kermany_and_siim_images`); the bound leaves room for other CPUs' kernels, as the min-max
#: normalisation can magnify rounding where a map's range is small.
HEATMAP_TOLERANCE = 1e-4


def kermany_and_siim_images(data_dir: Path) -> list:
    """Six real Kermany validation JPEGs (three of each class) and the real SIIM chest DICOM, read."""
    from radiolens.io import read_image

    paths = [p for p, _ in kermany_rows(data_dir, "val", 3)]
    paths += sorted((data_dir / "siim_acr_pneumothorax" / "dicom").glob("*.dcm"))[:1]
    assert len(paths) == 7
    return [read_image(p) for p in paths]
