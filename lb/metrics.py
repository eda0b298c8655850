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
SERVER_IN_FLIGHT = Gauge(
    "lb_server_in_flight",
    "Requests (tcp: connections) using the server now, by configured address",
    ["pool", "server"],
    multiprocess_mode="livesum",
)
# How late the worker's 50 ms tick ran (lb.proxy.timers): a busy loop adds up to a few ms; more
# is a pause every connection of that worker waited through (a long callback, a full GC, the
# machine taking the CPU away), which shows in p99 but not in req/s.
EVENT_LOOP_LAG = Histogram(
    "lb_event_loop_lag_seconds",
    "How late each worker's periodic tick ran: pauses of its event loop",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
RETRIES = Counter("lb_retries", "Requests sent again to another server", ["pool"])
POOL_QUEUE_DEPTH = Gauge(
    "lb_pool_queue_depth",
    "Requests waiting for a server under its max_connections, by pool",
    ["pool"],
    multiprocess_mode="livesum",
)
TCP_BYTES = Counter("lb_tcp_bytes", "Bytes relayed by tcp listeners", ["listener", "direction"])
CONNECTION_ERRORS = Counter(
    "lb_connection_errors",
    "Connections ended by an error, by cause",
    ["listener", "cause"],
)
UPSTREAM_CONNECT_ERRORS = Counter(
    "lb_upstream_connect_errors", "Failed connects to servers", ["pool", "server", "cause"]
)
# Canary splits (issue 5): per arm, so a canary's latency and rollbacks compare with the stable
# arm's (its error rate: lb_requests_total{route,pool,code}).
SPLIT_DURATION = Histogram(
    "lb_split_duration_seconds",
    "Time from request head to response end on routes with a split, by arm",
    ["route", "pool"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SPLIT_ROLLED_BACK = Gauge(
    "lb_split_rolled_back",
    "1 while a canary arm is rolled back (weight 0) by its route's rollback rule",
    ["route", "pool"],
    multiprocess_mode="max",
)
SPLIT_ROLLBACKS = Counter(
    "lb_split_rollbacks", "Automatic rollbacks of a canary arm", ["route", "pool"]
)

# Rate limits (issue 16): requests answered 429, counted by the filter (lb.filters.rate_limit).
RATE_LIMITED = Counter("lb_rate_limited", "Requests refused 429 by a rate limit", ["route"])


# lb_redis_up (issue 12): made on first use, by a process whose config has `redis:`. A gauge
# without labels exists, at 0, from the moment it is made, so a module-level one would read
# "down" in every process that never configured Redis (and win the min across processes).
_redis_up: Gauge | None = None


def redis_up_gauge() -> Gauge:
    global _redis_up
    if _redis_up is None:
        _redis_up = Gauge(
            "lb_redis_up",
            "1 while this process reaches Redis within its timeout (min over processes)",
            multiprocess_mode="min",
        )
    return _redis_up


# The response cache (lb.cache, lb.filters.cache).
CACHE_REQUESTS = Counter(
    "lb_cache_requests", "Requests on cached routes, by cache result", ["route", "result"]
)
CACHE_OBJECTS = Gauge(
    "lb_cache_objects", "Entries held, by tier", ["tier"], multiprocess_mode="livesum"
)
CACHE_BYTES = Gauge("lb_cache_bytes", "Bytes held, by tier", ["tier"], multiprocess_mode="livesum")
CACHE_STORE_ERRORS = Counter(
    "lb_cache_store_errors", "Cache reads and writes the shared store failed (Redis down or slow)"
)
CACHE_COLLAPSED = Counter(
    "lb_cache_collapsed_waits", "Cache misses that waited for another request's fetch"
)
# Queue offload (issue 14). The stats gauges are set by the supervisor of `lb run` alone (its
# queues are shared: on Redis, or in its workers' job directory); livesum: one value.
QUEUE_DEPTH = Gauge(
    "lb_queue_depth", "Jobs waiting for a worker, by queue", ["queue"], multiprocess_mode="livesum"
)
QUEUE_IN_FLIGHT = Gauge(
    "lb_queue_in_flight", "Jobs running, by queue", ["queue"], multiprocess_mode="livesum"
)
QUEUE_DEAD = Gauge(
    "lb_queue_dead", "Jobs in the dead letters, by queue", ["queue"], multiprocess_mode="livesum"
)
QUEUE_OLDEST = Gauge(
    "lb_queue_oldest_age_seconds",
    "Age of the oldest job waiting or running, by queue",
    ["queue"],
    multiprocess_mode="livemax",
)
# outcome: accepted, duplicate (an Idempotency-Key seen before), rejected_full, unavailable,
# done, retried, dead, cancelled
QUEUE_JOBS = Counter("lb_queue_jobs", "Offloaded jobs, by queue and outcome", ["queue", "outcome"])
QUEUE_LAG = Histogram(
    "lb_queue_lag_seconds",
    "Time from a job's 202 to the start of its first run",
    ["queue"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600),
)
JOB_DURATION = Histogram(
    "lb_queue_job_duration_seconds",
    "Time one run of a job took, by queue and outcome",
    ["queue", "outcome"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
