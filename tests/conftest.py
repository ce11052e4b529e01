"""Shared fixtures. Real-data tests read RADIOLENS_DATA_DIR and FAIL (never skip) when it is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    value = os.environ.get("RADIOLENS_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.fail("RADIOLENS_DATA_DIR must point at the real data folder (../shared/data); "
                    f"got {value!r}. Real-data tests fail rather than skip.")
    return Path(value)


@pytest.fixture(scope="session")
def pydicom_data_files() -> list[Path]:
    """Every file of the pydicom-data package (real DICOM test corpus), downloaded as a PyPI package."""
    try:
        import data_store  # the import name of the pydicom-data package
    except ImportError:
        pytest.fail("the pydicom-data package is required (pip install -e '.[dev]')")
    root = Path(data_store.__file__).parent / "data"
    files = sorted(p for p in root.rglob("*.dcm") if p.is_file())
    if not files:
        pytest.fail(f"pydicom-data holds no files under {root}")
    return files


def fit_binary(bundle, x, y, epochs: int = 3, lr: float = 2e-3, batch_size: int = 32) -> None:
    """A few epochs of plain Adam + BCE on preprocessed tensors: a small real-data model for tests of what
    consumes models (service, monitoring), where Lightning's pipeline would only add time."""
    import torch

    opt = torch.optim.Adam(bundle.model.parameters(), lr=lr)
    bundle.model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(bundle.model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    bundle.model.eval()


@pytest.fixture(scope="session")
def quick_fit():
    """``quick_fit(bundle, x, y, epochs=3)``: see :func:`fit_binary`."""
    return fit_binary


@pytest.fixture(scope="session")
def kermany_3class_small(data_dir: Path, tmp_path_factory) -> Path:
    """Real Kermany rows with their real normal / bacteria / virus labels: 600 train, 150 val (the shared
    split) and 150 test images from train patients held out (patient-disjoint by construction)."""
    import pandas as pd

    root = data_dir / "kermany_pediatric_pneumonia"
    frame = pd.read_csv(root / "manifest.csv", dtype=str)
    frame["path"] = [str(root / p) for p in frame["path"]]
    train, val = frame[frame.split == "train"], frame[frame.split == "val"]
    patients = train.patient_id.drop_duplicates().sample(frac=1.0, random_state=0)
    held = set(patients.iloc[:400])
    test = train[train.patient_id.isin(held)].sample(n=150, random_state=0).assign(split="test")
    rest = train[~train.patient_id.isin(held)].sample(n=600, random_state=0)
    out = tmp_path_factory.mktemp("kermany3") / "manifest.csv"
    pd.concat([rest, val.sample(n=150, random_state=0), test]).to_csv(out, index=False)
    return out
