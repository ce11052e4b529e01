"""CLI commands of the predict area: ``export`` (ONNX), ``quantize`` (INT8) and ``predict`` (batch scoring)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import typer

from radiolens._cli.common import BACKENDS, CALIBRATION_METHODS, EXPORT_FORMATS, EXPORTERS, friendly_errors
from radiolens.errors import ConfigError, InputError


def _check_source(check_images: Path | None) -> Path:
    if check_images is not None:
        return check_images
    from radiolens.settings import data_dir

    root = data_dir(required=False)
    if root is None:
        raise ConfigError("the parity check needs real images: give --check-images DIR_OR_MANIFEST "
                          "(or set RADIOLENS_DATA_DIR)")
    return root


def _write_json(path: Path | None, payload: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def export_cmd(
    model: Path = typer.Option(..., "--model", help="ModelBundle .pt file."),
    out: Path = typer.Option(..., "--out", help="Output .onnx file."),
    fmt: Literal[EXPORT_FORMATS] = typer.Option("onnx", "--format", help="Export format."),
    check_images: Path | None = typer.Option(
        None, "--check-images", help="Folder or manifest CSV of real images for the parity check "
        "(default: RADIOLENS_DATA_DIR)."),
    check_count: int = typer.Option(32, "--check-count", min=1, help="How many images the parity check uses."),
    split: str | None = typer.Option(None, "--split", help="Manifest split to draw check images from."),
    tolerance: float = typer.Option(1e-4, "--tolerance", help="Max |probability difference| allowed."),
    opset: int = typer.Option(18, "--opset", min=17),
    exporter: Literal[EXPORTERS] = typer.Option("dynamo", "--exporter", help="dynamo (all registry models) or "
                                                "legacy TorchScript."),
    report: Path | None = typer.Option(None, "--report", help="Write the export report as JSON."),
) -> None:
    """Export a model to ONNX; refuses (exit 2, no file) if ONNX Runtime disagrees with PyTorch on real images."""
    from radiolens.models.bundle import ModelBundle
    from radiolens.models.export import export_onnx
    from radiolens.predict.sources import discover, load_preprocessed

    if out.suffix.lower() != ".onnx":
        raise ConfigError("--out must end in .onnx")
    bundle = ModelBundle.load(model)
    items = discover(_check_source(check_images), split=split)
    batch, used = load_preprocessed(items, bundle.info, limit=check_count)
    result = export_onnx(bundle, out, batch, opset=opset, tolerance=tolerance, exporter=exporter)  # type: ignore[arg-type]
    p = result.parity
    typer.echo(f"exported {bundle.info.arch} -> {out} ({result.size_mb:.1f} MB, {result.exporter} exporter, "
               f"opset {result.opset}, {result.seconds:.1f} s)")
    typer.echo(f"parity on {p.n_images} real images: max |dp| = {p.max_abs_diff_prob:.2e}, "
               f"max |dlogit| = {p.max_abs_diff_logit:.2e} (tolerance {p.tolerance:g}): OK")
    _write_json(report, {**result.to_dict(), "check_images": [it.key for it in used]})


def quantize_cmd(
    model: Path = typer.Option(..., "--model", help="fp32 .onnx from `radiolens export`."),
    out: Path = typer.Option(..., "--out", help="Output int8 .onnx file."),
    calibration: Path = typer.Option(..., "--calibration", help="Folder or manifest CSV of validation images."),
    calibration_split: str | None = typer.Option(None, "--calibration-split"),
    calibration_count: int = typer.Option(128, "--calibration-count", min=1),
    method: Literal[CALIBRATION_METHODS] = typer.Option("minmax", "--method", help="Calibration method."),
    eval_source: Path | None = typer.Option(None, "--eval", help="Labelled manifest CSV to compare fp32 vs int8."),
    eval_split: str | None = typer.Option(None, "--eval-split"),
    label_column: str = typer.Option("label_int", "--label-column"),
    eval_count: int = typer.Option(400, "--eval-count", min=2),
    threads: int | None = typer.Option(None, "--threads", help="ONNX Runtime threads for the speed comparison."),
    report: Path | None = typer.Option(None, "--report", help="Write the quantization report as JSON."),
) -> None:
    """Static INT8 quantization calibrated on real validation images, with AUROC change and speed-up.

    When --eval draws from the same manifest and split as --calibration, the images are split into two
    patient-disjoint halves (by the manifest's patient_id) so the model is never evaluated on its calibration set.
    """
    import numpy as np

    from radiolens.models.backends import OnnxBackend
    from radiolens.models.bundle import file_sha256
    from radiolens.models.export import SOURCE_SHA_KEY, read_metadata
    from radiolens.models.quantize import compare_int8, quantize_onnx, record_in_metadata
    from radiolens.predict.sources import discover, group_half, load_preprocessed

    if out.suffix.lower() != ".onnx":
        raise ConfigError("--out must end in .onnx")
    info = OnnxBackend(model, threads=1).info
    cal_items = discover(calibration, split=calibration_split)
    same = eval_source is not None and eval_source.resolve() == calibration.resolve() and \
        eval_split == calibration_split
    if same:
        cal_items = [it for it in cal_items if group_half(it) == 0]
    cal, _ = load_preprocessed(cal_items, info, limit=calibration_count)
    qrep = quantize_onnx(model, out, cal, method=method)  # type: ignore[arg-type]
    typer.echo(f"quantized {model.name} -> {out} ({qrep.size_mb_fp32:.1f} MB -> {qrep.size_mb_int8:.1f} MB, "
               f"{qrep.n_calibration} calibration images, {qrep.method})")
    payload: dict = {"quantization": qrep.to_dict(), "model": info.name, "arch": info.arch}
    if eval_source is not None:
        ev_items = discover(eval_source, split=eval_split, label_column=label_column)
        if same:
            ev_items = [it for it in ev_items if group_half(it) == 1]
        images, used = load_preprocessed(ev_items, info, limit=eval_count)
        labels = np.asarray([it.label for it in used])
        if len(set(labels.tolist())) < 2:
            raise InputError("the evaluation images need both positive and negative labels for AUROC")
        cmp = compare_int8(model, out, images, labels, threads=threads)
        source_sha = read_metadata(model).get(SOURCE_SHA_KEY, "")
        # Hashes pin the numbers to the files (the model card checks source_sha256 against its .pt); the int8
        # file's own hash can only be taken after its metadata is final, so it goes into the report only.
        cmp = {**cmp, "calibration_images": qrep.n_calibration, "method": qrep.method,
               "fp32_onnx_sha256": file_sha256(model), "source_sha256": source_sha}
        record_in_metadata(out, "int8_vs_fp32", cmp)
        payload["comparison"] = {**cmp, "int8_onnx_sha256": file_sha256(out)}
        typer.echo(f"AUROC fp32 {cmp['auroc_fp32']:.4f} -> int8 {cmp['auroc_int8']:.4f} "
                   f"(change {cmp['auroc_change']:+.4f}) on {cmp['n_eval_images']} images; "
                   f"model-stage speed-up x{cmp['speedup_int8']:.2f} "
                   f"({cmp['model_images_per_s_fp32']:.1f} -> {cmp['model_images_per_s_int8']:.1f} img/s)")
    _write_json(report, payload)


def predict_cmd(
    source: Path = typer.Argument(..., help="Folder (recursive), manifest CSV, DICOM tree or one image."),
    model: Path = typer.Option(..., "--model", help="ModelBundle .pt or exported .onnx."),
    out: Path = typer.Option(..., "--out", help="results.csv or results.parquet (appended to; re-runs resume)."),
    backend: Literal[BACKENDS] | None = typer.Option(None, "--backend", help="Backend (default: by file)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    workers: int | None = typer.Option(None, "--workers", min=0, help="Decoding processes (default: 0 = in the main "
                                       "process on <= 2 cores, else cores, max 4)."),
    threads: int | None = typer.Option(None, "--threads", help="Inference threads (default: cores - workers, >= 1)."),
    split: str | None = typer.Option(None, "--split", help="Only manifest rows of this split."),
    heatmaps_for_flagged: Path | None = typer.Option(
        None, "--heatmaps-for-flagged", help="Write Grad-CAM PNGs for positive or review-flagged cases."),
    cam_model: Path | None = typer.Option(None, "--cam-model", help="The .pt bundle for heatmaps when --model is "
                                          ".onnx (ONNX graphs have no gradients)."),
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
    gate: bool = typer.Option(True, "--gate/--no-gate", help="Apply the service's input gate: images it refuses "
                              "(not a chest radiograph, or unlike the model's validation images) get status "
                              "out_of_distribution and no probabilities."),
) -> None:
    """Score every image under SOURCE into a resumable CSV/Parquet; unreadable files become error rows.

    A re-run skips files already scored and retries error rows; it refuses an OUT written by another model.
    """
    from radiolens.models.backends import TorchBackend, load_backend
    from radiolens.models.bundle import ModelBundle
    from radiolens.predict import PredictConfig, Scorer, discover
    from radiolens.predict.config import default_inference_threads

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
    if threads is None:
        threads = default_inference_threads(cfg.workers)  # a core left to each decoding worker (measured)
    be = load_backend(model, kind=backend, threads=threads)  # type: ignore[arg-type]
    cam = None
    if heatmaps_for_flagged is not None or (mc_dropout_passes > 1 and cam_model is not None):
        if cam_model is not None:
            cam_bundle = ModelBundle.load(cam_model)
            exported_from = getattr(be, "source_sha256", "")
            if exported_from and cam_bundle.sha256 != exported_from:
                raise ConfigError(f"--cam-model is not the model that --model was exported from (its sha256 "
                                  f"{cam_bundle.sha256[:12]}... is not the recorded source {exported_from[:12]}...)")
            # Files exported before the source hash was recorded: the weaker check is all there is.
            if cam_bundle.info.arch != be.info.arch or cam_bundle.info.class_names != be.info.class_names:
                raise ConfigError("--cam-model is not the model that --model was exported from")
            cam = cam_bundle.model
        elif isinstance(be, TorchBackend):
            cam = be.bundle.model
        elif heatmaps_for_flagged is not None:
            raise ConfigError("heatmaps need gradients: with an .onnx --model also give --cam-model BUNDLE.pt")
    items = discover(source, split=split, exclude=(out,))
    summary = Scorer(be, cfg, cam_model=cam, heatmap_dir=heatmaps_for_flagged, gate=gate).run(items, out)
    typer.echo(f"{summary.total} inputs: {summary.scored} scored, {summary.errors} errors, "
               f"{summary.not_assessed} not assessed (input gate: {summary.gate}), "
               f"{summary.skipped_already_done} already in {out.name}"
               + (f" ({summary.retried_errors} earlier errors retried)" if summary.retried_errors else "")
               + f"; {summary.flagged} flagged ({summary.flag_rule}), "
               f"{summary.heatmaps} heatmaps; {summary.images_per_s:.1f} img/s")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    app.command("export")(friendly_errors(export_cmd))
    app.command("quantize")(friendly_errors(quantize_cmd))
    app.command("predict")(friendly_errors(predict_cmd))
