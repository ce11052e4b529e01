"""Small models trained once per session on real radiographs, for the explain / triage / model-card tests.

- ``marker_model``: a 2-label small_cnn on NIH 64 px radiographs resized to 48 px, where each label is the
  presence of a planted marker (checkerboard / stripes) at a random, recorded place: the evidence location
  is known, so CAMs can be checked against it.
- ``pneumonia_models``: two small_cnn members (seeds 0 and 1) trained on real PneumoniaMNIST labels, for
  MC-dropout, deep-ensemble triage and the model card.
Both go through ``run_training_job`` (what ``radiolens train`` runs), so they carry temperature, thresholds,
label definition and an evaluation report like any trained model.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from radiolens.explain.quality import write_marker_set
from radiolens.train.config import config_from_dict
from radiolens.train.job import run_training_job

MARKERS = ("checker", "stripes")


def _config(manifest: Path, label: dict, size: int, epochs: int, seed: int = 0) -> dict:
    return {"name": "test", "data": {"manifest": str(manifest), "label": label},
            "model": {"arch": "small_cnn", "input_size": size},
            "optim": {"epochs": epochs, "batch_size": 32, "lr": 0.003},
            "augment": {"enabled": False}, "eval": {"n_bootstrap": 50}, "seed": seed,
            "mlflow": False, "progress_bar": False, "num_threads": 2}


@pytest.fixture(scope="session")
def marker_set(data_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("markers")
    return write_marker_set(data_dir / "nih_chestxray14" / "manifest.csv", out, MARKERS, size=48,
                            per_split={"train": 200, "val": 80, "test": 80}, seed=0)


@pytest.fixture(scope="session")
def marker_model(marker_set: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("marker_model")
    cfg = _config(marker_set, {"task": "multilabel", "columns": list(MARKERS)}, 48, 2)
    run_training_job(config_from_dict(cfg), out, echo=lambda *a: None)
    return out / "model.pt"


@pytest.fixture(scope="session")
def pneumonia_manifest(data_dir: Path, tmp_path_factory) -> Path:
    from radiolens.data.builders import from_medmnist

    out = tmp_path_factory.mktemp("pneumoniamnist_explain")
    from_medmnist("pneumoniamnist", data_dir / "medmnist", out, download=False)
    frame = pd.read_csv(out / "manifest.csv", dtype={"patient_id": str})
    parts = [frame[frame.split == s].sample(n=n, random_state=0)
             for s, n in (("train", 400), ("val", 150), ("test", 150))]
    path = out / "manifest_small.csv"
    pd.concat(parts).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def pneumonia_models(pneumonia_manifest: Path, tmp_path_factory) -> list[Path]:
    """Two ensemble members (different seeds); each folder also holds report/metrics.json."""
    label = {"task": "binary", "columns": ["label"], "positive": "pneumonia"}
    paths = []
    for seed in (0, 1):
        out = tmp_path_factory.mktemp(f"pneumonia_seed{seed}")
        run_training_job(config_from_dict(_config(pneumonia_manifest, label, 28, 2, seed)), out,
                         echo=lambda *a: None)
        paths.append(out / "model.pt")
    return paths
