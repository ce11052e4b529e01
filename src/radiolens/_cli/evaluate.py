"""CLI commands of the evaluate layer: ``evaluate`` (a saved model on a manifest split,
:func:`radiolens.evaluate.saved_model.evaluate_bundle`) and ``model-card``."""

from __future__ import annotations

from pathlib import Path

import typer

from radiolens._cli.common import friendly_errors, operating_point_option


def evaluate_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="A radiolens model file (model.pt)."),
    manifest: Path = typer.Option(..., "--manifest", help="Manifest CSV with labels and a split column."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for report.html + metrics.json."),
    split: str = typer.Option("test", help="Split to evaluate ('all' for every row)."),
    val_split: str | None = typer.Option("val", help="Split to fit temperature/thresholds on "
                                                     "('none': use the model's stored ones)."),
    operating_point: str | None = typer.Option(None, callback=operating_point_option,
                                               help="youden | sensitivity:0.90 | specificity:0.95"),
    n_bootstrap: int = typer.Option(1000, help="Bootstrap resamples for the 95% CIs."),
    label_column: list[str] | None = typer.Option(None, "--label-column", "-l",
                                                  help="Label column(s) if the model does not record them."),
    positive: str | None = typer.Option(None, help="binary: the positive label value."),
    seed: int = typer.Option(0),
    triage_json: Path | None = typer.Option(None, "--triage-json", help="triage.json from `radiolens "
                                            "triage-fit` on this model: adds the rule and its risk-coverage."),
) -> None:
    """Evaluate a saved model on a manifest split: AUROC with CIs, operating point, calibration."""
    from radiolens.evaluate.saved_model import BundleEvaluationOptions, evaluate_bundle

    options = BundleEvaluationOptions(
        split=None if split == "all" else split,
        val_split=None if (val_split or "").lower() in ("", "none") else val_split,
        operating_point=operating_point, n_bootstrap=n_bootstrap, label_columns=label_column, positive=positive,
        seed=seed, triage_json=triage_json)
    r = evaluate_bundle(model, manifest, out, options)
    head = r.result.to_dict()["summary"].get("headline", {})
    shown = ", ".join(f"{k}={(v.get('estimate') if isinstance(v, dict) else v):.3f}" for k, v in head.items()
                      if isinstance(v.get("estimate") if isinstance(v, dict) else v, float))
    typer.echo(f"report: {r.report}\n{shown}")


def model_card_cmd(
    model: Path = typer.Option(..., "--model", "-m"),
    out: Path = typer.Option(..., "--out", "-o"),
    eval_json: Path = typer.Option(None, "--eval-json", help="Evaluation metrics.json (default: bundle's)."),
    subgroups_json: Path = typer.Option(None, "--subgroups-json"),
    triage_json: Path = typer.Option(None, "--triage-json"),
    manifest: Path = typer.Option(None, "--manifest", help="Training manifest (hashed, not copied)."),
    image: list[Path] = typer.Option(None, "--image", help="Explanation overlay PNG to embed (repeatable)."),
    quantization: Path = typer.Option(None, "--quantization", help="`radiolens quantize --report` JSON or "
                                      "the int8 .onnx it wrote: AUROC fp32 vs int8, speed-up, hashes."),
) -> None:
    """Model card as JSON and self-contained HTML."""
    from radiolens.evaluate.model_card import build_card, write_card
    from radiolens.models.bundle import ModelBundle

    bundle = ModelBundle.load(model)
    card = build_card(bundle, eval_json=eval_json, subgroups_json=subgroups_json, triage_json=triage_json,
                      manifest=manifest, images=image, quantization=quantization)
    for p in write_card(card, out, image):
        typer.echo(p)


def register(app: typer.Typer) -> None:
    """Add this layer's commands to the main app."""
    app.command("evaluate")(friendly_errors(evaluate_cmd))
    app.command("model-card")(friendly_errors(model_card_cmd))
