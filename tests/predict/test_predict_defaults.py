"""The decoding/inference split `radiolens predict` picks when not told (measured in benchmarks/README.md)."""

from __future__ import annotations

import os

import pytest

from radiolens.predict.config import PredictConfig, _default_workers, default_inference_threads


@pytest.mark.parametrize(("cores", "workers"), [(1, 0), (2, 0), (3, 3), (4, 4), (16, 4)])
def test_no_decoding_workers_without_spare_cores(cores, workers):
    assert _default_workers(cores) == workers


def test_inference_gets_every_core_when_decoding_runs_in_the_main_process(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    cfg = PredictConfig()
    assert cfg.workers == 0 and default_inference_threads(cfg.workers) == 2
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    cfg = PredictConfig()
    assert cfg.workers == 4 and default_inference_threads(cfg.workers) == 4  # a core per worker
