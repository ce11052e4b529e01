"""Shared helpers of the train_* benchmarks (run by hand; they print tables, never assert timings)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch


def setup(threads: int = 2) -> None:
    torch.set_num_threads(threads)
    if not os.environ.get("RADIOLENS_DATA_DIR"):
        raise SystemExit("set RADIOLENS_DATA_DIR to the shared data folder")


def load_average() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def run_job(config: Path, out: Path, overrides: dict | None = None, clear: tuple[str, ...] = ()) -> dict:
    from radiolens.train.config import load_config
    from radiolens.train.job import run_training_job

    cfg = load_config(config, {"progress_bar": False, **(overrides or {})}, clear)
    load_before = load_average()
    t0 = time.perf_counter()
    summary = run_training_job(cfg, out).to_dict()
    summary["wall_s"] = time.perf_counter() - t0
    summary["load_before"], summary["load_after"] = load_before, load_average()
    summary["cfg"] = cfg
    return summary


def fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, list | tuple) and len(v) == 2 and all(isinstance(x, float) for x in v):
        return f"[{v[0]:.3f}, {v[1]:.3f}]"
    return str(v)


def run_metrics(summary: dict) -> dict:
    """The run's metrics.json (per-class figures, model info)."""
    import json

    return json.loads(Path(summary["metrics"]).read_text())


def split_sizes(metrics: dict) -> str:
    """"n_train/n_val/n_test" of a run's metrics."""
    info = metrics["model_info"]
    return f"{info['n_train']}/{info['n_val']}/{info['n_test']}"


def fit_times(summary: dict) -> str:
    """Fit wall seconds and fit CPU seconds per core (2 threads), as two table cells."""
    t = summary["timings_s"]
    return f"{t['fit_s']:.0f} | {t['fit_cpu_s'] / 2:.0f}"
