"""/metrics with several uvicorn workers (prometheus multiprocess mode): `radiolens serve --workers 2` in a
subprocess on a real port, predictions spread over both workers, every scrape answers with the service's total
(whichever worker takes it); a killed worker's live gauges are dropped while its counts stay; the CLI's folder
handling; the monitoring gauges' merge modes across processes; one worker unchanged."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from tests.serve.conftest import SECRET, free_port
from typer.testing import CliRunner

from radiolens.cli import app as cli_app
from radiolens.serve.runtime.metrics import MULTIPROC_ENV, MultiprocessMetrics

PRED = "radiolens_predictions_total"


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def _total(samples, name: str, **labels: str) -> float:
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items()))


def _per_worker_predictions(run_dir: Path) -> dict[int, float]:
    """What each worker alone would have answered before multiprocess mode: its own file's count."""
    out = {}
    for f in run_dir.glob("counter_*.db"):
        fams = MultiProcessCollector.merge([str(f)])
        out[int(f.stem.split("_")[1])] = sum(s.value for m in fams for s in m.samples if s.name == PRED)
    return out


def _key(state: Path, role: str) -> str:
    r = CliRunner().invoke(cli_app, ["users", "create", "--role", role, "--state-dir", str(state)])
    assert r.exit_code == 0, r.output
    return r.stdout.strip().splitlines()[-1]


def _wait_for(cond, timeout: float, what: str, proc=None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text() if log else ''}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {log.read_text() if log else ''}"
        time.sleep(0.2)


def test_two_workers_every_scrape_counts_every_prediction(bundle_path, tmp_path, kermany_samples, monkeypatch):
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    state = tmp_path / "state"
    clinician, auditor = _key(state, "clinician"), _key(state, "auditor")
    port, log = free_port(), tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != MULTIPROC_ENV} | {"RADIOLENS_DEID_SECRET": SECRET}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "radiolens.cli", "serve", "--model", str(bundle_path),
                                 "--state-dir", str(state), "--port", str(port), "--workers", "2",
                                 "--inference-workers", "1", "--mc-passes", "0", "--log-level", "info"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    close = {"Connection": "close"}  # a new connection per request, so the kernel hands them to either worker
    try:
        # both workers have finished starting (each logs it), so both accept from the shared socket
        _wait_for(lambda: log.read_text().count("Application startup complete") == 2, 90, "2 workers", proc, log)
        runs = list((state / MultiprocessMetrics.SUBDIR).iterdir())
        assert len(runs) == 1 and runs[0].is_dir() and (runs[0].stat().st_mode & 0o777) == 0o700
        run_dir = runs[0]

        def predict(path: Path) -> int:
            return httpx.post(f"{url}/v1/predictions", params={"heatmap": "false"},
                              headers={"Authorization": f"Bearer {clinician}", **close},
                              files={"file": ("u.png", path.read_bytes(), "image/png")}, timeout=60).status_code

        n, per_worker = 0, {}
        with cf.ThreadPoolExecutor(4) as pool:
            for _ in range(6):  # rounds of 4 concurrent uploads until both workers have served some
                codes = list(pool.map(predict, [p for p, _ in kermany_samples[:4]]))
                assert codes == [201] * 4, codes
                n += 4
                per_worker = _per_worker_predictions(run_dir)
                if n >= 8 and sum(c > 0 for c in per_worker.values()) >= 2:
                    break
        # Teeth: both workers predicted, so each one alone (the old per-process /metrics) answers less than n.
        assert len(per_worker) == 2 and all(0 < c < n for c in per_worker.values()), per_worker
        assert sum(per_worker.values()) == n

        headers = {"Authorization": f"Bearer {auditor}", **close}
        for _ in range(6):  # over new connections: whichever worker answers, the total is the same
            r = httpx.get(f"{url}/metrics", headers=headers, timeout=30)
            assert r.status_code == 200 and r.headers["content-type"] == CONTENT_TYPE_LATEST
            s = _samples(r.text)
            assert _total(s, PRED) == n
            assert _total(s, "radiolens_inference_seconds_count") == n  # histograms merge too
            assert _total(s, "radiolens_http_request_duration_seconds_bucket", method="POST",
                          route="/v1/predictions", le="+Inf") == n
            assert _total(s, "radiolens_http_requests_total", method="POST", route="/v1/predictions",
                          status="201") == n
            in_flight = [(lab, v) for name, lab, v in s if name == "radiolens_predictions_in_flight"]
            assert in_flight == [({}, 0.0)]  # livesum: one series, no per-pid label
        assert httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {clinician}", **close},
                         timeout=30).status_code == 403
        assert httpx.get(f"{url}/metrics", headers=close, timeout=30).status_code == 401
        assert "Traceback" not in log.read_text()

        # A worker killed outright (no shutdown, no atexit): the supervisor's sweep drops its live gauge
        # file, and once uvicorn has replaced it the dead worker's counts are still in every total.
        victim = min(per_worker)
        os.kill(victim, signal.SIGKILL)
        _wait_for(lambda: not (run_dir / f"gauge_livesum_{victim}.db").exists(), 60, "mark_process_dead", proc, log)
        assert (run_dir / f"counter_{victim}.db").exists()
        _wait_for(lambda: log.read_text().count("Application startup complete") == 3, 90, "replacement", proc, log)
        assert len(list(run_dir.glob("gauge_livesum_*.db"))) == 2  # the survivor and the replacement
        for _ in range(3):
            s = _samples(httpx.get(f"{url}/metrics", headers=headers, timeout=30).text)
            assert _total(s, PRED) == n
            assert [(lab, v) for name, lab, v in s if name == "radiolens_predictions_in_flight"] == [({}, 0.0)]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    assert rc in (0, -signal.SIGTERM) and "Traceback" not in log.read_text(), log.read_text()
    assert not run_dir.exists()  # the run's folder goes with it


def test_one_worker_metrics_stay_in_process(live, kermany_samples, monkeypatch):
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    srv, keys = live()
    assert srv.server.config.app.state.service.metrics.multiprocess_dir is None
    close = {"Connection": "close"}
    n = 6
    for p, _ in (kermany_samples * 2)[:n]:
        r = httpx.post(f"{srv.url}/v1/predictions", params={"heatmap": "false"}, headers=keys.h("clinician") | close,
                       files={"file": ("u.png", p.read_bytes(), "image/png")}, timeout=60)
        assert r.status_code == 201, r.text
    for _ in range(3):
        r = httpx.get(f"{srv.url}/metrics", headers=keys.h("auditor") | close, timeout=30)
        assert r.headers["content-type"] == CONTENT_TYPE_LATEST
        s = _samples(r.text)
        assert _total(s, PRED) == n and _total(s, "radiolens_inference_seconds_count") == n


# ---------------------------------------------------------------------- the CLI's folder, without uvicorn
@pytest.fixture
def serve_cli(monkeypatch, tmp_path, bundle_path):
    """``run(*args) -> (result, env the workers would inherit)``; uvicorn.run replaced by a recorder."""
    import uvicorn

    from radiolens.serve.config import DEID_SECRET_ENV, DEID_SECRET_FILE_ENV, SETTINGS_ENV

    for var in (DEID_SECRET_FILE_ENV, SETTINGS_ENV, MULTIPROC_ENV):  # setenv first: the teardown then undoes
        monkeypatch.setenv(var, "")  # what `radiolens serve` writes into os.environ
        monkeypatch.delenv(var)
    monkeypatch.setenv(DEID_SECRET_ENV, SECRET)
    seen: dict[str, object] = {}

    def fake_run(*args, **kwargs):
        path = os.environ.get(MULTIPROC_ENV)
        seen.update(env=path, files=sorted(os.listdir(path)) if path else None,
                    mode=(os.stat(path).st_mode & 0o777) if path else None)

    monkeypatch.setattr(uvicorn, "run", fake_run)

    def run(*args: str):
        seen.clear()
        r = CliRunner().invoke(cli_app, ["serve", "--model", str(bundle_path), "--state-dir",
                                         str(tmp_path / "st"), *args])
        return r, dict(seen)

    return run


def test_cli_makes_a_fresh_private_folder_per_multiworker_run(serve_cli, tmp_path):
    base = tmp_path / "st" / MultiprocessMetrics.SUBDIR
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    stale = base / f"{dead.stdout.strip()}-leftover"  # a run that was killed before it could clean up
    stale.mkdir(parents=True)
    (stale / "counter_4242.db").write_bytes(b"\0" * 16)

    r, seen = serve_cli("--workers", "2")
    assert r.exit_code == 0, r.output
    run_dir = Path(str(seen["env"]))
    assert run_dir.parent == base.resolve() and seen["files"] == [] and seen["mode"] == 0o700
    assert not stale.exists() and not run_dir.exists()  # stale run swept at start, own run removed at exit
    assert MULTIPROC_ENV not in os.environ  # not left behind for anything else in this process

    r, seen = serve_cli("--workers", "1")
    assert r.exit_code == 0, r.output
    assert seen["env"] is None  # one worker: the in-process registry as before


def test_cli_keeps_the_users_multiproc_dir(serve_cli, tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "counter_1.db").write_bytes(b"")
    monkeypatch.setenv(MULTIPROC_ENV, str(mine))
    r, seen = serve_cli("--workers", "3")
    assert r.exit_code == 0, r.output
    assert seen["env"] == str(mine) and seen["files"] == ["counter_1.db"]
    assert os.environ[MULTIPROC_ENV] == str(mine) and (mine / "counter_1.db").exists()

    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path / "missing"))
    r, seen = serve_cli("--workers", "2")
    assert r.exit_code != 0 and not seen
    assert "is not a directory" in r.output and "Traceback" not in r.output and len(r.output.splitlines()) == 1


# ---------------------------------------------------------------------- monitoring gauges across processes
_WORKERS = textwrap.dedent("""
    import os, sys, types
    from radiolens.models.bundle import ModelBundle
    from radiolens.monitor import MonitorConfig
    from radiolens.monitor.drift import SignalResult, WindowReport
    from radiolens.serve.runtime.metrics import ServiceMetrics
    from radiolens.serve.runtime.monitoring import ServiceMonitor

    bundle = ModelBundle.load(sys.argv[1])

    def worker(stat, alert, killed):
        service = types.SimpleNamespace(bundle=bundle, metrics=ServiceMetrics())
        assert service.metrics.multiprocess_dir == os.environ["PROMETHEUS_MULTIPROC_DIR"]
        monitor = ServiceMonitor(MonitorConfig(), engine=None, sessions=None, registry=service.metrics.registry,
                                 model_sha256=bundle.sha256, profile=None)
        status = "drift" if alert else "ok"
        report = WindowReport(status, 40, [SignalResult("score", "ks", status, statistic=stat, p_value=stat / 10)])
        monitor._gauges(report)
        monitor._alert_gauges(report, {"score"} if alert else set())
        monitor.m_alerts.labels("score").inc()
        service.metrics.in_flight.inc()
        monitor.close()
        if killed:
            os._exit(0)  # no atexit: as if the worker was killed mid-request
        sys.exit(0)  # a clean exit: atexit -> ServiceMetrics.close -> mark_process_dead

    # forked one after the other, as uvicorn replaces a worker: new pids, so separate files
    for args in ((0.5, True, False), (0.125, False, True)):
        pid = os.fork()
        if pid == 0:
            worker(*args)
        assert os.waitpid(pid, 0)[1] == 0
""")


def test_monitoring_gauges_merge_across_worker_processes(bundle_path, tmp_path, monkeypatch):
    """Two 'workers' one after the other on one folder: the newer check wins for every drift gauge (also an
    alert the newer one saw cleared), counters sum, and a dead worker's in-flight count drops out once swept."""
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    with MultiprocessMetrics(tmp_path / "state", workers=2, sweep_every_s=3600) as mp:
        done = subprocess.run([sys.executable, "-c", _WORKERS, str(bundle_path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert len(list(Path(str(mp.path)).glob("counter_*.db"))) == 2

        def merged():
            from prometheus_client import CollectorRegistry, generate_latest

            reg = CollectorRegistry()
            MultiProcessCollector(reg, path=mp.path)
            return _samples(generate_latest(reg).decode())

        s = merged()
        for name, labels, value in [("radiolens_drift_statistic", {"signal": "score", "test": "ks"}, 0.125),
                                    ("radiolens_drift_p_value", {"signal": "score"}, 0.0125),
                                    ("radiolens_drift_alert_active", {"signal": "score"}, 0.0),
                                    ("radiolens_drift_window_status", {"status": "ok"}, 1.0),
                                    ("radiolens_drift_window_status", {"status": "drift"}, 0.0),
                                    ("radiolens_drift_window_predictions", {}, 40.0)]:
            assert [v for n, lab, v in s if n == name and lab == labels] == [value], (name, labels)
        assert _total(s, "radiolens_drift_alerts_total", signal="score") == 2
        # the first exited cleanly (atexit -> mark_process_dead); the second's in-flight 1 counts until swept
        assert [v for n, _, v in s if n == "radiolens_predictions_in_flight"] == [1.0]
        assert len(mp.sweep()) == 1
        assert [v for n, _, v in merged() if n == "radiolens_predictions_in_flight"] in ([], [0.0])
    assert not Path(str(mp.path)).exists() and MULTIPROC_ENV not in os.environ


def test_a_killed_worker_not_yet_reaped_counts_as_dead(tmp_path, monkeypatch):
    """A SIGKILLed worker is a zombie until its parent reaps it; the sweep must not wait for that."""
    from radiolens.serve.runtime.metrics import _alive

    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert _alive(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _alive(child.pid):  # not reaped: os.kill(pid, 0) still succeeds on the zombie
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(child.pid, 0)  # teeth: the pid still exists (a zombie), yet it counts as dead
    finally:
        child.kill()
        child.wait()
    assert not _alive(child.pid)
    assert _alive(os.getpid())
