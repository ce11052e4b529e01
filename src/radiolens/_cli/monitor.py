"""CLI commands of the monitor layer: ``monitor baseline`` (register a model's validation baseline and input
gate), ``monitor gate`` (check files against it), ``monitor status`` and ``monitor report`` (drift over the
service's stored predictions)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from radiolens._cli.common import friendly_errors

_DB_HELP = "SQLAlchemy URL of the service database (default: SQLite in --state-dir); env RADIOLENS_DB_URL"


def _monitor_config(path: Path | None):
    from radiolens.monitor.config import MonitorConfig, load_monitor_config

    return load_monitor_config(path) if path else MonitorConfig()


def baseline_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="ModelBundle .pt file"),
    manifest: Path = typer.Option(..., "--manifest", help="manifest CSV holding the validation images"),
    out: Path = typer.Option(..., "--out", "-o", help="where to write the registered model (may equal --model)"),
    split: str = typer.Option("val", help="manifest split used as the baseline ('all' for every row); "
                              "must be held out from training"),
    label: str = typer.Option(None, "--label-column", "-l", "--label",
                              help="0/1 label column (default: the model's own label definition; --label is the "
                              "earlier name); gives the validation error rate reader disagreement is judged by"),
    no_labels: bool = typer.Option(False, "--no-labels", help="build the baseline without labels"),
    max_images: int = typer.Option(2000, "--max-images", min=40, help="random sample of at most this many rows"),
    config: Path = typer.Option(None, "--config", help="monitoring YAML (gate: ..., drift: ...)"),
    seed: int = typer.Option(0, help="seed of the sample and of the gate's fit/calibration halves"),
    patient_column: str = typer.Option("patient_id", "--patient-column", help="manifest column naming "
                                       "each image's patient: the gate is fitted on half of the patients "
                                       "and calibrated on the others"),
    allow_high_rejection: bool = typer.Option(False, "--allow-high-rejection", help="register even when "
                                              "the gate refuses far more held-out validation images than "
                                              "its target (default: fail)"),
) -> None:
    """Capture the validation baseline and calibrate the input gate; store both in the model bundle.

    Fails (exit 2, nothing written) when the gate's false-rejection rate on held-out validation patients is
    far above its target: the lower end of its 95% Wilson interval is above the target.
    """
    from radiolens.models.bundle import ModelBundle
    from radiolens.monitor.baseline import BaselineOptions, register_baseline

    cfg = _monitor_config(config)
    bundle = ModelBundle.load(model)
    options = BaselineOptions(split=None if split == "all" else split, label=label, labels=not no_labels,
                              max_images=max_images, seed=seed, patient_column=patient_column,
                              allow_high_rejection=allow_high_rejection)
    profile = register_baseline(bundle, manifest, cfg.gate, options, note=typer.echo)
    sha = bundle.save(out)
    summary = profile.summary()
    rules = profile.input_gate().rules
    typer.echo(f"baseline: {summary['images']} images; input gate fitted on {summary['fit_patients']} "
               f"patients, threshold {summary['gate_threshold']} chosen on {summary['heldout_patients']} others; "
               f"it refuses {profile.rejection_statement()}, target {summary['target_false_rejection']}"
               + ("; ABOVE TARGET, registered because of --allow-high-rejection" if profile.far_above_target
                  else ""))
    typer.echo(f"header rules learned from the baseline: at least {rules.min_side_px} px a side, aspect <= "
               f"{rules.max_aspect_ratio:g}, modalities {', '.join(rules.allowed_modalities)}"
               + (f", >= {rules.min_bits_stored} bits stored" if rules.min_bits_stored else ""))
    typer.echo("validation error rate "
               f"{summary['expected_error_rate'] if summary['expected_error_rate'] is not None else 'unknown'}")
    typer.echo(f"wrote {out} (sha256 {sha[:16]}...)")


def gate_cmd(
    files: list[Path] = typer.Argument(..., help="DICOM/PNG/JPEG files", show_default=False),
    model: Path = typer.Option(..., "--model", "-m", help="ModelBundle .pt file with a monitoring baseline"),
    config: Path = typer.Option(None, "--config", help="monitoring YAML (gate header rules)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
) -> None:
    """Check files against the model's input gate: accepted, or why not. Unreadable files are reported too."""
    from radiolens.models.bundle import ModelBundle
    from radiolens.monitor.gate_files import check_files
    from radiolens.monitor.profile import require_profile

    bundle = ModelBundle.load(model)
    profile = require_profile(bundle, model.name)
    rejected = 0
    for row in check_files(bundle, profile, files, _monitor_config(config).gate):
        rejected += row["status"] != "ok"
        if as_json:
            typer.echo(json.dumps(row))
        else:
            score = row.get("ood_score")
            typer.echo(f"{row['file']}: {row['status']}" + (f" (score {score:.1f})" if score is not None else "")
                       + (f" - {'; '.join(row['reasons'])}" if row["reasons"] else ""))
    if not as_json:
        typer.echo(f"{len(files) - rejected} of {len(files)} accepted")


def status_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="the ModelBundle the service runs"),
    db_url: str = typer.Option(None, "--db-url", help=_DB_HELP),
    state_dir: Path = typer.Option(Path("radiolens-state"), "--state-dir", help="service state folder"),
    config: Path = typer.Option(None, "--config", help="monitoring YAML (drift thresholds)"),
) -> None:
    """The most recent window of the service's predictions against the baseline, as JSON (read-only)."""
    from radiolens.models.bundle import ModelBundle
    from radiolens.monitor.profile import require_profile
    from radiolens.serve.runtime.monitoring import stored_status
    from radiolens.serve.store.admin import StoreLocation, migrated_engine

    bundle = ModelBundle.load(model)
    profile = require_profile(bundle, model.name)
    cfg = _monitor_config(config).drift
    engine = migrated_engine(StoreLocation(db_url, state_dir))
    try:
        status = stored_status(engine, profile, bundle.sha256, cfg)
    finally:
        engine.dispose()
    typer.echo(json.dumps(status, indent=1))


def report_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="the ModelBundle the service runs"),
    out: Path = typer.Option(Path("monitoring-report"), "--out", help="output folder"),
    db_url: str = typer.Option(None, "--db-url", help=_DB_HELP),
    state_dir: Path = typer.Option(Path("radiolens-state"), "--state-dir", help="service state folder"),
    since: str = typer.Option(None, help="ISO 8601 start (inclusive; naive = UTC)"),
    until: str = typer.Option(None, help="ISO 8601 end (exclusive)"),
    config: Path = typer.Option(None, "--config", help="monitoring YAML (drift thresholds)"),
) -> None:
    """HTML + JSON report of every monitored signal over time, with the alert history."""
    from radiolens.models.bundle import ModelBundle
    from radiolens.monitor.profile import MonitoringProfile
    from radiolens.monitor.report import build_report, model_reference, write_report
    from radiolens.serve.runtime.monitoring import alert_events, stored_observations
    from radiolens.serve.store.admin import StoreLocation, migrated_engine

    bundle = ModelBundle.load(model)
    profile = MonitoringProfile.from_bundle(bundle)
    engine = migrated_engine(StoreLocation(db_url, state_dir))
    try:
        obs = stored_observations(engine, bundle.sha256, since, until)
        alerts = alert_events(engine, bundle.sha256, since, until)
    finally:
        engine.dispose()
    content = build_report(profile, obs, _monitor_config(config).drift, alerts, model_reference(bundle))
    html_path, json_path = write_report(content, out)
    typer.echo(f"{content['n_predictions']} predictions, {len(content['checks'])} checks "
               f"({content['window_counts']['drift']} with drift), {len(alerts)} alert events")
    typer.echo(f"wrote {html_path} and {json_path}")


def register(app: typer.Typer) -> None:
    """Add this layer's commands to the main app, as the ``monitor`` group."""
    monitor = typer.Typer(help="Input gate and drift monitoring (baseline, gate, status, report).",
                          no_args_is_help=True)
    app.add_typer(monitor, name="monitor")
    monitor.command("baseline")(friendly_errors(baseline_cmd))
    monitor.command("gate")(friendly_errors(gate_cmd))
    monitor.command("status")(friendly_errors(status_cmd))
    monitor.command("report")(friendly_errors(report_cmd))
