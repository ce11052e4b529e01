"""Shared helpers of the train_* benchmarks (run by hand; they print tables, never assert timings)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch


def setup(threads: int = 2, need_data: bool = True) -> None:
    torch.set_num_threads(threads)
    if need_data and not os.environ.get("RADIOLENS_DATA_DIR"):
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


def run_recipes(config: Path, out: Path, recipes: dict[str, dict], minutes: float, only: str | None = None,
                common: dict | None = None, reuse: bool = False) -> list[tuple[str, dict]]:
    """Train each named recipe (config overrides) from ``config`` into its own folder under ``out``; ``only``
    keeps the recipes whose name contains it; ``reuse`` takes a recipe's earlier run (its ``summary.json``)
    instead of training it again. Prints progress and the budget line; returns (name, summary)."""
    import json
    import re

    def slug_of(name: str) -> str:
        return re.sub(r"[^A-Za-z0-9]+", "_", name.split(",")[0]).strip("_")

    slugs = [slug_of(name) for name in recipes]
    if len(set(slugs)) != len(slugs):
        raise SystemExit(f"two recipes would share one run folder: {slugs}")
    rows = []
    for name, overrides in recipes.items():
        if only and only not in name:
            continue
        slug = slug_of(name)
        earlier = Path(out) / slug / "summary.json"
        if reuse and earlier.is_file():
            rows.append((name, json.loads(earlier.read_text())))
            print(f"reused: {name}", flush=True)
            continue
        s = run_job(config, Path(out) / slug, {**overrides, **(common or {}), "mlflow": False})
        rows.append((name, s))
        print(f"done: {name} in {s['wall_s']:.0f} s", flush=True)
    print(f"\nfit budget {minutes:g} min per recipe; 2 CPU threads; load average at the end {load_average()}")
    return rows


def split_logits(run_dir: Path, mirrored: bool = False, splits=("val", "test")) -> dict:
    """{split: (logits, targets)} of the model saved in a training run's folder, over the manifest it trained
    on; ``mirrored``: test-time augmentation, the mean logits over each image and its left-right mirror."""
    from torch import nn

    from radiolens.data.manifest import load_manifest
    from radiolens.evaluate.saved_model import bundle_label_spec, model_logits
    from radiolens.models.bundle import ModelBundle

    class Mirrored(nn.Module):
        def __init__(self, model: nn.Module):
            super().__init__()
            self.model = model

        def forward(self, x):
            return (self.model(x) + self.model(torch.flip(x, dims=[-1]))) / 2

    bundle = ModelBundle.load(Path(run_dir) / "model.pt")
    if mirrored:
        bundle.model = Mirrored(bundle.model)
    manifest = load_manifest(Path(run_dir) / "manifest_used.csv")
    spec = bundle_label_spec(bundle)
    return {s: model_logits(bundle, manifest.subset(s), spec) for s in splits}
