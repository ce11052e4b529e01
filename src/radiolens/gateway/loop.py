"""The background loop the processor and the sender share: call ``run_once`` until stopped; when it reports no
work, wait until woken (an instance queued, results posted) or ``idle_s`` passes."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("radiolens.gateway")


class Loop:
    thread_name = "radiolens-dicom-loop"
    idle_s = 1.0

    def __init__(self) -> None:
        self.wake = threading.Event()  # set by whoever queued work, so it is taken at once
        self.idle = threading.Event()  # set while run_once finds nothing to do
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> bool:  # pragma: no cover - each loop defines its step
        """Do one unit of work; False when there was none."""
        raise NotImplementedError

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception as exc:  # never take the thread down; class name only (messages may quote data)
                log.error("%s: %s", self.thread_name, type(exc).__name__)
                busy = False
            if busy:
                self.idle.clear()
            else:
                self.idle.set()
                self.wake.wait(self.idle_s)
                self.wake.clear()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 120.0) -> None:
        """Stop after the unit of work in progress (waits up to ``timeout_s``)."""
        self._stop.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
