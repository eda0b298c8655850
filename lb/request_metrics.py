"""Finished requests, counted per worker in a plain dict and handed to prometheus-client in
batches: the per-request half of lb_requests_total, lb_upstream_requests_total and
lb_request_duration_seconds (declared in lb.metrics). Compiled with the hot path (setup.py)."""

from __future__ import annotations

from lb.metrics import REQUEST_DURATION, REQUESTS, UPSTREAM_REQUESTS


class RequestMetrics:
    """Counts finished requests in a plain dict and hands them to prometheus-client in one
    batch per `flush` (a few times a second). Its `.labels()`, locked `.inc()` and
    `Histogram.observe()` per request were ~5% of a small proxied request's CPU. Durations are
    bucketed here with the histogram's own bounds, then added to its buckets at flush time
    (prometheus-client keeps them as `_buckets`/`_sum`; the version range is pinned).

    One entry per (listener, route, pool, server, code) holds the bucket counts and the sum of
    seconds: a request costs one tuple and one dict lookup; `flush` derives the request,
    upstream and duration series from it."""

    def __init__(self) -> None:
        self._bounds: list[float] = list(REQUEST_DURATION._upper_bounds)  # ends with +Inf
        # (listener, route, pool, server, code) -> [count per bucket..., sum of seconds]
        self._pending: dict[tuple[str, str, str, str, int], list[float]] = {}

    def observe(
        self, listener: str, route: str, pool: str, server: str, code: int, seconds: float
    ) -> None:
        key = (listener, route, pool, server, code)
        slots = self._pending.get(key)
        if slots is None:
            slots = self._pending[key] = [0.0] * (len(self._bounds) + 1)
        # The first bucket whose bound is not below `seconds` (+Inf is the last): a loop of
        # unboxed float compares once compiled, ending at once for the usual quick request.
        bounds = self._bounds
        i = 0
        while seconds > bounds[i]:
            i += 1
        slots[i] += 1.0
        slots[-1] += seconds

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for (listener, route, pool, server, code), slots in pending.items():
            n = int(sum(slots[:-1]))
            REQUESTS.labels(listener, route, pool, str(code)).inc(n)
            if server:
                UPSTREAM_REQUESTS.labels(pool, server, str(code)).inc(n)
            child = REQUEST_DURATION.labels(listener, route)
            for i, count in enumerate(slots[:-1]):
                if count:
                    child._buckets[i].inc(count)
            child._sum.inc(slots[-1])
