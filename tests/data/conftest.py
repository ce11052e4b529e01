"""Real-data fixtures shared by the data-layer tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest


@pytest.fixture(scope="session")
def kermany_dir(data_dir: Path) -> Path:
    return data_dir / "kermany_pediatric_pneumonia"


@pytest.fixture(scope="session")
def kermany_frame(kermany_dir: Path) -> pd.DataFrame:
    return pd.read_csv(kermany_dir / "manifest.csv", dtype={"patient_id": str})


@pytest.fixture()
def real_rows(kermany_dir: Path, kermany_frame: pd.DataFrame) -> pd.DataFrame:
    """24 real Kermany rows (12 normal, 12 pneumonia) with absolute paths: a manifest that lives anywhere."""
    picks = pd.concat([kermany_frame[kermany_frame.label == "NORMAL"].head(12),
                       kermany_frame[kermany_frame.label == "PNEUMONIA"].head(12)])
    out = picks[["path", "label", "pneumonia_type", "patient_id"]].copy()
    out["path"] = [str(kermany_dir / p) for p in out["path"]]
    return out.reset_index(drop=True)
