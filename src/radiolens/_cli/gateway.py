"""CLI commands of the gateway layer: ``gateway run | status | requeue``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import typer

from radiolens._cli.common import LOG_LEVELS, SERVE_BACKENDS, friendly_errors
from radiolens._cli.serve import _DB_HELP, _STATE_HELP, _backend, _settings


def run_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="ModelBundle .pt file"),
    config: Path = typer.Option(None, "--config", help="gateway YAML: AE title, port, peers (allow-list), TLS, "
                                "routing rules, destination, retries (docs/pacs.md)"),
    ae_title: str = typer.Option(None, "--ae-title", help="this node's AE title (overrides the file)"),
    host: str = typer.Option(None, "--host", help="bind address (overrides the file; default 127.0.0.1)"),
    port: int = typer.Option(None, "--port", help="DICOM port (overrides the file; default 11112)"),
    db_url: str = typer.Option(None, "--db-url", help=_DB_HELP),
    state_dir: Path = typer.Option(Path("radiolens-state"), "--state-dir", help=_STATE_HELP),
    accept_any_calling_ae: bool = typer.Option(False, "--accept-any-calling-ae", help="accept associations "
                                               "from any calling AE title (default: only the configured peers)"),
    metrics_port: int = typer.Option(None, "--metrics-port", help="serve this process's Prometheus metrics "
                                     "on 127.0.0.1:PORT"),
    no_heatmaps: bool = typer.Option(False, "--no-heatmaps", help="no Grad-CAM, so no Secondary Capture"),
    mc_passes: int = typer.Option(8, "--mc-passes", help="MC-dropout passes for the review spread (0 = off)"),
    backend: Literal[SERVE_BACKENDS] | None = typer.Option(
        None, "--backend", help="torch or onnx (default: onnx for an .onnx --model, torch for a .pt bundle)"),
    onnx: Path = typer.Option(None, "--onnx", help="an export of --model (`radiolens export`)"),
    insecure_demo_secret: bool = typer.Option(False, "--insecure-demo-secret",
                                              help="accept a published demo de-identification secret"),
    log_level: Literal[LOG_LEVELS] = typer.Option("info", "--log-level", case_sensitive=False),
) -> None:
    """Run the DICOM gateway until stopped (SIGTERM / Ctrl-C). Advisory results only, never a diagnosis."""
    import logging

    from radiolens.gateway.config import GatewayConfig
    from radiolens.gateway.launch import run_gateway

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # its debug dumps would print data sets
    cfg = GatewayConfig.load(config, ae_title=ae_title, host=host, port=port)
    settings = _settings(model_path=model, db_url=db_url or os.environ.get("RADIOLENS_DB_URL", ""),
                         state_dir=state_dir, heatmaps=not no_heatmaps, mc_dropout_passes=mc_passes,
                         auto_migrate=False, insecure_demo_secret=insecure_demo_secret, inference_workers=1,
                         **_backend(backend, onnx, model))
    run_gateway(settings, cfg, accept_any_calling_ae=accept_any_calling_ae, metrics_port=metrics_port,
                echo=lambda line: typer.echo(line, err=True))


def status_cmd(
    state_dir: Path = typer.Option(Path("radiolens-state"), "--state-dir", help=_STATE_HELP),
) -> None:
    """How many items wait in each part of the DICOM spool (nothing is opened or decrypted)."""
    from radiolens.serve.store.spool import spool_counts

    for queue, n in spool_counts(state_dir).items():
        typer.echo(f"{queue:12} {n}")


def requeue_cmd(
    state_dir: Path = typer.Option(Path("radiolens-state"), "--state-dir", help=_STATE_HELP),
) -> None:
    """Give every dead-lettered item a fresh set of attempts (after fixing the destination)."""
    from radiolens.serve.config import ServeSettings
    from radiolens.serve.store.spool import SPOOL_SUBDIR, Spool

    secret = ServeSettings(model_path=Path("-"), state_dir=state_dir).resolved_secret()
    n = Spool(state_dir / SPOOL_SUBDIR, secret).requeue_dead()
    typer.echo(f"requeued {n} item(s)")


def register(app: typer.Typer) -> None:
    gateway_app = typer.Typer(help="DICOM node: receive images from a PACS or modality, send results back as "
                              "DICOM.", no_args_is_help=True)
    for name, fn in (("run", run_cmd), ("status", status_cmd), ("requeue", requeue_cmd)):
        gateway_app.command(name)(friendly_errors(fn))
    app.add_typer(gateway_app, name="gateway")
