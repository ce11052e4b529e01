"""The bounded inference pool: at most ``workers`` predictions compute at once, whatever the clients do.

``anyio.to_thread.run_sync(..., abandon_on_cancel=True)`` with a CapacityLimiter frees the slot when the
request times out although the thread keeps running, so after a few 504s more than ``workers`` inferences
ran at once (and memory/CPU were no longer bounded). Here the threads ARE the slots: a
``ThreadPoolExecutor(max_workers=workers)`` owned by the app. A request that times out while its job is
still queued cancels the job (it never runs, nothing is stored); a job already running keeps its thread
until its current step ends, then stops without storing anything (the handler sets the job's ``abandon``
event, ``Service.predict`` checks it between steps).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
import time
from collections.abc import Callable
from typing import Any


class InferencePool:
    def __init__(self, workers: int):
        self.workers = workers
        self._executor = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="radiolens-inference")
        self._lock = threading.Lock()
        self._pending: set[cf.Future] = set()
        self.running = 0  # jobs executing now (never above ``workers``)
        self.peak_running = 0  # high-water mark since start, for tests and diagnostics
        self.closing = False  # set by ``shutdown``: no new jobs

    def _run(self, fn: Callable[..., Any], args: tuple) -> Any:
        with self._lock:
            self.running += 1
            self.peak_running = max(self.peak_running, self.running)
        try:
            return fn(*args)
        finally:
            with self._lock:
                self.running -= 1

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on a pool thread and await it; cancelling the await cancels a job not yet started."""
        fut = self._executor.submit(self._run, fn, args)
        with self._lock:
            self._pending.add(fut)
        fut.add_done_callback(self._forget)
        return await asyncio.wrap_future(fut)

    def _forget(self, fut: cf.Future) -> None:
        with self._lock:
            self._pending.discard(fut)

    def shutdown(self, timeout_s: float = 120.0) -> bool:
        """Refuse new jobs, let queued and running ones finish (they store and audit); False if some are still
        running after ``timeout_s``."""
        self.closing = True
        self._executor.shutdown(wait=False, cancel_futures=False)
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                pending = list(self._pending)
            if not pending:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            cf.wait(pending, timeout=left)
