"""Upload bounds over a real socket: uploads in progress are capped (503 + Retry-After before the body is read),
connections that never finish their request head are closed, and DICOM/PNG uploads padded beyond their image
are refused. (Timed-out work is abandoned unstored: tests/serve/test_robustness.py.)"""

from __future__ import annotations

import concurrent.futures as cf
import io
import socket
import threading
import time

import httpx
import pydicom
import pytest
from tests.serve.conftest import START_ROWS
from tests.serve.test_robustness import Concurrency, _post, _until
from typer.testing import CliRunner

from radiolens.serve.http.middleware import UploadAdmission
from radiolens.serve.http.server import HeaderTimeoutH11Protocol
from radiolens.serve.runtime.hooks import PredictionHooks
from radiolens.serve.store import audit


def _admission(app) -> UploadAdmission:
    layer = app.middleware_stack
    while layer is not None and not isinstance(layer, UploadAdmission):
        layer = getattr(layer, "app", None)
    assert layer is not None, "UploadAdmission is not in the middleware stack"
    return layer


def test_uploads_beyond_the_bound_get_503_before_their_body_is_read(live, kermany_samples):
    gate = Concurrency()
    srv, keys = live(PredictionHooks(input_gates=[gate]), inference_workers=1, batch_max_size=1, max_pending_uploads=2,
                     retry_after_s=7)
    app = srv.server.config.app
    data = kermany_samples[0][0].read_bytes()
    with cf.ThreadPoolExecutor(2) as clients:
        try:
            held = [clients.submit(_post, srv, keys, data) for _ in range(2)]  # one predicting, one queued
            _until(lambda: gate.entered == 1 and _admission(app).pending == 2, "two uploads in progress")
            t0 = time.monotonic()
            big = data + bytes(8 * 1024 * 1024)  # its body is never waited for
            extra = [_post(srv, keys, big, timeout=20) for _ in range(3)]
            assert all(r.status_code == 503 for r in extra), [r.status_code for r in extra]
            assert all(r.headers["retry-after"] == "7" and r.json()["error"]["code"] == "overloaded" for r in extra)
            assert time.monotonic() - t0 < 15
        finally:
            gate.release.set()
        assert [f.result().status_code for f in held] == [201, 201]
    assert _post(srv, keys, data).status_code == 201  # room again
    adm = _admission(app)
    # the slot is released when the app's call returns, which can be just after the client has the response
    _until(lambda: adm.pending == 0, "the last upload's slot released")
    assert adm.peak == 2 and adm.refused == 3 and adm.pending == 0
    assert audit.verify(app.state.service.engine).rows == START_ROWS + 3  # the refused ones left no trace


def _closed_within(sock: socket.socket, limit_s: float) -> float | None:
    """Seconds until the server closed ``sock`` (None: still open after ``limit_s``)."""
    t0 = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - t0 < limit_s:
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - t0
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - t0
    return None


def test_connections_that_never_finish_their_request_head_are_closed(live, monkeypatch):
    monkeypatch.setattr(HeaderTimeoutH11Protocol, "header_timeout_s", 1.0)
    srv, _ = live()
    head = b"POST /v1/predictions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data\r\n"
    stalled = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(20)]
    for s in stalled:
        s.sendall(head[:30])  # part of a head, then nothing
    dribblers = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(10)]
    stop = threading.Event()

    def dribble() -> None:  # one byte every 0.2 s: no single read ever waits long
        for i in range(len(head) * 4):
            if stop.is_set():
                return
            for s in dribblers:
                try:
                    s.send(head[i % len(head):i % len(head) + 1])
                except OSError:
                    pass
            time.sleep(0.2)

    feeder = threading.Thread(target=dribble, daemon=True)
    feeder.start()
    keepalive = socket.create_connection(("127.0.0.1", srv.port))
    try:
        keepalive.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # a complete first request ...
        assert b"200 OK" in keepalive.recv(4096)
        keepalive.sendall(b"GET /healthz HTTP/1.1\r\n")  # ... then a second one that stalls
        assert httpx.get(f"{srv.url}/healthz", timeout=10).status_code == 200  # others are served meanwhile
        closed = [_closed_within(s, 6.0) for s in stalled + dribblers + [keepalive]]
    finally:
        stop.set()
        for s in stalled + dribblers + [keepalive]:
            s.close()
    assert all(t is not None for t in closed), closed  # every one was closed by the server ...
    assert max(closed) < 5.0, closed  # ... about header_timeout_s after its (last) head began
    assert httpx.get(f"{srv.url}/healthz", timeout=10).status_code == 200


def _padded_uploads(dicom: bytes, png: bytes) -> dict[str, bytes]:
    ds = pydicom.dcmread(io.BytesIO(dicom))
    ds.add_new(0xFFFCFFFC, "OB", bytes(20 * 1024 * 1024))  # Data Set Trailing Padding, 20 MB
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return {"dicom + 20 MB of zeros": dicom + bytes(20 * 1024 * 1024),
            "dicom + appended garbage": dicom + bytes(range(256)) * 64,
            "dicom + 20 MB trailing padding element": buf.getvalue(),
            "png + 20 MB appended": png + bytes(20 * 1024 * 1024)}


REFUSALS = ("unreadable_image", "bad_dimensions", "not_dicom", "truncated_file")


def test_uploads_padded_beyond_their_image_are_refused(client, phi_dicom_bytes, kermany_samples):
    png = next(p for p, _ in kermany_samples).read_bytes()
    for what, data in _padded_uploads(phi_dicom_bytes, png).items():
        r = client.post("/v1/predictions", headers=client.keys.h("clinician"), params={"heatmap": "false"},
                        files={"file": ("u", data)})
        refused = r.status_code in (415, 422) and r.json()["error"]["code"] in REFUSALS
        assert refused, (what, r.status_code, r.text[:300])
    r = client.post("/v1/predictions", headers=client.keys.h("clinician"), params={"heatmap": "false"},
                    files={"file": ("u", phi_dicom_bytes)})
    assert r.status_code == 201, r.text  # the same file unpadded is fine
    assert audit.verify(client.app_.state.service.engine).rows == START_ROWS + 1


@pytest.mark.parametrize("option, value", [("--max-pending-uploads", "0"), ("--header-timeout", "-1"),
                                           ("--inference-workers", "0")])
def test_serve_option_out_of_range_is_one_line(tmp_path, option, value):
    from radiolens.cli import app as cli_app

    r = CliRunner().invoke(cli_app, ["serve", "--model", str(tmp_path / "m.pt"), "--state-dir",
                                     str(tmp_path / "s"), option, value])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), (r.output, r.exception)
    assert r.output.strip().startswith(f"error: {option}") and len(r.output.strip().splitlines()) == 1, r.output
