"""Prometheus metrics (DESIGN.md names, prefix `lb_`).

Under `lb run`, PROMETHEUS_MULTIPROC_DIR is set before this module is imported, so every
worker writes its samples to shared files and the supervisor's admin listener serves them
aggregated. Label children are cached per label tuple: `.labels()` is the costly part of
counting a request, and the set of label tuples is small.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "lb_requests", "Requests answered, by route and status", ["listener", "route", "pool", "code"]
)
REQUEST_DURATION = Histogram(
    "lb_request_duration_seconds",
    "Time from request head to response end",
    ["listener", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
UPSTREAM_REQUESTS = Counter(
    "lb_upstream_requests", "Requests sent to servers, by answer", ["pool", "server", "code"]
)
ACTIVE_CONNECTIONS = Gauge(
    "lb_active_connections", "Open client connections", ["listener"], multiprocess_mode="livesum"
)
SERVER_UP = Gauge(
    "lb_server_up", "1 if the server takes traffic", ["pool", "server"], multiprocess_mode="min"
)
RETRIES = Counter("lb_retries", "Requests sent again to another server", ["pool"])
TCP_BYTES = Counter("lb_tcp_bytes", "Bytes relayed by tcp listeners", ["listener", "direction"])
CONNECTION_ERRORS = Counter(
    "lb_connection_errors",
    "Connections ended by an error, by cause",
    ["listener", "cause"],
)
UPSTREAM_CONNECT_ERRORS = Counter(
    "lb_upstream_connect_errors", "Failed connects to servers", ["pool", "server", "cause"]
)


class RequestMetrics:
    """Counts finished requests in plain dicts and hands them to prometheus-client in one
    batch per `flush` (a few times a second): its `.labels()` and locked `.inc()` per request
    were a measurable share of a small proxied request. Durations are observed per request,
    as a histogram needs each value."""

    __slots__ = ("_duration", "_pending_requests", "_pending_upstream")

    def __init__(self) -> None:
        self._pending_requests: dict[tuple[str, str, str, int], int] = {}
        self._pending_upstream: dict[tuple[str, str, int], int] = {}
        self._duration: dict[tuple[str, str], Histogram] = {}

    def observe(
        self, listener: str, route: str, pool: str, server: str, code: int, seconds: float
    ) -> None:
        key = (listener, route, pool, code)
        pending = self._pending_requests
        pending[key] = pending.get(key, 0) + 1
        dkey = (listener, route)
        hist = self._duration.get(dkey)
        if hist is None:
            hist = self._duration[dkey] = REQUEST_DURATION.labels(listener, route)
        hist.observe(seconds)
        if server:
            ukey = (pool, server, code)
            upstream = self._pending_upstream
            upstream[ukey] = upstream.get(ukey, 0) + 1

    def flush(self) -> None:
        requests, self._pending_requests = self._pending_requests, {}
        for (listener, route, pool, code), n in requests.items():
            REQUESTS.labels(listener, route, pool, str(code)).inc(n)
        upstream, self._pending_upstream = self._pending_upstream, {}
        for (pool, server, code), n in upstream.items():
            UPSTREAM_REQUESTS.labels(pool, server, str(code)).inc(n)
