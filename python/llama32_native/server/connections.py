"""Bounded connections under uvicorn: a deadline for a request's line and headers, a cap on open connections,
and rate-limited error logs.

Contract: a connection that has not sent a complete request head within `header_timeout_s` of opening (or of
its previous response) is closed; past `max_connections` open connections a new one is closed at once (its
file descriptor is freed, so accept() never starts failing in a loop); no client can make the server write
more than a few log records per second about its sockets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["bounded_protocol", "RateLimitFilter", "install_log_limits"]


def bounded_protocol(header_timeout_s: float, max_connections: int) -> type:
    """An h11 protocol class for uvicorn.Config(http=...) with these two bounds."""

    class BoundedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._head_timer: asyncio.TimerHandle | None = None
            if len(self.connections) > max_connections:
                transport.close()  # over the cap: free the descriptor now, answer nothing
                return
            self._arm_head_timer()

        def _arm_head_timer(self) -> None:
            self._disarm_head_timer()
            self._head_timer = self.loop.call_later(header_timeout_s, self._head_timeout)

        def _disarm_head_timer(self) -> None:
            timer = getattr(self, "_head_timer", None)
            if timer is not None:
                timer.cancel()
                self._head_timer = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self.cycle is None or self.cycle.response_complete:  # no request under way: idle or trickling
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm_head_timer()  # a whole request head arrived

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_head_timer()  # the next request on this connection gets the same deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_timer()
            super().connection_lost(exc)

    return BoundedH11Protocol


class RateLimitFilter(logging.Filter):
    """Lets at most `per_second` records through per (logger, message template) each second; counts the rest."""

    def __init__(self, per_second: int = 5):
        super().__init__()
        self.per_second = per_second
        self._window: dict[tuple[str, str], tuple[float, int]] = {}
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        start, n = self._window.get(key, (now, 0))
        if now - start >= 1.0:
            start, n = now, 0
        self._window[key] = (start, n + 1)
        if len(self._window) > 1024:  # bounded memory: forget old templates
            self._window = {key: (start, n + 1)}
        if n < self.per_second:
            return True
        self.dropped += 1
        return False


_FILTER = RateLimitFilter()


def install_log_limits(*names: Any) -> RateLimitFilter:
    """Attach the shared rate limit to asyncio's and uvicorn's loggers (idempotent)."""
    for name in names or ("asyncio", "uvicorn.error", "uvicorn.access", "llama32_native.server"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    return _FILTER
