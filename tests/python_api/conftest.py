"""A small real model for the Python API tests: small_cnn (32 px) trained for seconds on real Kermany images,
registered with a monitoring profile from Kermany validation images (so the learned out-of-distribution score
takes part in the gate), saved as a .pt bundle and exported to ONNX with its embedding and feature outputs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest


def kermany_rows(data_dir: Path, split: str, per_class: int) -> list[tuple[Path, int]]:
    root = data_dir / "kermany_pediatric_pneumonia"
    rows: dict[int, list[tuple[Path, int]]] = {0: [], 1: []}
    with open(root / "manifest.csv") as fh:
        for r in csv.DictReader(fh):
            lab = int(r["label_int"])
            if r["split"] == split and len(rows[lab]) < per_class:
                rows[lab].append((root / r["path"], lab))
    return rows[0] + rows[1]


@pytest.fixture(scope="session")
def api_model_files(data_dir: Path, quick_fit, tmp_path_factory) -> tuple[Path, Path]:
    """(registered .pt bundle, its fp32 ONNX export)."""
    import torch

    from radiolens.io import read_image
    from radiolens.models.bundle import BundleInfo, ModelBundle
    from radiolens.models.export import export_onnx
    from radiolens.models.registry import create_model
    from radiolens.monitor import build_profile, register

    torch.manual_seed(0)
    info = BundleInfo(arch="small_cnn", task="binary", class_names=["pneumonia"], input_size=(32, 32),
                      name="api-small-cnn", version="0.test")
    bundle = ModelBundle(info=info, model=create_model("small_cnn", 1))
    train = kermany_rows(data_dir, "train", 100)
    x = torch.stack([bundle.preprocess(read_image(p)) for p, _ in train])
    quick_fit(bundle, x, torch.tensor([[float(lab)] for _, lab in train]), epochs=3)
    root = data_dir / "kermany_pediatric_pneumonia"
    with open(root / "manifest.csv") as fh:  # enough validation patients for the gate's calibration half
        val = [root / r["path"] for r in csv.DictReader(fh) if r["split"] == "val"][::5]
    register(bundle, build_profile(bundle, (read_image(p) for p in val), None, source="kermany val"))
    out = tmp_path_factory.mktemp("api-model")
    bundle.save(out / "model.pt")
    bundle = ModelBundle.load(out / "model.pt")
    export_onnx(bundle, out / "model.onnx", torch.stack([bundle.preprocess(read_image(p)) for p in val[:16]]).numpy())
    return out / "model.pt", out / "model.onnx"
