"""CLI commands of the train layer: ``train`` (the training job, :func:`radiolens.train.job.run_training_job`)
and ``tune`` (Optuna search)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from radiolens._cli.common import LOSSES, SCHEDULERS, STRATEGIES, TASKS, friendly_errors, operating_point_option
from radiolens.errors import ConfigError


def train_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="YAML training config (see configs/)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder: model.pt, report/, mlflow.db "
                                                               "(required unless --print-config)."),
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
    unfreeze_all_from: int | None = typer.Option(None, help="From this epoch on, every block trains (3rd stage)."),
    max_minutes: float | None = typer.Option(None, help="Fit wall-time budget; the best validated epoch is kept."),
    weight_averaging: Literal["none", "ema", "swa"] | None = typer.Option(
        None, help="Average the weights: ema (optim.ema_decay) or swa (from optim.swa_from_epoch)."),
    mixup_alpha: float | None = typer.Option(None, help="MixUp Beta(alpha, alpha) blending; 0 = off."),
    augment: bool | None = typer.Option(None, "--augment/--no-augment",
                                        help="Anatomically plausible augmentation (config default: on)."),
    seed: int | None = typer.Option(None),
    threads: int | None = typer.Option(None, help="CPU threads for torch."),
    operating_point: str | None = typer.Option(None, callback=operating_point_option,
                                               help="youden | sensitivity:0.90 | specificity:0.95"),
    n_bootstrap: int | None = typer.Option(None, help="Bootstrap resamples for the CIs."),
    mlflow: bool | None = typer.Option(None, "--mlflow/--no-mlflow", help="Track to <out>/mlflow.db."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress"),
    strategy: Literal[STRATEGIES] | None = typer.Option(
        None, help="ddp: DistributedDataParallel over --devices processes per node (gloo on CPU, NCCL on GPU)."),
    devices: int | None = typer.Option(None, min=1,
                                       help="Processes (GPUs) per node; --batch-size is the global batch."),
    num_nodes: int | None = typer.Option(None, min=1, help="Machines in the DDP group (started by torchrun / srun)."),
    set_: list[str] | None = typer.Option(None, "--set", metavar="KEY=VALUE",
                                          help="Override any config field by its dotted key (repeatable), e.g. "
                                               "--set optim.lr=3e-4; applied after the named options."),
    print_config: bool = typer.Option(False, "--print-config",
                                      help="Print the resolved config (file + options) as YAML and exit."),
) -> None:
    """Train a classifier from a typed YAML config, evaluate it and write model.pt + an HTML report.

    The whole config, with every option applied, is validated before any manifest or image is read."""
    from radiolens.errors import require_torch

    # PyTorch first: its extra (`train`) also brings pandas, which the config and data layers import earlier.
    require_torch("radiolens train")
    from radiolens.train.config import config_yaml, label_overrides, load_config, parse_set_overrides
    from radiolens.train.job import run_training_job

    overrides = {"model.arch": arch, "model.input_size": input_size, "optim.epochs": epochs,
                 "optim.batch_size": batch_size, "optim.lr": lr, "optim.loss": loss,
                 "optim.scheduler": scheduler, "model.weights": weights,
                 "seed": seed, "num_threads": threads, "eval.operating_point": operating_point,
                 "eval.n_bootstrap": n_bootstrap, "mlflow": mlflow, "progress_bar": progress,
                 "optim.head_epochs": head_epochs, "optim.unfreeze_blocks": unfreeze_blocks,
                 "optim.unfreeze_all_from": unfreeze_all_from, "optim.max_minutes": max_minutes,
                 "optim.weight_averaging": weight_averaging, "optim.mixup_alpha": mixup_alpha,
                 "augment.enabled": augment, "trainer.strategy": strategy, "trainer.devices": devices,
                 "trainer.num_nodes": num_nodes}
    clear: list[str] = []
    if manifest is not None:
        overrides["data.manifest"] = str(manifest.resolve())
        clear.append("data.medmnist")
    label, label_clear = label_overrides(task, label_column, positive, negative, classes)
    overrides.update(label)
    clear += label_clear
    overrides.update(parse_set_overrides(set_))
    cfg = load_config(config, overrides, tuple(clear))
    if print_config:
        typer.echo(config_yaml(cfg), nl=False)
        return
    if out is None:
        raise ConfigError("--out is required (the folder for model.pt, report/ and mlflow.db)")
    summary = run_training_job(cfg, out, echo=lambda m: typer.echo(m, err=True))
    if summary is None:  # a DDP process other than rank 0: rank 0 reports
        return
    shown = ", ".join(f"{k}={v:.3f}" for k, v in summary.headline.items() if isinstance(v, float))
    typer.echo(f"model:  {summary.model}\nreport: {summary.report}\ntest:   {shown}\n"
               f"time:   {summary.timings_s['job_total_s']:.0f} s "
               f"({summary.epochs_run} epochs, best {summary.best_epoch})")


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


def register(app: typer.Typer) -> None:
    """Add this layer's commands to the main app."""
    app.command("train")(friendly_errors(train_cmd))
    app.command("tune")(friendly_errors(tune_cmd))
