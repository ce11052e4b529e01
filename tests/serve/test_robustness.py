"""Robustness over a real socket: the inference pool stays bounded after timeouts, unexpected exceptions are
answered 500 JSON and logged without their message (PHI), and unknown routes / wrong methods answer JSON."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time

import httpx
import pytest
from tests.serve.conftest import PHI, START_ROWS

from radiolens.serve.runtime.hooks import PredictionHooks
from radiolens.serve.store import audit


class Concurrency:
    """An input gate that records how many predictions are inside it at once, and holds them until released."""

    def __init__(self):
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.now = self.peak = self.entered = 0

    def __call__(self, ctx) -> None:
        with self._lock:
            self.now += 1
            self.entered += 1
            self.peak = max(self.peak, self.now)
        try:
            self.release.wait(60)
        finally:
            with self._lock:
                self.now -= 1


def _post(srv, keys, data: bytes, timeout: float = 60) -> httpx.Response:
    return httpx.post(f"{srv.url}/v1/predictions", headers=keys.h("clinician"), params={"heatmap": "false"},
                      files={"file": ("u", data)}, timeout=timeout)


def _until(predicate, what: str, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def test_pool_stays_bounded_after_timeouts(live, kermany_samples):
    gate = Concurrency()
    # without micro-batching the pool has one thread per inference worker (with it: see test_batching.py)
    srv, keys = live(PredictionHooks(input_gates=[gate]), request_timeout_s=0.5, inference_workers=2,
                     batch_max_size=1)
    app = srv.server.config.app
    data = kermany_samples[0][0].read_bytes()
    try:
        for _ in range(2):  # waves of requests that all time out while the first two jobs are still running
            with cf.ThreadPoolExecutor(6) as clients:
                statuses = [r.status_code for r in clients.map(lambda _: _post(srv, keys, data), range(6))]
            assert statuses == [504] * 6
            _until(lambda: gate.entered >= 2, "two jobs inside the gate")
        # The slots were never handed to new jobs while the timed-out ones kept running; queued jobs whose
        # requests timed out were cancelled, not run later.
        assert gate.entered == 2 and gate.peak == 2 and gate.now == 2
        assert app.state.inference_pool.running == 2
    finally:
        gate.release.set()
    _until(lambda: app.state.inference_pool.running == 0, "the held jobs to finish")
    # The two jobs whose clients got a 504 stopped at their next step: nothing stored, nothing audited (the
    # clients were told the request failed); nothing else ran.
    engine = app.state.service.engine
    report = audit.verify(engine)
    assert report.ok and report.rows == START_ROWS, report
    assert not list(app.state.service.artefact_dir.iterdir())
    assert _post(srv, keys, data).status_code == 201  # the pool is free again
    assert gate.peak == 2 and app.state.inference_pool.peak_running == 2
    assert audit.verify(engine).rows == START_ROWS + 1


def test_shutdown_waits_for_a_timed_out_job(live, kermany_samples):
    """The client got a 504, the job is still running when the server is told to stop: the lifespan drain
    waits for it to stop (abandoned: nothing stored) before the process would exit."""
    from radiolens.serve.store.db import make_engine

    gate = Concurrency()
    srv, keys = live(PredictionHooks(input_gates=[gate]), request_timeout_s=0.5)
    app = srv.server.config.app
    try:
        assert _post(srv, keys, kermany_samples[0][0].read_bytes()).status_code == 504
        _until(lambda: gate.entered == 1, "the job inside the gate")
        stopper = threading.Thread(target=srv.__exit__, args=(None, None, None))
        stopper.start()
        _until(lambda: app.state.inference_pool.closing, "the shutdown to reach the pool drain")
        assert stopper.is_alive() and app.state.inference_pool.running == 1  # waiting for the job, not exiting
    finally:
        gate.release.set()
    stopper.join(60)
    assert not stopper.is_alive() and not srv.thread.is_alive()
    engine = make_engine(app.state.service.db_url)  # the service closed its engine on shutdown
    try:
        report = audit.verify(engine)
    finally:
        engine.dispose()
    assert report.ok and report.rows == START_ROWS
    assert not list(app.state.service.artefact_dir.iterdir())


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # formatted: message AND any traceback


def test_unexpected_error_is_500_json_and_logs_no_phi(live, kermany_samples, caplog, capfd):
    planted = f"lookup failed for {PHI['PatientName']} ({PHI['PatientID']}) at {PHI['InstitutionName']}"

    def explode(ctx, result):
        raise RuntimeError(planted)

    caplog.set_level(logging.DEBUG)
    srv, keys = live(PredictionHooks(result_hooks=[explode]))
    collect = _Collect()
    # uvicorn's loggers do not propagate to the root (caplog): listen to them directly, after uvicorn's own
    # logging config was applied when the server was created.
    watched = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.access", "")]
    for lg in watched:
        lg.addHandler(collect)
    try:
        r = _post(srv, keys, kermany_samples[0][0].read_bytes())
        health = httpx.get(f"{srv.url}/healthz", timeout=10)
        srv.__exit__(None, None, None)  # stop the server so everything it logs is written
    finally:
        for lg in watched:
            lg.removeHandler(collect)
    from radiolens.serve.http.error_actions import ACTIONS

    assert r.status_code == 500 and r.json() == {"error": {"code": "internal_error", "message": "internal server error",
                                                           "action": ACTIONS["internal_error"]}}
    assert health.status_code == 200  # the server is still serving after the error
    out = capfd.readouterr()
    logs = "\n".join(collect.lines + [out.out, out.err] + [rec.getMessage() for rec in caplog.records])
    assert "unexpected RuntimeError on POST /v1/predictions" in logs  # the type and the route are logged
    needles = [planted] + [PHI[k] for k in ("PatientName", "PatientID", "InstitutionName")] + ["Zebulon"]
    leaks = [n for n in needles if n in logs or n in r.text]
    assert not leaks, leaks
    assert "Traceback" not in logs and "Exception in ASGI application" not in logs
    metrics = srv.server.config.app.state.service.metrics
    assert metrics.requests.labels("POST", "/v1/predictions", "500")._value.get() == 1.0


@pytest.mark.parametrize("method, path, status, code", [
    ("GET", "/v1/no-such-route", 404, "not_found"),
    ("GET", "/nothing/here", 404, "not_found"),
    ("GET", "/viewer/static/missing.js", 404, "not_found"),
    ("DELETE", "/v1/models", 405, "method_not_allowed"),
    ("PUT", "/healthz", 405, "method_not_allowed"),
    ("GET", "/v1/predictions/" + "0" * 32 + "/feedback", 405, "method_not_allowed"),
])
def test_unknown_route_and_wrong_method_are_json(client, method, path, status, code):
    r = client.request(method, path, headers=client.keys.h("clinician"))
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]
    if status == 405:
        assert r.headers["allow"]  # which methods the route does take
