"""A small real PneumoniaMNIST manifest (PNG cache built once per session) for fast training tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from radiolens.data.builders import from_medmnist


@pytest.fixture(scope="session")
def pneumonia_full(data_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pneumoniamnist")
    from_medmnist("pneumoniamnist", data_dir / "medmnist", out, download=False)
    return out / "manifest.csv"


def _subset(full: Path, sizes: tuple[int, int, int], name: str) -> Path:
    frame = pd.read_csv(full, dtype={"patient_id": str})
    parts = [frame[frame.split == split].sample(n=n, random_state=0)
             for split, n in zip(("train", "val", "test"), sizes, strict=True)]
    path = full.parent / name
    pd.concat(parts).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def pneumonia_small(pneumonia_full: Path) -> Path:
    """400 train / 150 val / 150 test real images, both classes, patient-disjoint (a subset of a clean split)."""
    return _subset(pneumonia_full, (400, 150, 150), "manifest_small.csv")


@pytest.fixture(scope="session")
def pneumonia_tiny(pneumonia_full: Path) -> Path:
    """160 / 80 / 80 real images: for tests of mechanics (seeding, freezing, task wiring), not of learning."""
    return _subset(pneumonia_full, (160, 80, 80), "manifest_tiny.csv")


@pytest.fixture(scope="session")
def nih_multilabel(data_dir: Path, tmp_path_factory) -> Path:
    """All 1,000 NIH 64 px images with their real finding labels (one 0/1 column per finding, from
    ``finding_labels``), re-split 70/15/15 by patient with the multi-label stratification."""
    from radiolens.data.builders import NIH_FINDINGS, from_nih
    from radiolens.data.manifest import LabelSpec
    from radiolens.data.splits import assign_splits

    nih = data_dir / "nih_chestxray14"
    out = tmp_path_factory.mktemp("nih") / "manifest.csv"
    m = from_nih(nih / "manifest.csv", nih / "images_64px")
    m = assign_splits(m, LabelSpec(task="multilabel", columns=list(NIH_FINDINGS)), val=0.15, test=0.15, seed=0)
    m.save(out)
    return out


@pytest.fixture(scope="session")
def tiny_config():
    """A function manifest -> the smallest useful training config (dict), optim fields overridable."""
    return _tiny_config


def _tiny_config(manifest: Path, arch: str = "small_cnn", **optim) -> dict:
    return {
        "name": "test",
        "data": {"manifest": str(manifest),
                 "label": {"task": "binary", "columns": ["label"], "positive": "pneumonia"}},
        "model": {"arch": arch, "input_size": 28},
        "optim": {"epochs": 2, "batch_size": 32, "lr": 0.003, **optim},
        "eval": {"n_bootstrap": 50},
        "mlflow": False,
        "progress_bar": False,
        "num_threads": 2,
    }
