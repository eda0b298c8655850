"""RateCounter in this process: exact GCRA (lb.core.gcra) on a monotonic clock.

No background sweep: a key whose TAT has passed holds no information (its bucket is full) and
is dropped when next seen; beyond `max_keys` the least recently used key is dropped, which can
only let a client through sooner, never block one wrongly.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from lb.core.gcra import RateDecision, gcra


class MemoryRateCounter:
    def __init__(
        self, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_keys = max_keys
        self._clock = clock
        self._tats: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tats)

    async def acquire(
        self, key: str, rate_per_second: float, burst: int, cost: int = 1
    ) -> RateDecision:
        return self.decide(key, rate_per_second, burst, cost)

    def decide(self, key: str, rate_per_second: float, burst: int, cost: int = 1) -> RateDecision:
        """`acquire` without a coroutine: for callers on the hot path (a local rate limit)."""
        now = self._clock()
        tat = self._tats.pop(key, None)
        new_tat, decision = gcra(tat, now, rate_per_second, burst, cost)
        if new_tat > now:  # else the bucket is full: nothing to remember
            self._tats[key] = new_tat
            if len(self._tats) > self.max_keys:
                self._tats.popitem(last=False)
        return decision
