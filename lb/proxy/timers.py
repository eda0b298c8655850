"""Coarse deadlines for many connections with one timer.

A timer per request (call_later + cancel) costs more than the rest of a small proxied request's
bookkeeping; instead each connection stores `deadline` (loop time, or 0.0 for none) and one
ticker per worker sweeps them every `TICK` seconds. Timeouts therefore fire up to `TICK` late,
which is fine for values in the hundreds of milliseconds and up.

How late each tick runs is the worker's event-loop lag (`lb_event_loop_lag_seconds`): a
pause there is one every connection of the worker waits through. A pause of a second or more
is also logged, at most once a minute.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Final, Protocol

from lb.metrics import EVENT_LOOP_LAG

TICK = 0.05
STALL_WARNING: Final = 1.0  # seconds of lag that are logged
_WARN_EVERY: Final = 60.0

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
        self._due = 0.0  # when the next tick should run
        self._warned = -_WARN_EVERY  # loop time of the last stall warning

    def start(self) -> None:
        self._due = self.now() + TICK
        self._handle = self.loop.call_later(TICK, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        due = self._due
        # Rescheduled first, and each expiry on its own: one handler's bug must not stop
        # every deadline of the worker (nothing would ever time out again).
        now = self.now()
        self._due = now + TICK
        self._handle = self.loop.call_later(TICK, self._tick)
        self._observe_lag(now, due)
        expired = [c for c in self.watched if 0.0 < c.deadline <= now]
        for conn in expired:
            conn.deadline = 0.0
            try:
                conn.on_deadline()
            except Exception:
                log.exception("deadline handler of %r failed", conn)

    def _observe_lag(self, now: float, due: float) -> None:
        lag = max(now - due, 0.0)
        EVENT_LOOP_LAG.observe(lag)
        if lag >= STALL_WARNING and now - self._warned >= _WARN_EVERY:
            self._warned = now
            log.warning(
                "event loop of worker %d paused %.0f ms (every connection waited); "
                "lb_event_loop_lag_seconds counts each pause",
                os.getpid(),
                lag * 1000,
            )
