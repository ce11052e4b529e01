"""CLI command of the predict layer: ``predict`` (batch scoring into a resumable CSV/Parquet)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from radiolens._cli.common import BACKENDS, ENGINES, friendly_errors
from radiolens.errors import ConfigError, InputError


def predict_cmd(
    source: Path = typer.Argument(..., help="Folder (recursive), manifest CSV, DICOM tree or one image."),
    model: Path = typer.Option(..., "--model", "-m", help="ModelBundle .pt or exported .onnx."),
    out: Path = typer.Option(..., "--out", "-o", help="results.csv or results.parquet (appended to; re-runs resume)."),
    backend: Literal[BACKENDS] | None = typer.Option(None, "--backend", help="Backend (default: by file)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    workers: int | None = typer.Option(None, "--workers", min=0, help="Decoding processes (default: 0 = in the main "
                                       "process on <= 2 cores, else cores, max 4)."),
    threads: int | None = typer.Option(None, "--threads", help="Inference threads (default: cores - workers, >= 1)."),
    split: str | None = typer.Option(None, "--split", help="Only manifest rows of this split."),
    heatmaps_for_flagged: Path | None = typer.Option(
        None, "--heatmaps-for-flagged", help="Write heatmap PNGs for positive or review-flagged cases (Grad-CAM; "
        "an .onnx --model without --cam-model: from its feature maps, no PyTorch needed)."),
    cam_model: Path | None = typer.Option(None, "--cam-model", help="The .pt bundle an .onnx --model was exported "
                                          "from, for Grad-CAM and MC-dropout on PyTorch."),
    margin: float = typer.Option(0.1, "--near-threshold-margin", help="Band around a threshold (either side) that "
                                 "flags for review (used only when the bundle has no fitted triage rule)."),
    mc_dropout_passes: int = typer.Option(0, "--mc-dropout-passes", min=0, max=64, help="MC-dropout passes whose "
                                          "spread the triage rule sees (0 = off; needs the .pt model: with an .onnx "
                                          "--model give it as --cam-model)."),
    retry_errors: bool = typer.Option(True, "--retry-errors/--no-retry-errors",
                                      help="Re-score files whose earlier row is an error (the row is replaced)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT instead of resuming into it (needed "
                                   "when OUT was written by another model or backend)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    engine: Literal[ENGINES] = typer.Option("local", "--engine", help="local: this machine; ray: a Ray cluster "
                                           "(decoding on CPU tasks, inference in actors; needs radiolens[distributed], "
                                           "docs/scale.md)."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster to join (e.g. auto, HEAD:6379, "
                                       "ray://HEAD:10001; default: RAY_ADDRESS, else a local cluster). --engine ray."),
    num_actors: int = typer.Option(1, "--num-actors", min=1, help="Inference actors (model copies). --engine ray."),
    gpus_per_actor: float = typer.Option(0.0, "--gpus-per-actor", min=0.0, help="GPUs per inference actor (0: the "
                                         "forward pass on CPU). --engine ray."),
    gate: bool = typer.Option(True, "--gate/--no-gate", help="Apply the service's input gate: images it refuses "
                              "(not a chest radiograph, or unlike the model's validation images) get status "
                              "out_of_distribution and no probabilities."),
) -> None:
    """Score every image under SOURCE into a resumable CSV/Parquet; unreadable files become error rows.

    A re-run skips files already scored and retries error rows; it refuses an OUT written by another model.
    """
    from radiolens.predict import PredictConfig, discover
    from radiolens.predict.config import default_inference_threads
    from radiolens.predict.spec import ScorerSpec

    if out.suffix.lower() not in (".csv", ".parquet"):
        raise InputError(f"{out.name}: output must end in .csv or .parquet")
    cfg_kwargs = {"batch_size": batch_size, "near_threshold_margin": margin, "progress": progress,
                  "mc_dropout_passes": mc_dropout_passes,
                  "retry_errors": retry_errors, "overwrite": overwrite}
    if workers is not None:
        cfg_kwargs["workers"] = workers
    try:
        cfg = PredictConfig(**cfg_kwargs)
    except Exception as exc:  # pydantic ValidationError -> one line
        raise ConfigError(f"invalid option: {exc}") from exc
    if engine == "local" and (address is not None or num_actors != 1 or gpus_per_actor):
        raise ConfigError("--address, --num-actors and --gpus-per-actor need --engine ray")
    if threads is None:
        threads = default_inference_threads(cfg.workers)  # a core left to each decoding worker (measured)
    spec = ScorerSpec(model, cfg, backend=backend, threads=threads, cam_model=cam_model,  # type: ignore[arg-type]
                      heatmap_dir=heatmaps_for_flagged, gate=gate)
    if engine == "ray":
        from radiolens.predict.ray_engine import RayOptions, score_with_ray

        options = RayOptions(address=address, num_actors=num_actors, gpus_per_actor=gpus_per_actor)
        summary = score_with_ray(spec, discover(source, split=split, exclude=(out,)), out, options)
    else:
        scorer = spec.build()
        summary = scorer.run(discover(source, split=split, exclude=(out,)), out)
    typer.echo(f"{summary.total} inputs: {summary.scored} scored, {summary.errors} errors, "
               f"{summary.not_assessed} not assessed (input gate: {summary.gate}), "
               f"{summary.skipped_already_done} already in {out.name}"
               + (f" ({summary.retried_errors} earlier errors retried)" if summary.retried_errors else "")
               + f"; {summary.flagged} flagged ({summary.flag_rule}), "
               f"{summary.heatmaps} heatmaps; {summary.images_per_s:.1f} img/s")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    app.command("predict")(friendly_errors(predict_cmd))
