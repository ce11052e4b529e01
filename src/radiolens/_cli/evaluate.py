"""CLI commands of the evaluate layer: ``radiolens evaluate`` runs a saved model over a manifest split and
writes the report. Temperature and thresholds are fitted on ``--val-split`` (never on test); with
``--val-split none`` the evaluator uses T = 1 and 0.5 thresholds and says so in the report."""

from __future__ import annotations

from pathlib import Path

import typer

from radiolens._cli.common import friendly_errors, operating_point_option


def model_logits(bundle, manifest, label_spec, batch_size: int = 256, cache_dir=None):
    """(logits (N, K), targets) of ``bundle``'s raw model over every image of ``manifest``."""
    from torch.utils.data import DataLoader

    from radiolens.data.dataset import ImageTensorDataset, manifest_images
    from radiolens.train.module import stack_logits

    targets, names = manifest.targets(label_spec)
    if list(names) != list(bundle.info.class_names):
        from radiolens.errors import ManifestError

        raise ManifestError(f"the manifest's classes ({', '.join(names)}) differ from the model's "
                            f"({', '.join(bundle.info.class_names)})")
    images = manifest_images(manifest, bundle.info.input_size, cache_dir)
    loader = DataLoader(ImageTensorDataset(images, targets, bundle.info.mean, bundle.info.std),
                        batch_size=batch_size)
    return stack_logits(bundle.model, loader)


def evaluate_bundle(model_path: Path, manifest_path: Path, out: Path, split: str | None = "test",
                    val_split: str | None = "val", operating_point: str | None = None, n_bootstrap: int = 1000,
                    label_columns: list[str] | None = None, positive: str | None = None, seed: int = 0,
                    triage_json: Path | None = None) -> dict:
    from radiolens.data.manifest import LabelSpec, load_manifest
    from radiolens.data.splits import check_leakage
    from radiolens.errors import ConfigError
    from radiolens.evaluate import evaluate_predictions, write_report
    from radiolens.models.bundle import ModelBundle

    bundle = ModelBundle.load(model_path)
    info = bundle.info
    stored = info.training.get("label")
    if label_columns:
        spec = LabelSpec(task=info.task, columns=list(label_columns),
                         positive=positive or (stored or {}).get("positive", "1"),
                         negative=None if positive else (stored or {}).get("negative"),
                         classes=info.class_names if info.task == "multiclass" else None,
                         positive_name=info.class_names[0] if info.task == "binary" else None)
    elif stored:
        spec = LabelSpec.model_validate(stored)
    else:
        raise ConfigError("this model does not record its label column(s): pass --label-column")
    manifest = load_manifest(manifest_path)
    check_leakage(manifest)
    test_m = manifest.subset(split) if split else manifest
    val_logits = val_targets = None
    if val_split:
        val_logits, val_targets = model_logits(bundle, manifest.subset(val_split), spec)
    test_logits, test_targets = model_logits(bundle, test_m, spec)
    op = operating_point or (info.operating_point if not info.operating_point.startswith("default")
                             else "youden")
    ev = evaluate_predictions(task=info.task, class_names=info.class_names, test_logits=test_logits,
                              test_targets=test_targets, val_logits=val_logits, val_targets=val_targets,
                              history=info.training.get("history"), operating_point=op,
                              n_bootstrap=n_bootstrap, seed=seed)
    model_info = {"arch": info.arch, "task": info.task, "model_file": model_path.name, "sha256": bundle.sha256,
                  "input_size": list(info.input_size), "classes": info.class_names,
                  "evaluated_split": split or "all", "threshold_split": val_split or "none (T=1, 0.5)"}
    triage = _read_triage(triage_json, bundle.sha256) if triage_json else None
    paths = write_report(ev, out, title=f"{info.name}: evaluation on {manifest_path.name} ({split or 'all'})",
                         model_info=model_info, triage=triage)
    return {"report": paths["html"], "metrics": paths["json"], "result": ev}


def _read_triage(path: Path, model_sha256: str) -> dict:
    """A ``triage-fit`` triage.json for the report; refused when it was fitted on another model."""
    import json

    from radiolens.errors import InputError

    if not path.is_file():
        raise InputError(f"triage file not found: {path.name}")
    try:
        triage = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"triage file {path.name} is not JSON") from exc
    if not isinstance(triage, dict) or "rule" not in triage:
        raise InputError(f"{path.name} is not a triage-fit result (no 'rule')")
    fitted_on = triage.get("model_sha256")
    if fitted_on and fitted_on != model_sha256:
        raise InputError(f"{path.name} was fitted on another model (sha256 {fitted_on[:12]}... is not this "
                         f"model's {model_sha256[:12]}...)")
    return triage


def register(app: typer.Typer) -> None:
    """Add this layer's commands to the main app."""

    @app.command("evaluate")
    @friendly_errors
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
        r = evaluate_bundle(model, manifest, out, None if split == "all" else split,
                            None if (val_split or "").lower() in ("", "none") else val_split,
                            operating_point, n_bootstrap, label_column, positive, seed, triage_json)
        head = r["result"].to_dict()["summary"].get("headline", {})
        shown = ", ".join(f"{k}={(v.get('estimate') if isinstance(v, dict) else v):.3f}" for k, v in head.items()
                          if isinstance(v.get("estimate") if isinstance(v, dict) else v, float))
        typer.echo(f"report: {r['report']}\n{shown}")
