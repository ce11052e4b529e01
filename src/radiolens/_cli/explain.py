"""CLI commands of the explain layer: ``explain`` (CAM overlays), ``audit-subgroups`` and ``triage-fit``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import typer

from radiolens._cli.common import friendly_errors

#: CAM methods offered to users (the quality benchmark's "random" baseline is left out).
USER_METHODS = ("gradcam", "gradcam++", "scorecam", "eigencam", "layercam", "xgradcam")


def explain_cmd(
    files: list[Path] = typer.Argument(..., help="Images (DICOM/PNG/JPEG/TIFF) to explain."),
    model: Path = typer.Option(..., "--model", "-m", help="Model bundle (.pt)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for overlay PNGs and index.csv."),
    method: Literal[USER_METHODS] = typer.Option("gradcam", case_sensitive=False, help="CAM method."),
    class_name: list[str] = typer.Option(None, "--class", help="Class to explain (repeatable); binary models "
                                         "also accept the negative name. Default: every output."),
    figure: bool = typer.Option(False, "--figure", help="Also write a side-by-side figure per overlay "
                                "(image beside overlay, colour bar, class, probability)."),
    filters: bool = typer.Option(False, "--filters", help="Also write first-layer filters and feature maps."),
) -> None:
    """Class activation maps as overlay PNGs of exactly each image's width x height (advisory only), and
    index.csv mapping every output file to its input, class and model output."""
    from radiolens.explain.batch import explain_files
    from radiolens.models.bundle import ModelBundle

    index = explain_files(ModelBundle.load(model), files, out, method, class_name or None, figure=figure,
                          filters=filters, on_written=typer.echo)
    typer.echo(index)


def audit_cmd(
    model: Path = typer.Option(..., "--model", "-m"),
    manifest: Path = typer.Option(..., "--manifest"),
    column: list[str] = typer.Option(..., "--column", help="age_band | sex | view | site | any column"),
    out: Path = typer.Option(..., "--out", "-o"),
    label: str = typer.Option(None, "--label-column", "-l", "--label",
                              help="0/1 label column (default: the model's own label definition; --label is the "
                                   "earlier name)."),
    split: str = typer.Option(None, help="Only rows of this split (e.g. test)."),
    n_bootstrap: int = typer.Option(1000),
) -> None:
    """Per-subgroup AUROC (95% CI), sensitivity, specificity, ECE, equalized-odds gaps; flags groups where
    the model does worse than overall (a group doing better is reported as a note)."""
    from radiolens.explain.subgroup_audit import audit_bundle_subgroups

    audit, table = audit_bundle_subgroups(model, manifest, list(column), out, label=label, split=split,
                                          n_bootstrap=n_bootstrap)
    cols = [c for c in ("column", "group", "n", "n_positive", "auroc", "auroc_lower", "auroc_upper",
                        "sensitivity", "specificity", "ece", "status") if c in table.columns]
    typer.echo(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    o = audit["overall"]
    typer.echo(f"overall AUROC {o['auroc']:.3f} [{o['auroc_lower']:.3f}, {o['auroc_upper']:.3f}] n={o['n']}")
    for c, block in audit["columns"].items():
        for r in block["groups"]:
            for flag in r.get("flags", []):
                typer.echo(f"FLAGGED {c}={r['group']}: {flag}")
            for note in r.get("notes", []):
                typer.echo(f"note {c}={r['group']}: {note}")
        typer.echo(f"{c}: equalized-odds difference {block['equalized_odds_difference']}")


def triage_cmd(
    model: Path = typer.Option(..., "--model", "-m"),
    manifest: Path = typer.Option(..., "--manifest"),
    out: Path = typer.Option(..., "--out", "-o"),
    budget: float = typer.Option(0.2, help="Maximum fraction of cases referred for human review."),
    label: str = typer.Option(None, "--label-column", "-l", "--label",
                              help="0/1 label column (default: the model's own label definition; --label is the "
                                   "earlier name)."),
    val_split: str = typer.Option("val"),
    test_split: str = typer.Option("test"),
    mc_passes: int = typer.Option(0, help="MC-dropout passes for a spread (0 = threshold margin only)."),
    ensemble: list[Path] = typer.Option(None, "--ensemble", help="Other member bundle(s) of a deep ensemble "
                                        "(repeatable): the score is the members' mean, the spread their std."),
    batch_size: int = typer.Option(64, help="Images per forward pass (and per MC-dropout / ensemble batch)."),
    write_bundle: bool = typer.Option(False, help="Store the rule in the bundle's info.triage."),
) -> None:
    """Fit the human-review rule on validation to a referral budget; report it and the test risk-coverage."""
    from radiolens.explain.triage_fit import TriageFitOptions, fit_triage_on_manifest

    options = TriageFitOptions(budget=budget, label=label, val_split=val_split, test_split=test_split,
                               mc_passes=mc_passes, batch_size=batch_size, write_bundle=write_bundle)
    report = fit_triage_on_manifest(model, manifest, out, options, ensemble=ensemble or [])
    typer.echo(json.dumps({k: v for k, v in report.items() if k != "risk_coverage_test"}, indent=2))
    typer.echo(f"test AURC {report['risk_coverage_test']['aurc']:.3f}")


def register(app: typer.Typer) -> None:
    """Add this layer's commands to the main app."""
    app.command("explain")(friendly_errors(explain_cmd))
    app.command("audit-subgroups")(friendly_errors(audit_cmd))
    app.command("triage-fit")(friendly_errors(triage_cmd))
