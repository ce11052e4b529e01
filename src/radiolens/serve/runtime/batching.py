"""Dynamic micro-batching: concurrent requests' prepared images run as ONE forward pass of the pipeline.

Each request's pool thread de-identifies and prepares its image as before, then hands the prepared input to
:meth:`MicroBatcher.submit` and blocks until its own result is back. ``workers`` batching threads take the
queued inputs in arrival order, up to ``max_batch`` at a time, and run them through the pipeline's batched
entry point (:meth:`radiolens.pipeline.Predictor.predict_batch`: one forward pass, heatmaps from its feature
maps). The oldest queued input waits at most ``max_wait_ms`` for neighbours (TorchServe's ``maxBatchDelay``,
Triton's ``max_queue_delay_microseconds``); inputs that queued while the model was busy go at once. Each
request gets its own record or its own error: one image that fails does not fail its neighbours.

Written here rather than taken from a library because none fits a synchronous pipeline called from a bounded
thread pool inside a FastAPI app: Ray Serve's ``@serve.batch``, BentoML's adaptive batching, LitServe and
Mosec are serving frameworks that own the process, the HTTP layer and the workers (the audit-before-response
flow, upload admission and pool bounds would have to move into them); ``async-batcher`` and mixedbread's
``batched`` (both 0.x) batch asyncio coroutines or fail a whole batch on one exception, and would not report
the batch size to our Prometheus registry. What is needed is a queue, a condition and a deadline.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("radiolens.serve")

#: ``run_batch(items, heatmap_flags) -> one result per item``; an item's result may be an exception instance,
#: which its submitter raises.
BatchFn = Callable[[list[Any], list[bool]], Sequence[Any]]


@dataclass
class _Job:
    item: Any
    heatmap: bool
    enqueued: float = field(default_factory=time.monotonic)
    future: cf.Future = field(default_factory=cf.Future)


class MicroBatcher:
    """Queue of prepared inputs and the threads that run them in batches (see the module docstring).

    ``observe(batch_size)`` is called once per batch (the service's batch-size histogram).
    """

    def __init__(self, run_batch: BatchFn, max_batch: int, max_wait_ms: float, workers: int = 1,
                 observe: Callable[[int], None] | None = None):
        if max_batch < 1 or max_wait_ms < 0 or workers < 1:
            raise ValueError("max_batch and workers must be >= 1, max_wait_ms >= 0")
        self.run_batch = run_batch
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self.observe = observe
        self._queue: collections.deque[_Job] = collections.deque()
        self._cv = threading.Condition()
        self._closed = False
        self.batches = 0  # batches run since start (diagnostics and tests)
        self.largest = 0  # the largest batch run since start
        self._threads = [threading.Thread(target=self._loop, name=f"radiolens-batcher-{i}", daemon=True)
                         for i in range(int(workers))]
        for t in self._threads:
            t.start()

    def submit(self, item: Any, heatmap: bool = False) -> Any:
        """Queue ``item`` and block until its result is computed (in some batch); its error is raised here."""
        job = _Job(item, bool(heatmap))
        with self._cv:
            if self._closed:
                raise RuntimeError("the micro-batcher is closed")
            self._queue.append(job)
            self._cv.notify_all()
        out = job.future.result()
        if isinstance(out, BaseException):
            raise out
        return out

    def _take(self) -> list[_Job] | None:
        """The next batch: wait for a first job, then until ``max_batch`` are queued or the oldest has waited
        ``max_wait_ms``; None when closed and empty."""
        with self._cv:
            while not self._queue:
                if self._closed:
                    return None
                self._cv.wait()
            deadline = self._queue[0].enqueued + self.max_wait_s
            while len(self._queue) < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0 or not self._queue:
                    break
                self._cv.wait(left)
            n = min(self.max_batch, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

    def _loop(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            if not jobs:  # another batching thread took them
                continue
            self.batches += 1
            self.largest = max(self.largest, len(jobs))
            if self.observe is not None:
                self.observe(len(jobs))
            try:
                outs = list(self.run_batch([j.item for j in jobs], [j.heatmap for j in jobs]))
                if len(outs) != len(jobs):
                    raise RuntimeError(f"the batch function gave {len(outs)} results for {len(jobs)} inputs")
            except BaseException as exc:  # noqa: BLE001 - handed to every submitter, who raises it
                log.error("a batch of %d failed as a whole (%s)", len(jobs), type(exc).__name__)
                outs = [exc] * len(jobs)
            for job, out in zip(jobs, outs, strict=True):
                job.future.set_result(out)

    def close(self, timeout_s: float = 30.0) -> None:
        """Run what is queued, then stop the batching threads (new submissions are refused)."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        for t in self._threads:
            t.join(timeout_s)
