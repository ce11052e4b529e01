"""``radiolens gateway run``: the same start-up checks as the HTTP service (``serve.http.launch.prepare_state``:
secret, private state folder, database migration, secret fingerprint), then one ``Service`` and the DICOM node
around it, until SIGTERM or SIGINT. Stopping finishes the instance being scored and the send in progress;
everything else stays queued in the spool for the next start."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

from radiolens.gateway.config import GatewayConfig
from radiolens.serve.config import ServeSettings

log = logging.getLogger("radiolens.gateway")


def run_gateway(settings: ServeSettings, config: GatewayConfig, *, accept_any_calling_ae: bool = False,
                metrics_port: int | None = None, metrics_host: str = "127.0.0.1",
                echo: Callable[[str], None] = print, stop: threading.Event | None = None) -> None:
    from radiolens.gateway.node import Gateway
    from radiolens.serve.http.launch import prepare_state
    from radiolens.serve.runtime.service import Service
    from radiolens.serve.store.state import private_umask

    stop = stop or threading.Event()
    with private_umask():
        prepare_state(settings, echo)
        service = Service(settings)
        try:
            gateway = Gateway(config, service, accept_any_calling_ae=accept_any_calling_ae)
            if metrics_port is not None:  # Prometheus exposition of this process (loopback unless asked)
                from prometheus_client import start_http_server

                start_http_server(metrics_port, addr=metrics_host, registry=service.metrics.registry)
            if threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, lambda *_: stop.set())
            with gateway:
                echo(f"DICOM gateway {config.ae_title} listening on {config.host}:{gateway.port}"
                     f"{' (TLS)' if config.tls else ''}; results to: {config.destination.kind}")
                stop.wait()
                echo("DICOM gateway stopping: finishing the instance in progress")
            service.drain()
        finally:
            service.close()
