"""Starting the service: every check that can fail is made once, in the supervising process, before uvicorn
starts any worker, so a misconfiguration is one line and exit 2 rather than N crashing workers.

The order matters: TLS files and the metrics folder variable, the ONNX export against the bundle, the
de-identification secret (missing, short, a published demo value, or in a file others can read), the private
state folder, the database migration (once, here, rather than racing in every worker), and the secret's
fingerprint against the database's (a different secret is refused unless rotation was asked for; an accepted
rotation is done and audited here only, so workers then find it unchanged). Everything created from here on
(database, WAL, images, heatmaps, metrics files; workers inherit the umask) is private to the service user.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from radiolens.errors import ConfigError
from radiolens.serve.config import ServeSettings, secret_fingerprint

#: The app factory uvicorn imports in every worker (the settings reach it through the environment).
APP_FACTORY = "radiolens.serve.http.app:app_from_env"
#: Seconds uvicorn waits for requests in flight when asked to stop.
GRACEFUL_SHUTDOWN_S = 120
#: Seconds a worker process may take to answer the supervisor's health ping (uvicorn's default is 5). A worker
#: answers from a Python thread, so while it imports PyTorch and loads and warms up the model (GIL held for
#: seconds at a time, longer on a loaded host) a short limit makes the supervisor kill it and start another, which
#: then meets the same limit: with --workers > 1 the service never becomes ready.
WORKER_HEALTHCHECK_S = 60


def check_tls_files(ssl_keyfile: Path | None, ssl_certfile: Path | None) -> None:
    """HTTPS needs a private key and its certificate chain, both readable files (``ConfigError`` otherwise)."""
    if (ssl_keyfile is None) != (ssl_certfile is None):
        raise ConfigError("--ssl-keyfile and --ssl-certfile go together (HTTPS needs both)")
    for opt, path in (("--ssl-keyfile", ssl_keyfile), ("--ssl-certfile", ssl_certfile)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{opt}: file not found: {Path(path).name}")


def prepare_state(settings: ServeSettings, echo: Callable[[str], None]) -> str:
    """The checks and one-off work before workers start (see the module docstring); returns the secret
    registration outcome ("registered", "unchanged" or "rotated") and puts the settings and the secret into
    this process's environment for the workers."""
    from radiolens.io.deid import PUBLIC_SECRETS
    from radiolens.serve.runtime.service import check_deid_secret
    from radiolens.serve.store import audit
    from radiolens.serve.store.db import make_engine, session_factory, upgrade
    from radiolens.serve.store.state import secure_state_dir

    if settings.backend == "onnx" and not settings.onnx_only:  # the export must be of this very bundle
        from radiolens.models.bundle import ModelBundle
        from radiolens.serve.runtime.inference import onnx_backend

        onnx_backend(settings, ModelBundle.load(settings.model_path))
    secret = settings.resolved_secret()
    if secret.strip().lower() in PUBLIC_SECRETS:
        echo("warning: --insecure-demo-secret: serving with a published de-identification secret; never "
             "upload real patient data to this instance")
    secure_state_dir(settings.state_dir)
    upgrade(settings.resolved_db_url())
    engine = make_engine(settings.resolved_db_url())
    try:
        outcome = check_deid_secret(session_factory(engine), secret_fingerprint(secret),
                                    settings.accept_new_deid_secret, actor=(audit.CLI_USER_ID, audit.CLI_ROLE))
    finally:
        engine.dispose()
    workers_settings = settings.model_copy(update={"accept_new_deid_secret": False})
    os.environ.update(workers_settings.worker_env())  # the secret never travels inside the settings JSON
    echo(f"de-identification secret fingerprint {secret_fingerprint(secret)} ({outcome} for this database; "
         "record it: a change means study refs no longer match earlier ones)")
    return outcome


def viewer_line(host: str, port: int, tls: bool) -> str:
    """Where a reader opens the web viewer. A wildcard bind address is not something a browser can open, so
    this machine's name stands in for it (readers elsewhere use the name or address IT gives them)."""
    import socket

    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    if ":" in shown:  # an IPv6 literal goes in brackets in a URL
        shown = f"[{shown}]"
    base = f"{'https' if tls else 'http'}://{shown}:{port}"
    return f"web viewer: {base}/viewer/  (API reference: {base}/docs, health: {base}/healthz)"


def run_server(settings: ServeSettings, *, host: str, port: int, workers: int, log_level: str,
               ssl_keyfile: Path | None = None, ssl_certfile: Path | None = None,
               echo: Callable[[str], None] = print) -> None:
    """Check, prepare and run the service under uvicorn until it is stopped. ``echo`` receives the lines an
    operator must see (the secret's fingerprint, a demo-secret warning)."""
    import uvicorn

    from radiolens.serve.http.server import HEADER_TIMEOUT_ENV, HeaderTimeoutH11Protocol
    from radiolens.serve.runtime.metrics import MultiprocessMetrics
    from radiolens.serve.store.state import private_umask

    check_tls_files(ssl_keyfile, ssl_certfile)
    # --workers > 1: one shared Prometheus folder for this run, set in the environment before uvicorn starts
    # the workers, so /metrics answers for all of them whichever worker takes the scrape.
    metrics_dir = MultiprocessMetrics(settings.state_dir, workers)  # a bad PROMETHEUS_MULTIPROC_DIR fails here
    with private_umask():
        prepare_state(settings, echo)
        os.environ[HEADER_TIMEOUT_ENV] = str(settings.header_timeout_s)  # read by the protocol in every worker
        echo(viewer_line(host, port, tls=ssl_certfile is not None))
        with metrics_dir:
            uvicorn.run(APP_FACTORY, factory=True, host=host, port=port, workers=workers, log_level=log_level,
                        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, http=HeaderTimeoutH11Protocol,
                        timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
                        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
                        ssl_certfile=str(ssl_certfile) if ssl_certfile else None)
