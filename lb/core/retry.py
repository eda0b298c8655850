"""Retries, sans-IO: when a failed request may go to another server, and how many may.

Theory of operation. A route's `RetryPolicy` says what may be retried (a connect failure; a
5xx status for idempotent requests) and how many extra tries one request gets (`attempts`).
The shell (lb.proxy.http.exchange) adds the conditions only it can see: nothing reached the client
yet, the request body is still held for replay, an untried server is left.

A pool's `RetryBudget` keeps retries from multiplying an outage (the retry storm: every client
request becoming 1 + attempts server requests just when the servers are failing). Over a
sliding window of `WINDOW` seconds, in `BUCKETS` buckets, it counts the pool's requests and
retries; a retry is allowed while the window's retries stay under
`max(ratio x requests, MIN_PER_SECOND x WINDOW)`. The floor lets a quiet pool retry at all
(Finagle's RetryBudget and Envoy's retry_budget make the same two-part rule). Invariant:
within any window, granted retries <= that bound, computed on the window at grant time.

Time is a value passed in (`now`, seconds on one monotonic clock); nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from lb.config.base import RETRY_ON_CONNECT_FAILURE
from lb.config.routes import Retries

__all__ = [
    "BUCKETS",
    "DEFAULT_POLICY",
    "MIN_PER_SECOND",
    "WINDOW",
    "RetryBudget",
    "RetryPolicy",
]

WINDOW = 10.0  # seconds of history the budget looks at
BUCKETS = 10
MIN_PER_SECOND = 3.0  # retries a pool may always make, whatever its traffic


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A route's `retries`, with the defaults filled in."""

    attempts: int = 1  # extra tries after the first
    connect_failure: bool = True
    statuses: frozenset[int] = frozenset()
    budget: float = 0.2  # share of the pool's recent requests that may be retries

    @classmethod
    def from_config(cls, retries: Retries | None) -> RetryPolicy:
        if retries is None:
            return cls()
        return cls(
            attempts=retries.attempts,
            connect_failure=RETRY_ON_CONNECT_FAILURE in retries.on,
            statuses=frozenset(s for s in retries.on if isinstance(s, int)),
            budget=retries.budget,
        )

    def allows(self, tried: int) -> bool:
        """`tried` servers failed this request: may it go to one more?"""
        return 0 < tried <= self.attempts


DEFAULT_POLICY = RetryPolicy()


class RetryBudget:
    """One pool's retry budget over a sliding window of recent requests."""

    __slots__ = ("_bucket_end", "_i", "_requests", "_retries", "floor", "width")

    def __init__(self, window: float = WINDOW, buckets: int = BUCKETS) -> None:
        self.width = window / buckets
        self.floor = MIN_PER_SECOND * window
        self._requests = [0] * buckets
        self._retries = [0] * buckets
        self._i = 0
        self._bucket_end = 0.0  # the current bucket ends here (0: not started)

    def record(self, now: float) -> None:
        """One request came to the pool (called per request: keep it small)."""
        if now >= self._bucket_end:
            self._roll(now)
        self._requests[self._i] += 1

    def acquire(self, now: float, ratio: float) -> bool:
        """May one more retry go out now? Counts it when it may."""
        if now >= self._bucket_end:
            self._roll(now)
        allowed = max(ratio * sum(self._requests), self.floor)
        if sum(self._retries) + 1 > allowed:
            return False
        self._retries[self._i] += 1
        return True

    def _roll(self, now: float) -> None:
        """Advance to the bucket holding `now`, emptying the buckets passed over."""
        n = len(self._requests)
        if self._bucket_end == 0.0 or now - self._bucket_end >= self.width * n:
            steps = n  # first use, or a whole window of silence: start afresh
            self._bucket_end = now + self.width
        else:
            steps = int((now - self._bucket_end) // self.width) + 1
            self._bucket_end += steps * self.width
        for _ in range(min(steps, n)):
            self._i = (self._i + 1) % n
            self._requests[self._i] = 0
            self._retries[self._i] = 0

    @property
    def requests(self) -> int:
        return sum(self._requests)

    @property
    def retries(self) -> int:
        return sum(self._retries)

    def __repr__(self) -> str:
        return f"<RetryBudget requests={self.requests} retries={self.retries}>"
