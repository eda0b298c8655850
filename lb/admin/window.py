"""Recent traffic for the status document, from counters that only grow: req/s over the last
few seconds and latency quantiles from histogram buckets. Pure: time and counts are given.

The admin listener keeps one `CounterWindow`; each status request adds a snapshot of the
counters (at most one per `min_gap` seconds, kept for `span` seconds) and gets the change
since the oldest snapshot kept, so req/s and p99 describe the last ~10 s, not the whole run.
Nothing samples in the background: the first look after a quiet spell has no window yet.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

Key = tuple[str, ...]


@dataclass(frozen=True)
class Delta:
    seconds: float  # between the snapshot the change is measured from and now
    counts: dict[Key, float]  # key -> growth in that time (every key of the newest snapshot)


class CounterWindow:
    def __init__(self, span: float = 10.0, min_gap: float = 1.0, min_age: float = 0.5) -> None:
        self.span = span  # snapshots older than this are dropped
        self.min_gap = min_gap  # a snapshot younger than this means the new one is not kept
        self.min_age = min_age  # a base younger than this gives no rate (too noisy)
        self._snapshots: deque[tuple[float, dict[Key, float]]] = deque()

    def observe(self, now: float, counts: Mapping[Key, float]) -> Delta | None:
        """Record `counts` at `now`; the growth since the oldest snapshot of the last `span`
        seconds, or None when there is none old enough."""
        while self._snapshots and now - self._snapshots[0][0] > self.span:
            self._snapshots.popleft()
        base = self._snapshots[0] if self._snapshots else None
        if not self._snapshots or now - self._snapshots[-1][0] >= self.min_gap:
            self._snapshots.append((now, dict(counts)))
        if base is None or now - base[0] < self.min_age:
            return None
        then, old = base
        growth = {}
        for key, value in counts.items():
            before = old.get(key, 0.0)
            # A counter lower than before was reset (not under lb run, where a dead worker's
            # counters stay): count from zero, as Prometheus' rate() does.
            growth[key] = value - before if value >= before else value
        return Delta(now - then, growth)


def quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The q-quantile (0..1) of a Prometheus histogram from its cumulative `(le, count)`
    buckets (the last `le` is +Inf), as `histogram_quantile()` estimates it: linear inside the
    bucket where the rank falls, starting from 0 for the first bucket; a rank in the +Inf
    bucket answers the highest finite bound. None with no observations."""
    ordered = sorted(buckets)
    if not ordered or not math.isinf(ordered[-1][0]):
        return None
    total = ordered[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le, count in ordered:
        if count >= rank and count > below:
            if math.isinf(le):
                return lower
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower
