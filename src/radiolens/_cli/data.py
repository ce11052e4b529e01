"""CLI commands of the data layer: ``make-manifest`` (the universal manifest CSV from a source layout) and
``split`` (patient-level train/val/test or k folds)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from radiolens._cli.common import MANIFEST_KINDS, TASKS, friendly_errors


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
    from radiolens.data.builders import build_manifest

    m = build_manifest(kind, source, out, data_entry=data_entry, root=root, size=size)
    where = out / "manifest.csv" if kind == "medmnist" else out
    splits = m.frame["split"].value_counts().to_dict() if "split" in m.frame.columns else {}
    typer.echo(f"{where}: {len(m)} images, {m.frame['patient_id'].nunique()} patients"
               + (f", splits {splits}" if splits else ""))


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
    from radiolens.data.splits import split_manifest
    from radiolens.errors import ConfigError

    try:
        spec = LabelSpec(task=task, columns=list(label_column), positive=positive,
                         negative=list(negative) if negative else None)
    except ValueError as exc:
        raise ConfigError(str(exc).splitlines()[-1]) from exc
    m, counts = split_manifest(load_manifest(manifest), spec, val=val, test=test, folds=folds, only=only, seed=seed)
    m.save(out)
    typer.echo(f"{out}: {counts}")


def register(app: typer.Typer) -> None:
    """Add this layer's commands to the main app."""
    app.command("make-manifest")(friendly_errors(make_manifest_cmd))
    app.command("split")(friendly_errors(split_cmd))
