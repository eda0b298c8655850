"""Coarse deadlines for many connections with one timer.

A timer per request (call_later + cancel) costs more than the rest of a small proxied request's
bookkeeping; instead each connection stores `deadline` (loop time, or 0.0 for none) and one
ticker per worker sweeps them every `TICK` seconds. Timeouts therefore fire up to `TICK` late,
which is fine for values in the hundreds of milliseconds and up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

TICK = 0.05

log = logging.getLogger("lb.timers")


class HasDeadline(Protocol):
    deadline: float

    def on_deadline(self) -> None: ...


class Ticker:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # Loop time, as deadlines are kept: the bound method, looked up once.
        self.now: Callable[[], float] = loop.time
        self.watched: set[HasDeadline] = set()
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._handle = self.loop.call_later(TICK, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        # Rescheduled first, and each expiry on its own: one handler's bug must not stop
        # every deadline of the worker (nothing would ever time out again).
        self._handle = self.loop.call_later(TICK, self._tick)
        now = self.now()
        expired = [c for c in self.watched if 0.0 < c.deadline <= now]
        for conn in expired:
            conn.deadline = 0.0
            try:
                conn.on_deadline()
            except Exception:
                log.exception("deadline handler of %r failed", conn)
