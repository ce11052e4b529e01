"""Prometheus metrics, one registry per app (so several apps in one process, e.g. tests, do not collide).

With several worker processes (``radiolens serve --workers N``) every process counts only what it served, so
a scrape would answer from whichever worker took the connection. The CLI then puts prometheus_client in its
documented multiprocess mode: it sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start, so each worker's
values live in per-pid mmap files there (prometheus_client picks that value class when it is first imported),
and ``/metrics`` merges every worker's files (``MultiProcessCollector``). Counters and histograms are summed
over all workers of the run, dead ones included; each gauge says how it merges (``multiprocess_mode``).
Multiprocess mode only understands plain Counter/Gauge/Histogram values: no custom collectors, no
``set_function``, no Info/Enum, no removing or clearing label sets; metrics added here must keep to that.
"""

from __future__ import annotations

import atexit
import glob
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values

from radiolens.serve.store.state import private_dir

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
log = logging.getLogger("radiolens.serve")


def multiprocess_dir() -> str | None:
    """The shared metrics folder when this process writes its values there, else None (in-process values).

    prometheus_client decides once, at import, from the environment; a variable set only after that import
    changes nothing, so the value class actually in use is what counts."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return None
    if not getattr(values.ValueClass, "_multiprocess", False):
        log.warning("%s was set after prometheus_client was imported: metrics stay per process", MULTIPROC_ENV)
        return None
    return path


#: Batch sizes are small integers: one bucket per power of two up to the largest configurable batch.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess_dir = multiprocess_dir()
        self.requests = Counter("radiolens_http_requests_total", "HTTP requests by route template and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("radiolens_http_request_duration_seconds", "HTTP request latency",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.predictions = Counter("radiolens_predictions_total", "Predictions by class and decision",
                                   ["class_name", "decision"], registry=self.registry)
        self.reviews = Counter("radiolens_review_flags_total", "Predictions flagged for human review",
                               registry=self.registry)
        self.feedback = Counter("radiolens_feedback_total", "Reader feedback", ["agree"], registry=self.registry)
        self.inference_seconds = Histogram("radiolens_inference_seconds", "De-identify + inference + heatmap time",
                                           ["heatmap"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("radiolens_inference_batch_size", "Images per forward pass (micro-batching)",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        # livesum: the service's in-flight total is the sum over the workers alive now; a worker that died
        # took its requests with it, so its share must drop out (mark_process_dead removes its file).
        self.in_flight = Gauge("radiolens_predictions_in_flight", "Predictions being computed",
                               registry=self.registry, multiprocess_mode="livesum")
        if self.multiprocess_dir:
            atexit.register(self.close)  # also when the worker exits without the app's shutdown (close is idempotent)

    def exposition(self) -> bytes:
        """Prometheus text for ``GET /metrics``: this app's registry, or every worker's files merged."""
        if not self.multiprocess_dir:
            return generate_latest(self.registry)
        from prometheus_client.multiprocess import MultiProcessCollector

        merged = CollectorRegistry()  # a fresh one per scrape, as the multiprocess docs prescribe
        MultiProcessCollector(merged, path=self.multiprocess_dir)
        return generate_latest(merged)

    def close(self) -> None:
        """Drop this worker's live gauges from the shared folder (its counters keep counting in the totals)."""
        if self.multiprocess_dir and os.path.isdir(self.multiprocess_dir):
            from prometheus_client.multiprocess import mark_process_dead

            mark_process_dead(os.getpid(), self.multiprocess_dir)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs. A killed worker stays a zombie until uvicorn's supervisor reaps it, which can
    wait behind a health-check ping of a slow-starting replacement; a zombie serves nothing, so it counts as
    dead here (``/proc`` where there is one)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]  # the field after the command's "(name)"
    except (OSError, IndexError):
        return True
    return state not in (b"Z", b"X")


def _as_pid(text: str) -> int | None:
    return int(text) if text.isdigit() else None


class MultiprocessMetrics:
    """``radiolens serve --workers N`` (N > 1): the shared metrics folder of one run, as a context manager
    around ``uvicorn.run``.

    Entering creates a fresh private folder (mode 0700) ``STATE_DIR/prometheus-multiproc/<cli pid>-<random>``
    (stale files can never count: a run never reuses a folder; folders of runs whose process is gone are
    deleted) and sets ``PROMETHEUS_MULTIPROC_DIR`` so the uvicorn workers, which inherit the environment when
    they start, write their values there. uvicorn has no child-exit hook (gunicorn's ``child_exit`` is where
    the prometheus docs call ``mark_process_dead``), so a thread of this supervising process does it: workers
    that exit cleanly already drop their live gauges themselves (``ServiceMetrics.close``), this catches the
    ones killed or crashed, which uvicorn replaces. Leaving removes the folder and the variable.

    A ``PROMETHEUS_MULTIPROC_DIR`` the user already set is theirs: used as it is, never emptied, not swept
    (it may be shared with processes this one cannot see); with one worker nothing changes.
    """

    SUBDIR = "prometheus-multiproc"

    def __init__(self, state_dir: Path, workers: int, sweep_every_s: float = 1.0):
        self.state_dir, self.workers, self.sweep_every_s = Path(state_dir), workers, sweep_every_s
        self.path: str | None = os.environ.get(MULTIPROC_ENV) or None  # the user's own, when set
        self.owned = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.path and not os.path.isdir(self.path):  # checked here, so the CLI can fail before any work
            from radiolens.errors import ConfigError

            raise ConfigError(f"{MULTIPROC_ENV} is set but is not a directory (create it, or unset it "
                              "and `radiolens serve` makes its own)")

    def __enter__(self) -> MultiprocessMetrics:
        if self.path or self.workers <= 1:
            return self
        base = private_dir(self.state_dir / self.SUBDIR)
        for old in base.iterdir():  # folders of earlier runs that ended without cleaning up (killed)
            pid = _as_pid(old.name.split("-")[0])
            if old.is_dir() and pid is not None and not _alive(pid):
                shutil.rmtree(old, ignore_errors=True)
        self.path = os.path.abspath(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=base))
        self.owned = True
        os.environ[MULTIPROC_ENV] = self.path
        self._thread = threading.Thread(target=self._sweep_loop, name="radiolens-metrics-sweep", daemon=True)
        self._thread.start()
        return self

    def sweep(self) -> list[int]:
        """mark_process_dead for every worker whose live-gauge file outlived it; returns their pids."""
        from prometheus_client.multiprocess import mark_process_dead

        if not self.path:
            return []
        dead = set()
        for f in glob.glob(os.path.join(self.path, "gauge_live*_*.db")):
            pid = _as_pid(os.path.basename(f).rsplit("_", 1)[-1].removesuffix(".db"))
            if pid is not None and not _alive(pid):
                dead.add(pid)
        for pid in dead:
            mark_process_dead(pid, self.path)
        return sorted(dead)

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.sweep_every_s):
            try:
                self.sweep()
            except OSError as exc:  # a file that vanished meanwhile; never take the supervisor down
                log.debug("metrics sweep: %s", type(exc).__name__)

    def __exit__(self, *exc) -> None:
        if not self.owned:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if os.environ.get(MULTIPROC_ENV) == self.path:
            del os.environ[MULTIPROC_ENV]
        shutil.rmtree(self.path, ignore_errors=True)
