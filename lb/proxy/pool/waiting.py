"""Waiting for a server slot (HAProxy's maxconn + queue), and slow start's timer: the shell.

Theory of operation. A server with `max_connections: N` takes at most N requests at once
(`ServerState.in_flight`, per worker process). When a request finds every server it could use
full, it waits in its pool's `WaitingRoom`, first in first out:

- `put` refuses at once when `max` are waiting already (503 queue_full);
- each waiter has its own timer; at `timeout` it leaves with 503 queue_timeout;
- when a request of the pool finishes (a slot frees), `wake` hands the slot to the oldest
  waiter, synchronously, so it can take the connection just released; while anyone waits, new
  requests queue behind them instead of jumping the line (`Exchange._connect`);
- a waiter whose client leaves is removed (`remove`), so it never holds a place.

A full server is treated like one already tried (it joins the balancer's `exclude`), so a
pool's backup servers take requests when every primary is down *or full*.

`SlowStartTimer` drives `lb.core.slow_start` for one pool: a server's DOWN -> UP transition
(PoolHealth's `on_up`) starts its ramp; a timer re-computes effective weights until all ramps
are done, and then stops.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

from lb.core.balancer import ServerState
from lb.core.slow_start import SlowStart
from lb.metrics import POOL_QUEUE_DEPTH

if TYPE_CHECKING:
    from lb.proxy.http.connection import UpstreamServer


class Waiter(Protocol):
    queued: asyncio.TimerHandle | None

    def dequeued(self) -> None: ...

    def queue_timeout(self) -> None: ...


def full_servers(servers: list[UpstreamServer]) -> set[ServerState]:
    """The servers that could take requests but are at their max_connections now."""
    return {
        s.state
        for s in servers
        if s.max_connections is not None
        and s.state.in_flight >= s.max_connections
        and s.state.healthy
        and not s.state.drained
    }


class WaitingRoom:
    """One pool's waiting requests, oldest first."""

    __slots__ = ("_depth", "max", "name", "timeout", "waiters")

    def __init__(self, name: str, max_waiting: int, timeout: float) -> None:
        self.name = name
        self.max = max_waiting
        self.timeout = timeout
        self.waiters: deque[Waiter] = deque()
        self._depth = POOL_QUEUE_DEPTH.labels(name)

    def put(self, waiter: Waiter) -> bool:
        """Wait for a slot; False when the queue is full (answer 503 queue_full)."""
        if len(self.waiters) >= self.max:
            return False
        self.waiters.append(waiter)
        waiter.queued = asyncio.get_running_loop().call_later(self.timeout, self._expire, waiter)
        self._depth.inc()
        return True

    def remove(self, waiter: Waiter) -> None:
        """`waiter` leaves without a slot (its client left)."""
        if waiter.queued is not None:
            waiter.queued.cancel()
            waiter.queued = None
        self._leave(waiter)

    def _leave(self, waiter: Waiter) -> bool:
        """Take `waiter` out of the line; False if it was not in it."""
        try:
            self.waiters.remove(waiter)
        except ValueError:
            return False
        self._depth.dec()
        return True

    def wake(self) -> None:
        """A slot freed: the oldest waiter tries to take it. Its timer keeps running until it
        has a server (it cancels it then), or it is back in line with `requeue`."""
        if self.waiters:
            waiter = self.waiters.popleft()
            self._depth.dec()
            waiter.dequeued()

    def requeue(self, waiter: Waiter) -> None:
        """A woken waiter found no slot after all (a server went down meanwhile, say): it is
        first in line again, with the time it had left."""
        self.waiters.appendleft(waiter)
        self._depth.inc()

    def _expire(self, waiter: Waiter) -> None:
        waiter.queued = None
        if self._leave(waiter):
            waiter.queue_timeout()

    def __len__(self) -> int:
        return len(self.waiters)

    def __repr__(self) -> str:
        return f"<WaitingRoom {self.name} waiting={len(self.waiters)}/{self.max}>"


class SlowStartTimer:
    """Ramps the effective weights of one pool's servers back from DOWN (lb.core.slow_start)."""

    __slots__ = ("_handle", "ramp", "step")

    def __init__(self, duration: float) -> None:
        self.ramp = SlowStart(duration)
        # Fine enough that the ramp looks linear, coarse enough to cost nothing.
        self.step = min(1.0, max(0.05, duration / 50))
        self._handle: asyncio.TimerHandle | None = None

    def server_up(self, state: ServerState) -> None:
        self.ramp.begin(state, time.monotonic())
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self.step, self._update)

    def _update(self) -> None:
        self._handle = None
        if self.ramp.update(time.monotonic()):
            self._handle = asyncio.get_running_loop().call_later(self.step, self._update)

    def set_duration(self, duration: float) -> None:
        self.ramp.duration = duration
        self.step = min(1.0, max(0.05, duration / 50))

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        for state in self.ramp.since:
            state.effective = float(state.weight)
        self.ramp.since.clear()

    def __repr__(self) -> str:
        return f"<SlowStartTimer {self.ramp!r}>"
