"""A small model trained on real paediatric Kermany images, registered with a baseline from half of the
Kermany validation patients; the other half is held-in "production" data, NIH adults are the real shift."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from radiolens.io import read_image
from radiolens.models.bundle import BundleInfo, ModelBundle
from radiolens.models.registry import create_model


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def kermany(data_dir: Path) -> tuple[Path, list[dict[str, str]]]:
    root = data_dir / "kermany_pediatric_pneumonia"
    if not (root / "manifest.csv").is_file():
        pytest.fail(f"Kermany data missing under {root}")
    return root, _rows(root / "manifest.csv")


@pytest.fixture(scope="session")
def val_halves(kermany) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Kermany validation images split by patient: (baseline half, held-in production half)."""
    root, rows = kermany
    val = [r for r in rows if r["split"] == "val"]
    patients = sorted({r["patient_id"] for r in val})
    rng = np.random.default_rng(7)
    chosen = set(rng.permutation(patients)[: len(patients) // 2])
    a = [(root / r["path"], int(r["label_int"])) for r in val if r["patient_id"] in chosen]
    b = [(root / r["path"], int(r["label_int"])) for r in val if r["patient_id"] not in chosen]
    return a, b


@pytest.fixture(scope="session")
def monitor_model(kermany, tmp_path_factory, quick_fit) -> ModelBundle:
    """small_cnn at 64 px, 3 epochs on 600 real Kermany training images (~30 s on 2 cores)."""
    root, rows = kermany
    train = [r for r in rows if r["split"] == "train"]
    pick = np.random.default_rng(0).permutation(len(train))[:600]
    torch.manual_seed(0)
    info = BundleInfo(arch="small_cnn", task="binary", class_names=["pneumonia"], input_size=(64, 64),
                      name="monitor-test", version="0.test")
    bundle = ModelBundle(info=info, model=create_model("small_cnn", 1))
    x = torch.stack([bundle.preprocess(read_image(root / train[i]["path"])) for i in pick])
    y = torch.tensor([[float(train[i]["label_int"])] for i in pick])
    quick_fit(bundle, x, y, epochs=3)
    path = tmp_path_factory.mktemp("monitor-model") / "model.pt"
    bundle.save(path)
    return ModelBundle.load(path)


@pytest.fixture(scope="session")
def registered(monitor_model: ModelBundle, val_halves, tmp_path_factory) -> tuple[Path, ModelBundle]:
    from radiolens.monitor import build_profile, register

    baseline, _ = val_halves
    images = (read_image(p) for p, _ in baseline)
    targets = np.array([lab for _, lab in baseline])
    profile = build_profile(monitor_model, images, targets, source="kermany val half A")
    register(monitor_model, profile)
    path = tmp_path_factory.mktemp("registered") / "registered.pt"
    monitor_model.save(path)
    return path, ModelBundle.load(path)


@pytest.fixture(scope="session")
def nih_paths(data_dir: Path) -> list[Path]:
    root = data_dir / "nih_chestxray14"
    rows = _rows(root / "manifest.csv")
    if not rows:
        pytest.fail(f"NIH data missing under {root}")
    return [root / r["path"] for r in rows]


@pytest.fixture(scope="session")
def non_chest_files(pydicom_data_files: list[Path]) -> list[Path]:
    """Real non-chest images: every pydicom-data file except the CR chest films, and matplotlib's photos."""
    import matplotlib

    files = [p for p in pydicom_data_files if not p.name.startswith("RG1_")]
    sample = Path(matplotlib.get_data_path()) / "sample_data"
    files += [sample / "grace_hopper.jpg", sample / "Minduka_Present_Blue_Pack.png", sample / "logo2.png"]
    return files
