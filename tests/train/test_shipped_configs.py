"""Every config shipped in configs/ is a valid TrainConfig (typed, every key known, every choice checked)."""

from __future__ import annotations

from pathlib import Path

import pytest

from radiolens.models.registry import available_models
from radiolens.train.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_loads(path, data_dir, monkeypatch):
    monkeypatch.setenv("RADIOLENS_DATA_DIR", str(data_dir))
    cfg = load_config(path)
    assert cfg.model.arch in available_models() and cfg.optim.epochs >= 1
    if cfg.model.weights == "imagenet":  # a shipped pretrained recipe must work offline
        from radiolens.models.weights import package_file

        assert package_file(cfg.model.arch) is not None, f"{path.name}: no offline ImageNet weights"
