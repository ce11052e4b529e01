"""CLI commands of the models layer: ``models`` (the registry), ``export`` (ONNX, with a parity check on real
images) and ``quantize`` (static INT8)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import typer

from radiolens._cli.common import CALIBRATION_METHODS, EXPORT_FORMATS, EXPORTERS, friendly_errors
from radiolens.errors import ConfigError


def models_cmd() -> None:
    """List the model registry: name, source library, default input size, pretrained weights, and where
    ImageNet weights come from without network (an installed weights package, timm's cache, or none)."""
    from radiolens.models.registry import available_models, get_architecture
    from radiolens.models.weights import offline_source

    archs = [get_architecture(n) for n in available_models()]
    rows = [(a.name, a.source, f"{a.default_input_size} px", "imagenet / file" if a.has_pretrained else "none",
             offline_source(a.name, a.timm_name) if a.has_pretrained else "-", a.description) for a in archs]
    head = ("name", "source", "input", "pretrained", "offline imagenet", "description")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    for r in [head, *rows]:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5])


def _write_json(path: Path | None, payload: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def export_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="ModelBundle .pt file."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .onnx file."),
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
    from radiolens.predict.onnx_conversion import ExportCheck, export_on_images

    if out.suffix.lower() != ".onnx":
        raise ConfigError("--out must end in .onnx")
    bundle = ModelBundle.load(model)
    check = ExportCheck(images=check_images, count=check_count, split=split, tolerance=tolerance)
    result, used = export_on_images(bundle, out, check, opset=opset, exporter=exporter)
    p = result.parity
    typer.echo(f"exported {bundle.info.arch} -> {out} ({result.size_mb:.1f} MB, {result.exporter} exporter, "
               f"opset {result.opset}, {result.seconds:.1f} s)")
    typer.echo(f"parity on {p.n_images} real images: max |dp| = {p.max_abs_diff_prob:.2e}, "
               f"max |dlogit| = {p.max_abs_diff_logit:.2e} (tolerance {p.tolerance:g}): OK")
    method = {"cam": "cam (class activation map, equals Grad-CAM for this head)",
              "eigencam": "eigencam (gradient-free; this head is not global average pooling + linear)"}
    typer.echo(f"heatmaps without PyTorch: {method.get(result.heatmap_method or '', 'none (no feature output)')}")
    _write_json(report, {**result.to_dict(), "check_images": used})


def quantize_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="fp32 .onnx from `radiolens export`."),
    out: Path = typer.Option(..., "--out", "-o", help="Output int8 .onnx file."),
    calibration: Path = typer.Option(..., "--calibration", help="Folder or manifest CSV of validation images."),
    calibration_split: str | None = typer.Option(None, "--calibration-split"),
    calibration_count: int = typer.Option(128, "--calibration-count", min=1),
    method: Literal[CALIBRATION_METHODS] = typer.Option("minmax", "--method", help="Calibration method."),
    eval_source: Path | None = typer.Option(None, "--eval", help="Labelled manifest CSV to compare fp32 vs int8."),
    eval_split: str | None = typer.Option(None, "--eval-split"),
    label_column: str | None = typer.Option(None, "--label-column", "-l",
                                            help="0/1 label column of --eval (default: the model's own label "
                                                 "definition from training)."),
    eval_count: int = typer.Option(400, "--eval-count", min=2),
    threads: int | None = typer.Option(None, "--threads", help="ONNX Runtime threads for the speed comparison."),
    report: Path | None = typer.Option(None, "--report", help="Write the quantization report as JSON."),
) -> None:
    """Static INT8 quantization calibrated on real validation images, with AUROC change and speed-up.

    When --eval draws from the same manifest and split as --calibration, the images are split into two
    patient-disjoint halves (by the manifest's patient_id) so the model is never evaluated on its calibration set.
    """
    from radiolens.predict.onnx_conversion import QuantizeOptions, quantize_on_images

    if out.suffix.lower() != ".onnx":
        raise ConfigError("--out must end in .onnx")
    options = QuantizeOptions(calibration=calibration, calibration_split=calibration_split,
                              calibration_count=calibration_count, method=method, eval_source=eval_source,
                              eval_split=eval_split, label_column=label_column, eval_count=eval_count,
                              threads=threads)

    def said(qrep) -> None:
        typer.echo(f"quantized {model.name} -> {out} ({qrep.size_mb_fp32:.1f} MB -> {qrep.size_mb_int8:.1f} MB, "
                   f"{qrep.n_calibration} calibration images, {qrep.method})")

    payload = quantize_on_images(model, out, options, on_quantized=said)
    cmp = payload.get("comparison")
    if cmp is not None:
        typer.echo(f"AUROC fp32 {cmp['auroc_fp32']:.4f} -> int8 {cmp['auroc_int8']:.4f} "
                   f"(change {cmp['auroc_change']:+.4f}) on {cmp['n_eval_images']} images; "
                   f"model-stage speed-up x{cmp['speedup_int8']:.2f} "
                   f"({cmp['model_images_per_s_fp32']:.1f} -> {cmp['model_images_per_s_int8']:.1f} img/s)")
    _write_json(report, payload)


def register(app: typer.Typer) -> None:
    """Add this layer's commands to the main app."""
    app.command("models")(friendly_errors(models_cmd))
    app.command("export")(friendly_errors(export_cmd))
    app.command("quantize")(friendly_errors(quantize_cmd))
