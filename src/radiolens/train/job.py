"""The whole job behind ``radiolens train``: train -> evaluate on test with temperature and thresholds fitted on
validation -> ``model.pt`` + HTML/JSON report + training curves + ``summary.json`` (+ MLflow, when the config
tracks to it). Library code, so benchmarks and tests train exactly what the command trains."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from radiolens.train.config import TrainConfig


@dataclass
class TrainingJobSummary:
    """What a training job wrote and measured; :meth:`to_dict` is the content of ``summary.json``."""

    model: str  #: path of the saved bundle (model.pt)
    report: str  #: path of report.html
    metrics: str  #: path of metrics.json
    headline: dict[str, Any]  #: flat {metric: estimate} plus ``<metric>_ci`` [lower, upper]
    temperature: float
    thresholds: list[float]
    best_epoch: int
    epochs_run: int
    timings_s: dict[str, float]
    mlflow: dict[str, str | None]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def headline_metrics(evaluation: dict) -> dict[str, Any]:
    """Flat {metric: number} of an evaluation's headline (``EvaluationResult.to_dict()``): interval dicts become
    their estimate, with ``<metric>_ci`` = [lower, upper] when the interval has bounds."""
    flat: dict[str, Any] = {}
    for k, v in evaluation["summary"].get("headline", {}).items():
        if isinstance(v, dict):
            flat[k] = v.get("estimate")
            if v.get("lower") is not None:
                flat[f"{k}_ci"] = [v.get("lower"), v.get("upper")]
        else:
            flat[k] = v
    return flat


def run_training_job(cfg: TrainConfig, out_dir: str | Path,
                     echo: Callable[[str], Any] = print) -> TrainingJobSummary | None:
    """Train ``cfg``, evaluate on its test split (validation when there is none, with a warning through
    ``echo``) with temperature/thresholds fitted on validation, and write into ``out_dir``: ``model.pt`` (the
    bundle with its temperature, thresholds, metrics and training record), ``report/``, ``training_curves.png``
    and ``summary.json``. Under DDP (``trainer.strategy: ddp``) only global rank 0 evaluates and writes; the
    other processes return None once training ends."""
    import torch

    from radiolens.evaluate import evaluate_predictions, write_report
    from radiolens.evaluate.error_examples import report_examples
    from radiolens.train.pipeline import train_model
    from radiolens.train.plots import training_curves_png

    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    result = train_model(cfg, out_dir, echo=echo)
    if result is None:  # a DDP process other than rank 0: it trained its share, rank 0 writes everything
        return None
    bundle = result.bundle
    info = bundle.info
    info.training["label"] = cfg.data.label.model_dump()
    info.training["history"] = result.history
    info.training["timings_s"] = {k: round(v, 1) for k, v in result.timings.items()}
    info.training["threads"] = torch.get_num_threads()
    outputs = result.test or result.val
    if result.test is None:
        echo("warning: no test split configured; the report evaluates the validation split (optimistic)")
    ev = evaluate_predictions(
        task=info.task, class_names=info.class_names, test_logits=outputs.logits, test_targets=outputs.targets,
        val_logits=result.val.logits, val_targets=result.val.targets, history=result.history,
        operating_point=cfg.eval.operating_point, n_bootstrap=cfg.eval.n_bootstrap, seed=cfg.seed)
    info.temperature = float(ev.temperature)
    info.thresholds = [float(t) for t in ev.thresholds]
    info.operating_point = cfg.eval.operating_point
    info.metrics = ev.bundle_metrics()
    model_path = out_dir / "model.pt"
    sha = bundle.save(model_path)
    model_info = {"arch": info.arch, "task": info.task, "input_size": list(info.input_size),
                  "classes": info.class_names, "model_file": model_path.name, "sha256": sha,
                  "n_train": info.training["n_train"], "n_val": info.training["n_val"],
                  "n_test": info.training["n_test"], "epochs_run": info.training["epochs_run"],
                  "best_epoch": result.best_epoch, "train_seconds": round(result.timings["total_s"], 1)}
    evaluated = cfg.data.test_split if result.test is not None else cfg.data.val_split
    examples = report_examples(info.task, info.class_names, outputs.logits, outputs.targets, ev.temperature,
                               ev.thresholds, result.manifest.subset(evaluated).absolute_paths())
    paths = write_report(ev, out_dir / "report", title=f"{cfg.name}: {info.arch} ({info.task})",
                         model_info=model_info, examples=examples)
    curves = training_curves_png(result.history, out_dir / "training_curves.png")
    headline = headline_metrics(ev.to_dict())
    if result.mlflow_run_id:
        _log_to_mlflow(result.mlflow_uri, result.mlflow_run_id, headline,
                       [model_path, paths["html"], paths["json"], curves])
    summary = TrainingJobSummary(
        model=str(model_path), report=str(paths["html"]), metrics=str(paths["json"]), headline=headline,
        temperature=info.temperature, thresholds=info.thresholds, best_epoch=result.best_epoch,
        epochs_run=len(result.history),
        timings_s={**info.training["timings_s"], "job_total_s": round(time.perf_counter() - t0, 1)},
        mlflow={"uri": result.mlflow_uri, "run_id": result.mlflow_run_id})
    (out_dir / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2))
    return summary


def _log_to_mlflow(uri: str, run_id: str, headline: dict, artifacts: list[Path]) -> None:
    """The test headline as ``test_<metric>`` metrics and the job's files as artefacts; ends the run."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    for k, v in headline.items():
        if isinstance(v, int | float):
            client.log_metric(run_id, f"test_{k}", float(v))
    for path in artifacts:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id)
