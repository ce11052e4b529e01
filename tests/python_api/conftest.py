"""A small real model for the Python API tests: small_cnn (32 px) trained for seconds on real Kermany images,
registered with a monitoring profile from Kermany validation images (so the learned out-of-distribution score
takes part in the gate), saved as a .pt bundle and exported to ONNX with its embedding and feature outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.kermany_models import registered_small_cnn


@pytest.fixture(scope="session")
def api_model_files(data_dir: Path, quick_fit, tmp_path_factory) -> tuple[Path, Path]:
    """(registered .pt bundle, its fp32 ONNX export)."""
    return registered_small_cnn(data_dir, quick_fit, tmp_path_factory.mktemp("api-model"), "api-small-cnn")
