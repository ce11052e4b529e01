"""The HTTP protocol the service runs under uvicorn: h11 plus a request-head timeout.

uvicorn times out idle keep-alive connections (``timeout_keep_alive``) but not a client that opens a
connection and sends its request head slowly, or never finishes it: 50 such sockets held 50 connections (and
their file descriptors) for as long as the clients liked. Here every connection must deliver a complete request
head within ``header_timeout_s`` of connecting (or of its previous response), else it is closed. The body is
bounded separately: by ``max_upload_bytes`` and by the per-request timeout (504).
"""

from __future__ import annotations

import logging
import os

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

#: Environment variable carrying ``ServeSettings.header_timeout_s`` to uvicorn worker processes.
HEADER_TIMEOUT_ENV = "RADIOLENS_HEADER_TIMEOUT_S"
DEFAULT_HEADER_TIMEOUT_S = 10.0

log = logging.getLogger("radiolens.serve")


class HeaderTimeoutH11Protocol(H11Protocol):
    #: None: ``RADIOLENS_HEADER_TIMEOUT_S`` or 10 s. (uvicorn instantiates the protocol itself, once per
    #: connection and in each worker process, so the value travels as a class attribute or the environment.)
    header_timeout_s: float | None = None

    @classmethod
    def timeout(cls) -> float:
        if cls.header_timeout_s is None:
            try:
                cls.header_timeout_s = float(os.environ.get(HEADER_TIMEOUT_ENV, DEFAULT_HEADER_TIMEOUT_S))
            except ValueError:
                cls.header_timeout_s = DEFAULT_HEADER_TIMEOUT_S
        return cls.header_timeout_s

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # a complete request head arrived
            self._disarm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_head_timer()  # the next request's head gets the same time (keep-alive)

    def connection_lost(self, exc) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.timeout(), self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.info("closed a connection that sent no complete request head within %.1f s", self.timeout())
            self.transport.close()
