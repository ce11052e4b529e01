"""CLI commands of the train layer: ``train``, ``tune``, ``make-manifest``, ``split``.

``run_training_job`` is the whole job behind ``radiolens train`` (train -> evaluate -> bundle + report +
MLflow); it lives at the CLI level because it joins the train and evaluate layers, which must not import
each other upward.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

import typer

from radiolens._cli.common import LOSSES, MANIFEST_KINDS, SCHEDULERS, TASKS, friendly_errors, operating_point_option


def run_training_job(cfg, out_dir: str | Path, echo=print) -> dict:
    """Train, evaluate on test with val-fitted temperature/thresholds, save ``model.pt`` + report."""
    import torch

    from radiolens.evaluate import evaluate_predictions, write_report
    from radiolens.train.pipeline import train_model
    from radiolens.train.plots import training_curves_png

    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    result = train_model(cfg, out_dir, echo=echo)
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
    paths = write_report(ev, out_dir / "report", title=f"{cfg.name}: {info.arch} ({info.task})",
                         model_info=model_info)
    curves = training_curves_png(result.history, out_dir / "training_curves.png")
    headline = _headline(ev.to_dict())
    if result.mlflow_run_id:
        _log_to_mlflow(result.mlflow_uri, result.mlflow_run_id, headline,
                       [model_path, paths["html"], paths["json"], curves])
    summary = {"model": str(model_path), "report": str(paths["html"]), "metrics": str(paths["json"]),
               "headline": headline, "temperature": info.temperature, "thresholds": info.thresholds,
               "best_epoch": result.best_epoch, "epochs_run": len(result.history),
               "timings_s": {**info.training["timings_s"], "job_total_s": round(time.perf_counter() - t0, 1)},
               "mlflow": {"uri": result.mlflow_uri, "run_id": result.mlflow_run_id}}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _headline(ev: dict) -> dict:
    """Flat {metric: number} of the evaluator's headline (interval dicts -> their estimate)."""
    flat = {}
    for k, v in ev["summary"].get("headline", {}).items():
        if isinstance(v, dict):
            flat[k] = v.get("estimate")
            if v.get("lower") is not None:
                flat[f"{k}_ci"] = [v.get("lower"), v.get("upper")]
        else:
            flat[k] = v
    return flat


def _log_to_mlflow(uri: str, run_id: str, headline: dict, artifacts: list[Path]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    for k, v in headline.items():
        if isinstance(v, int | float):
            client.log_metric(run_id, f"test_{k}", float(v))
    for path in artifacts:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id)


def register(app: typer.Typer) -> None:
    """Add this layer's commands to the main app."""

    @app.command("train")
    @friendly_errors
    def train_cmd(
        config: Path = typer.Option(..., "--config", "-c", help="YAML training config (see configs/)."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder: model.pt, report/, mlflow.db."),
        manifest: Path | None = typer.Option(None, help="Use this manifest CSV instead of the config's data."),
        arch: str | None = typer.Option(None, help="Registry model name (radiolens models lists them)."),
        input_size: int | None = typer.Option(None, help="Model input size in pixels (square)."),
        epochs: int | None = typer.Option(None, help="Maximum epochs (early stopping on val AUROC)."),
        batch_size: int | None = typer.Option(None),
        lr: float | None = typer.Option(None, help="Learning rate."),
        loss: Literal[LOSSES] | None = typer.Option(None, help="Loss (auto: BCE with pos_weight / weighted CE)."),
        scheduler: Literal[SCHEDULERS] | None = typer.Option(None, help="Learning-rate schedule."),
        weights: str | None = typer.Option(None, metavar="PATH|imagenet",
                                           help="Pretrained RGB weights: a local file, or 'imagenet' to download "
                                                "them through timm/torchvision (online only)."),
        task: Literal[TASKS] | None = typer.Option(None, help="Task (overrides data.label)."),
        label_column: list[str] | None = typer.Option(None, "--label-column", "-l", metavar="COLUMN",
                                                      help="Label column(s); repeat for multi-label."),
        positive: str | None = typer.Option(None, help="binary: the positive label value."),
        negative: list[str] | None = typer.Option(None, metavar="VALUE",
                                                  help="binary: the negative value(s); others are refused."),
        classes: str | None = typer.Option(None, metavar="A,B,C", help="multiclass: class values in output order."),
        head_epochs: int | None = typer.Option(None, help="Staged fine-tuning: epochs training only the head."),
        unfreeze_blocks: int | None = typer.Option(None, help="Then unfreeze the last N blocks (default: all)."),
        augment: bool | None = typer.Option(None, "--augment/--no-augment",
                                            help="Anatomically plausible augmentation (config default: on)."),
        seed: int | None = typer.Option(None),
        threads: int | None = typer.Option(None, help="CPU threads for torch."),
        operating_point: str | None = typer.Option(None, callback=operating_point_option,
                                                   help="youden | sensitivity:0.90 | specificity:0.95"),
        n_bootstrap: int | None = typer.Option(None, help="Bootstrap resamples for the CIs."),
        mlflow: bool | None = typer.Option(None, "--mlflow/--no-mlflow", help="Track to <out>/mlflow.db."),
        progress: bool | None = typer.Option(None, "--progress/--no-progress"),
    ) -> None:
        """Train a classifier from a typed YAML config, evaluate it and write model.pt + an HTML report."""
        from radiolens.train.config import load_config

        overrides = {"model.arch": arch, "model.input_size": input_size, "optim.epochs": epochs,
                     "optim.batch_size": batch_size, "optim.lr": lr, "optim.loss": loss,
                     "optim.scheduler": scheduler, "model.weights": weights,
                     "seed": seed, "num_threads": threads, "eval.operating_point": operating_point,
                     "eval.n_bootstrap": n_bootstrap, "mlflow": mlflow, "progress_bar": progress,
                     "optim.head_epochs": head_epochs, "optim.unfreeze_blocks": unfreeze_blocks,
                     "augment.enabled": augment}
        clear: list[str] = []
        if manifest is not None:
            overrides["data.manifest"] = str(manifest.resolve())
            clear.append("data.medmnist")
        label, label_clear = _label_overrides(task, label_column, positive, negative, classes)
        overrides.update(label)
        clear += label_clear
        cfg = load_config(config, overrides, tuple(clear))
        summary = run_training_job(cfg, out, echo=lambda m: typer.echo(m, err=True))
        h = summary["headline"]
        shown = ", ".join(f"{k}={v:.3f}" for k, v in h.items() if isinstance(v, float))
        typer.echo(f"model:  {summary['model']}\nreport: {summary['report']}\ntest:   {shown}\n"
                   f"time:   {summary['timings_s']['job_total_s']:.0f} s "
                   f"({summary['epochs_run']} epochs, best {summary['best_epoch']})")

    @app.command("models")
    @friendly_errors
    def models_cmd() -> None:
        """List the model registry: name, source library, default input size, pretrained weights."""
        from radiolens.models.registry import available_models, get_architecture

        archs = [get_architecture(n) for n in available_models()]
        rows = [(a.name, a.source, f"{a.default_input_size} px", "imagenet / file" if a.has_pretrained else "none",
                 a.description) for a in archs]
        head = ("name", "source", "input", "pretrained", "description")
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
        for r in [head, *rows]:
            typer.echo("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])

    @app.command("tune")
    @friendly_errors
    def tune_cmd(
        config: Path = typer.Option(..., "--config", "-c", help="YAML training config to start from."),
        out: Path = typer.Option(..., "--out", "-o", help="Folder for trials and best_config.yaml."),
        trials: int = typer.Option(10, help="Number of training runs."),
        epochs: int | None = typer.Option(None, help="Epochs per trial (default: the config's)."),
        seed: int = typer.Option(0, help="Sampler seed."),
    ) -> None:
        """Optuna search over lr / weight decay / batch size / dropout, scored on validation AUROC only."""
        from radiolens.train.config import load_config
        from radiolens.train.tune import tune

        cfg = load_config(config, {"optim.epochs": epochs, "progress_bar": False})
        r = tune(cfg, out, n_trials=trials, seed=seed)
        typer.echo(f"best val AUROC {r['best_val_auroc']:.4f} with {r['params']}\n"
                   f"train it: radiolens train --config {r['best_config']} --out <dir>")

    @app.command("make-manifest")
    @friendly_errors
    def make_manifest_cmd(
        kind: Literal[MANIFEST_KINDS] = typer.Argument(..., help="Source layout."),
        source: str = typer.Argument(..., help="Folder (imagefolder/kermany/nih images), or a MedMNIST flag."),
        out: Path = typer.Option(..., "--out", "-o", help="Manifest CSV to write (medmnist: a folder)."),
        data_entry: Path | None = typer.Option(None, help="nih: Data_Entry_2017*.csv (or a manifest with "
                                                          "image_index + finding_labels)."),
        root: Path | None = typer.Option(None, help="medmnist: folder holding <flag>.npz (downloads if absent)."),
        size: int = typer.Option(28, help="medmnist: image size of the npz (28, 64, 128, 224)."),
    ) -> None:
        """Write the universal manifest CSV from a folder tree, NIH ChestX-ray14, Kermany or MedMNIST."""
        from radiolens.data import builders
        from radiolens.errors import ConfigError

        if kind == "imagefolder":
            m = builders.from_image_folder(source, out)
        elif kind == "kermany":
            m = builders.from_kermany(source, out)
        elif kind == "nih":
            if data_entry is None:
                raise ConfigError("nih needs --data-entry Data_Entry_2017.csv")
            m = builders.from_nih(data_entry, source, out)
        else:  # medmnist (Click has refused any other kind)
            m = builders.from_medmnist(source, root, out)
        where = out / "manifest.csv" if kind == "medmnist" else out
        splits = m.frame["split"].value_counts().to_dict() if "split" in m.frame.columns else {}
        typer.echo(f"{where}: {len(m)} images, {m.frame['patient_id'].nunique()} patients"
                   + (f", splits {splits}" if splits else ""))

    @app.command("split")
    @friendly_errors
    def split_cmd(
        manifest: Path = typer.Argument(..., help="Manifest CSV."),
        out: Path = typer.Option(..., "--out", "-o", help="Manifest CSV to write with a split/fold column."),
        task: Literal[TASKS] = typer.Option("binary", help="Task (for stratification)."),
        label_column: list[str] = typer.Option(..., "--label-column", "-l", help="Label column(s)."),
        positive: str = typer.Option("1", help="binary: the positive label value."),
        negative: list[str] | None = typer.Option(None, help="binary: the negative label value(s); any other "
                                                            "value is refused (default: 0, or the one other value)."),
        val: float = typer.Option(0.15, help="Validation fraction (of patients' images)."),
        test: float = typer.Option(0.15, help="Test fraction."),
        folds: int = typer.Option(0, help="k > 1: write a patient-level stratified 'fold' column instead."),
        only: str | None = typer.Option(None, help="Re-split only rows of this split (e.g. carve test from "
                                                   "train)."),
        seed: int = typer.Option(0),
    ) -> None:
        """Patient-level stratified train/val/test split (or k folds); refuses patient leakage."""
        from radiolens.data.manifest import LabelSpec, load_manifest
        from radiolens.data.splits import assign_folds, assign_splits
        from radiolens.errors import ConfigError

        try:
            spec = LabelSpec(task=task, columns=list(label_column), positive=positive,
                             negative=list(negative) if negative else None)
        except ValueError as exc:
            raise ConfigError(str(exc).splitlines()[-1]) from exc
        m = load_manifest(manifest)
        if folds > 1:
            m = assign_folds(m, spec, k=folds, seed=seed)
            counts = m.frame["fold"].value_counts().sort_index().to_dict()
        else:
            names = ("train", "val", "test") if only is None else (only, "val", "test")
            m = assign_splits(m, spec, val=val, test=test, seed=seed, only=only, names=names)
            counts = m.frame["split"].value_counts().to_dict()
        m.save(out)
        typer.echo(f"{out}: {counts}")


def _label_overrides(task: str | None, columns: list[str] | None, positive: str | None,
                     negative: list[str] | None, classes: str | None) -> tuple[dict, list[str]]:
    """Dotted overrides of ``data.label`` from the train flags, plus keys to clear when the task changes
    (a binary config's ``negative`` / ``positive_name`` mean nothing to a multi-class run, and so on)."""
    out: dict = {"data.label.columns": list(columns) if columns else None, "data.label.positive": positive,
                 "data.label.negative": list(negative) if negative else None,
                 "data.label.classes": [c.strip() for c in classes.split(",") if c.strip()] if classes else None}
    clear: list[str] = []
    if task is not None:
        out["data.label.task"] = task
        if task != "binary":
            clear += [k for k in ("data.label.negative", "data.label.positive_name") if out.get(k) is None]
        if task != "multiclass" and classes is None:
            clear.append("data.label.classes")
    return out, clear

