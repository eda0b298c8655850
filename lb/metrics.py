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
    """Counts one finished request with as few dict lookups as possible."""

    __slots__ = ("_duration", "_requests", "_upstream")

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, str, int], Counter] = {}
        self._duration: dict[tuple[str, str], Histogram] = {}
        self._upstream: dict[tuple[str, str, int], Counter] = {}

    def observe(
        self, listener: str, route: str, pool: str, server: str, code: int, seconds: float
    ) -> None:
        key = (listener, route, pool, code)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = REQUESTS.labels(listener, route, pool, str(code))
        child.inc()
        dkey = (listener, route)
        hist = self._duration.get(dkey)
        if hist is None:
            hist = self._duration[dkey] = REQUEST_DURATION.labels(listener, route)
        hist.observe(seconds)
        if server:
            ukey = (pool, server, code)
            up = self._upstream.get(ukey)
            if up is None:
                up = self._upstream[ukey] = UPSTREAM_REQUESTS.labels(pool, server, str(code))
            up.inc()
