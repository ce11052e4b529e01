"""Dynamic micro-batching in the service: concurrent requests share one forward pass, each still gets its own
answer (a bad upload its own 4xx), the same numbers as without batching, and one audited row per prediction."""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time

import httpx
import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from tests.serve.conftest import START_ROWS, decode_png

from radiolens.serve.runtime.batching import MicroBatcher
from radiolens.serve.store import audit


# ---------------------------------------------------------------------------------------------- the batcher
def test_each_submitter_gets_its_own_result_or_error():
    seen: list[list[int]] = []

    def run(items, flags):
        seen.append(list(items))
        return [ValueError(f"bad {i}") if i < 0 else (i * 10, f) for i, f in zip(items, flags, strict=True)]

    sizes: list[int] = []
    b = MicroBatcher(run, max_batch=4, max_wait_ms=2000, observe=sizes.append)
    try:
        with cf.ThreadPoolExecutor(4) as pool:
            futs = [pool.submit(b.submit, i, i % 2 == 0) for i in (1, -2, 3, 4)]
            got = [f.exception() or f.result() for f in futs]
    finally:
        b.close()
    assert got[0] == (10, False) and got[2] == (30, False) and got[3] == (40, True)
    assert isinstance(got[1], ValueError) and str(got[1]) == "bad -2"
    # a full batch goes at once (not after the 2 s wait), as one call of the batch function
    assert sizes == [4] and sorted(seen[0]) == [-2, 1, 3, 4] and b.largest == 4


def test_a_batch_function_that_raises_fails_only_that_batch():
    calls = {"n": 0}

    def run(items, _flags):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return list(items)

    b = MicroBatcher(run, max_batch=8, max_wait_ms=0)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            b.submit("a")
        assert b.submit("b") == "b"  # the batching thread is still alive
    finally:
        b.close()
    with pytest.raises(RuntimeError, match="closed"):
        b.submit("c")


def test_a_lone_request_waits_at_most_the_bound_and_neighbours_share_a_batch():
    compute_s = 0.05

    def run(items, _flags):
        time.sleep(compute_s)
        return list(items)

    wait_ms = 300
    b = MicroBatcher(run, max_batch=8, max_wait_ms=wait_ms)
    try:
        t0 = time.monotonic()
        assert b.submit("alone") == "alone"
        alone_s = time.monotonic() - t0
        # requests arriving within the wait share the lone one's batch
        with cf.ThreadPoolExecutor(3) as pool:
            futs = [pool.submit(b.submit, i) for i in range(3)]
            assert [f.result() for f in futs] == [0, 1, 2]
    finally:
        b.close()
    # held for the wait bound plus the compute, not longer (loose: a busy machine may add scheduling delays)
    assert alone_s < wait_ms / 1000 + compute_s + 2.0, alone_s
    assert b.batches == 2 and b.largest == 3


# ---------------------------------------------------------------------------------------------- the service
def _uploads(kermany_samples, siim_dicom) -> list[tuple[bytes, str]]:
    return [(p.read_bytes(), "image/jpeg") for p, _ in kermany_samples[:7]] + [(siim_dicom.read_bytes(),
                                                                                "application/dicom")]


def _post(url: str, keys, data: bytes, ctype: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/predictions", headers=keys.h("clinician"), files={"file": ("upload", data, ctype)},
                      timeout=120)


def _concurrent(url: str, keys, uploads, start: threading.Barrier | None = None) -> list[httpx.Response]:
    def one(u):
        if start is not None:
            start.wait(30)
        return _post(url, keys, *u)

    with cf.ThreadPoolExecutor(len(uploads)) as pool:
        return list(pool.map(one, uploads))


def test_batched_service_answers_as_unbatched_and_audits_each_prediction(live, kermany_samples, siim_dicom):
    uploads = _uploads(kermany_samples, siim_dicom)
    bad = (b"\xff\xd8\xff\xe0 not really a JPEG", "image/jpeg")
    # a long wait so that the concurrent requests surely meet in batches on a busy machine
    srv, keys = live(batch_max_size=8, batch_max_wait_ms=500, inference_workers=1, max_pending_uploads=16)
    service = srv.server.config.app.state.service
    assert srv.server.config.app.state.inference_pool.workers == 8
    got = _concurrent(srv.url, keys, uploads + [bad], threading.Barrier(len(uploads) + 1))
    assert [r.status_code for r in got[:-1]] == [201] * len(uploads), [r.text for r in got]
    # the bad one alone, with its own 4xx (an unreadable upload: 415)
    assert got[-1].status_code == 415 and got[-1].json()["error"]["code"]
    assert service.batcher.largest >= 2  # neighbours shared forward passes
    report = audit.verify(service.engine)
    assert report.ok and report.rows == START_ROWS + len(uploads), report  # one row per prediction
    with Session(service.engine) as s:
        ids = list(s.scalars(select(audit.AuditEntry.prediction_id).where(audit.AuditEntry.event == "prediction")))
    assert sorted(ids) == sorted(r.json()["id"] for r in got[:-1])
    heat = [decode_png(httpx.get(srv.url + r.json()["heatmap_url"], headers=keys.h("clinician"),
                                 timeout=60).content) for r in got[:-1]]  # (each read is audited too)
    metrics = httpx.get(f"{srv.url}/metrics", headers=keys.h("auditor"), timeout=60).text
    count = [ln for ln in metrics.splitlines() if ln.startswith("radiolens_inference_batch_size_count")]
    total = [ln for ln in metrics.splitlines() if ln.startswith("radiolens_inference_batch_size_sum")]
    assert float(total[0].split()[-1]) == len(uploads)  # every prepared image in exactly one batch
    assert 1 <= float(count[0].split()[-1]) < len(uploads)

    ref_srv, ref_keys = live(batch_max_size=1, inference_workers=1)  # batching off: one forward pass each
    assert ref_srv.server.config.app.state.service.batcher is None
    ref = [_post(ref_srv.url, ref_keys, *u) for u in uploads]
    for b, a, b_png in zip(got, ref, heat, strict=False):
        bj, aj = b.json(), a.json()
        assert a.status_code == 201 and bj["status"] == aj["status"]
        np.testing.assert_allclose([p["probability"] for p in bj["probabilities"]],
                                   [p["probability"] for p in aj["probabilities"]], atol=1e-6)
        assert bj["decision"] == aj["decision"] and bj["review"]["flag"] == aj["review"]["flag"]
        assert (bj["heatmap_url"] is None) == (aj["heatmap_url"] is None)
        if aj["heatmap_url"] is not None:
            a_png = decode_png(httpx.get(ref_srv.url + aj["heatmap_url"], headers=ref_keys.h("clinician"),
                                         timeout=60).content)
            assert a_png.shape == b_png.shape
            # the overlays are 8-bit colour maps of heatmaps equal to float rounding: at most a step apart
            assert np.abs(a_png.astype(int) - b_png.astype(int)).max() <= 2
