"""GCRA (the generic cell rate algorithm), sans-IO: one rate-limit decision from one number.

Theory of operation. A key's whole state is its TAT, the "theoretical arrival time": the moment
its bucket would be full again if nothing else arrived. Each request of `cost` pushes the TAT
`cost x T` later (T = 1 / rate, the emission interval); a request is allowed while the pushed
TAT stays within `burst x T` of now. So a fresh key lets `burst` requests through at once, then
one every T; an idle key is full again once now reaches its TAT, and its state can be dropped
(a store expires it then). A denied request leaves the TAT unchanged.

Invariant: over any interval of length d, allowed cost <= burst + d x rate.

The Redis store runs the same arithmetic in Lua (lb.stores.redis_rates) on the server's clock;
the in-process store calls `gcra` with a monotonic clock. Time is a value passed in, seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["RateDecision", "gcra"]


@dataclass(frozen=True, slots=True)
class RateDecision:
    """What to tell the client: the IETF RateLimit fields and Retry-After come from these."""

    allowed: bool
    remaining: int  # requests of cost 1 that would still pass right now
    retry_after_seconds: float  # 0 when allowed; else when this same request would pass
    reset_seconds: float  # until the bucket is full again (burst requests available)


def gcra(
    tat: float | None, now: float, rate_per_second: float, burst: int, cost: int = 1
) -> tuple[float, RateDecision]:
    """(the new TAT to store, the decision). `tat` None: a key never seen (or expired).

    `cost` 0 asks without taking. A `cost` above `burst` can never pass: it is denied with
    `retry_after_seconds` infinite, so a caller never tells a client to come back in vain.
    """
    if rate_per_second <= 0 or burst < 1 or cost < 0:
        raise ValueError("rate_per_second must be > 0, burst >= 1, cost >= 0")
    interval = 1.0 / rate_per_second
    limit = burst * interval  # how far ahead of now the TAT may run
    base = now if tat is None or tat < now else tat
    new_tat = base + cost * interval
    if cost > burst:
        return base, RateDecision(
            False, _remaining(base, now, limit, interval), math.inf, base - now
        )
    if new_tat - now <= limit + 1e-9:  # tolerance: float sums of intervals land just above
        return new_tat, RateDecision(
            True, _remaining(new_tat, now, limit, interval), 0.0, new_tat - now
        )
    return base, RateDecision(
        False,
        _remaining(base, now, limit, interval),
        new_tat - now - limit,
        base - now,
    )


def _remaining(tat: float, now: float, limit: float, interval: float) -> int:
    return max(0, math.floor((limit - (tat - now)) / interval + 1e-9))
