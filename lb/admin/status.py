"""The status document behind GET /api/v1/status: the supervisor and its workers, listeners,
routes, pools and servers from the running config, with each one's health and traffic from the
workers' metrics; and the live page for GET /status (status.html), which reads it.

Counts are totals since lb started. Rates (`*_per_s`) and latency quantiles cover the last few
seconds, measured between status requests by the admin listener's `CounterWindow`: they are
null on the first look (`window.seconds` is null then), and latency is from all requests
since start until there is a window. Sections fed by metrics that may not exist (`cache`,
`queues`) appear only once their metrics do.
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from functools import cache
from importlib import resources
from time import monotonic
from typing import TYPE_CHECKING, Any

from lb.admin.metrics import Samples, all_samples
from lb.admin.queues import from_gauges
from lb.admin.window import CounterWindow, Delta, Key, quantile
from lb.build import compiled

if TYPE_CHECKING:
    from lb.admin.target import Supervised
    from lb.config.routes import Match


Counts = dict[tuple[str, str], float]
CACHE_HITS = {"hit", "stale", "revalidated"}  # answered from the cache (lb_cache_requests_total)


def _counts_and_5xx(found: Samples, first: str, second: str) -> tuple[Counts, Counts]:
    """A counter with a `code` label summed by two other labels: all answers, and the 5xx."""
    total: Counts = defaultdict(float)
    errors: Counts = defaultdict(float)
    for labels, value in found:
        key = (labels[first], labels[second])
        total[key] += value
        if labels["code"].startswith("5"):
            errors[key] += value
    return total, errors


class Traffic:
    """The counters the document shows, as one flat map (what the window snapshots), and
    their growth over the window when there is one."""

    def __init__(self, found: dict[str, Samples], delta: Delta | None = None) -> None:
        self.found = found
        self.delta = delta

    def counters(self, supervisor: Supervised) -> dict[Key, float]:
        flat: dict[Key, float] = defaultdict(float)
        pools = supervisor.config.pools
        configured = {name: {s.address for s in pool.servers} for name, pool in pools.items()}
        for labels, value in self.found.get("lb_upstream_requests_total", []):
            pool = labels["pool"]
            server = _configured_address(configured.get(pool, set()), labels["server"])
            flat[("server", pool, server)] += value
            if labels["code"].startswith("5"):
                flat[("server_5xx", pool, server)] += value
        for labels, value in self.found.get("lb_requests_total", []):
            flat[("route", labels["route"])] += value
            if labels["code"].startswith("5"):
                flat[("route_5xx", labels["route"])] += value
        for labels, value in self.found.get("lb_request_duration_seconds_bucket", []):
            flat[("duration", labels["route"], labels["le"])] += value  # over listeners
        for labels, value in self.found.get("lb_split_duration_seconds_bucket", []):
            flat[("split_duration", labels["route"], labels["pool"], labels["le"])] += value
        return flat

    def per_second(self, key: Key) -> float | None:
        if self.delta is None:
            return None
        return round(self.delta.counts.get(key, 0.0) / self.delta.seconds, 2)

    def latency_ms(self, flat: dict[Key, float], *prefix: str) -> dict[str, float | None]:
        """p50 and p99 of the histogram whose keys start with `prefix` (then `le`)."""
        source = self.delta.counts if self.delta is not None else flat
        n = len(prefix)
        buckets = [(float(k[n]), v) for k, v in source.items() if k[:n] == prefix]
        out: dict[str, float | None] = {}
        for name, q in (("p50", 0.5), ("p99", 0.99)):
            seconds = quantile(q, buckets)
            out[name] = None if seconds is None else round(seconds * 1000, 2)
        return out


def _configured_address(addresses: set[str], label: str) -> str:
    """A server label as configured: a name's resolved servers are `NAME:PORT (IP)`."""
    if label in addresses:
        return label
    name = label.split(" (", 1)[0]
    return name if name in addresses else label


def status_document(supervisor: Supervised, window: CounterWindow | None = None) -> dict[str, Any]:
    config = supervisor.config
    found = all_samples()
    traffic = Traffic(found)
    flat = traffic.counters(supervisor)
    if window is not None:
        traffic.delta = window.observe(monotonic(), flat)
    up: dict[tuple[str, str], float] = {}
    for labels, value in found.get("lb_server_up", []):
        up[(labels["pool"], labels["server"])] = value
    in_flight = {(m["pool"], m["server"]): v for m, v in found.get("lb_server_in_flight", [])}
    waiting = {m["pool"]: v for m, v in found.get("lb_pool_queue_depth", [])}
    active = {labels["listener"]: v for labels, v in found.get("lb_active_connections", [])}
    drained = _drained(supervisor)
    workers = [
        {
            "index": w.index,
            "pid": w.proc.pid,
            "alive": w.proc.poll() is None,
            "ready": w.ready,
            "restarts": w.restarts,
        }
        for w in supervisor.workers
    ]
    document: dict[str, Any] = {
        "pid": os.getpid(),  # the supervisor's (its workers' are under "workers")
        "supervisor": {
            "pid": os.getpid(),
            "workers": getattr(supervisor, "count", len(workers)),  # as started (--workers)
            "workers_alive": sum(w["alive"] for w in workers),
            "workers_ready": sum(w["ready"] and w["alive"] for w in workers),
            "restarts": sum(w["restarts"] for w in workers),
        },
        "build": "mypyc" if compiled() else "python",  # the hot path's (lb.build)
        "config": supervisor.config_path,
        "loaded_at": round(supervisor.loaded_at, 3),
        "generation": supervisor.generation,
        "time": round(time.time(), 3),
        "window": {
            "seconds": round(traffic.delta.seconds, 1) if traffic.delta is not None else None
        },
        "redis": supervisor.stores.redis_status(),
        "admin": {"token_required": token_required(supervisor)},
        "workers": workers,
        "listeners": {
            name: {
                "bind": ls.bind,
                "mode": ls.mode,
                "pool": ls.pool,
                "tls": ls.tls is not None,
                "active_connections": int(active.get(name, 0)),
            }
            for name, ls in config.listeners.items()
        },
        "routes": _routes(supervisor, traffic, flat),
        "pools": {
            name: {
                "balance": pool.balance,
                "waiting": int(waiting.get(name, 0)),
                "servers": [
                    {
                        "address": s.address,
                        "weight": s.weight,
                        "backup": s.backup,
                        "up": up.get((name, s.address), 1.0) >= 1.0,
                        "drained": (name, s.address) in drained,
                        **_health(supervisor, name, s.address),
                        "in_flight": int(in_flight.get((name, s.address), 0)),
                        "requests": int(flat.get(("server", name, s.address), 0)),
                        "errors_5xx": int(flat.get(("server_5xx", name, s.address), 0)),
                        "requests_per_s": traffic.per_second(("server", name, s.address)),
                        "errors_5xx_per_s": traffic.per_second(("server_5xx", name, s.address)),
                    }
                    for s in pool.servers
                ],
            }
            for name, pool in config.pools.items()
        },
        "splits": _splits(supervisor, found, traffic, flat),
    }
    if "lb_cache_requests_total" in found:
        document["cache"] = _cache(found["lb_cache_requests_total"])
    queues = _queues(found) if "lb_queue_depth" in found or "lb_queue_jobs_total" in found else {}
    for name, numbers in from_gauges(supervisor).items():  # every configured queue
        queues.setdefault(name, {"depth": None, "jobs": {}}).update(numbers)
    if queues:
        document["queues"] = dict(sorted(queues.items()))
    return document


def _routes(supervisor: Supervised, traffic: Traffic, flat: dict[Key, float]) -> list[Any]:
    """In config order (first match wins): what each matches, where it sends, its traffic."""
    from lb.core.router import route_name

    config = supervisor.config
    http = [name for name, ls in config.listeners.items() if ls.mode == "http"]
    out = []
    for i, route in enumerate(config.routes):
        name = route_name(route, i)
        features = [
            key
            for key in ("sticky", "force", "rollback", "retries", "cache", "offload")
            if getattr(route, key, None) is not None
        ]
        out.append(
            {
                "name": name,
                "listeners": route.listeners if route.listeners is not None else http,
                "match": match_summary(route.match),
                "pool": route.pool,
                "split": [{"pool": a.pool, "weight": a.weight} for a in route.split]
                if route.split
                else None,
                "features": features,
                "requests": int(flat.get(("route", name), 0)),
                "errors_5xx": int(flat.get(("route_5xx", name), 0)),
                "requests_per_s": traffic.per_second(("route", name)),
                "errors_5xx_per_s": traffic.per_second(("route_5xx", name)),
                "latency_ms": traffic.latency_ms(flat, "duration", name),
            }
        )
    return out


def match_summary(match: Match) -> str:
    """A route's `match` in one line, e.g. `host api.example.com, path /v1/*, GET POST`."""
    parts = []
    if match.host is not None:
        parts.append(f"host {match.host}")
    if match.path is not None:
        parts.append(f"path {match.path}")
    if match.path_prefix is not None:
        parts.append(f"path {match.path_prefix}*")
    if match.path_regex is not None:
        parts.append(f"path ~ {match.path_regex}")
    if match.methods:
        parts.append(" ".join(match.methods))
    for kind, conditions in (("header", match.headers), ("cookie", match.cookies)):
        for key, cond in (conditions or {}).items():
            if isinstance(cond, str):
                parts.append(f"{kind} {key}={cond}")
            elif cond.regex is not None:
                parts.append(f"{kind} {key} ~ {cond.regex}")
            else:
                parts.append(f"{kind} {key} {'present' if cond.present else 'absent'}")
    return ", ".join(parts) or "everything"


def _splits(
    supervisor: Supervised,
    found: dict[str, Samples] | None = None,
    traffic: Traffic | None = None,
    flat: dict[Key, float] | None = None,
) -> dict[str, Any]:
    """Routes with a split: each arm's weight, traffic, and whether a rollback took it out
    (lb_split_rolled_back is the max over workers: one worker's rollback shows)."""
    from lb.core.rollback import stable_arm
    from lb.core.router import route_name

    if found is None:
        found = all_samples()
    if traffic is None:
        traffic = Traffic(found)
    if flat is None:
        flat = traffic.counters(supervisor)
    rolled = {(m["route"], m["pool"]): v for m, v in found.get("lb_split_rolled_back", [])}
    rollbacks: dict[tuple[str, str], float] = defaultdict(float)
    for labels, value in found.get("lb_split_rollbacks_total", []):
        rollbacks[(labels["route"], labels["pool"])] += value
    requests, errors = _counts_and_5xx(found.get("lb_requests_total", []), "route", "pool")
    out: dict[str, Any] = {}
    for i, route in enumerate(supervisor.config.routes):
        if not route.split:
            continue
        name = route_name(route, i)
        arms = [(arm.pool, arm.weight) for arm in route.split]
        stable = stable_arm(arms) if route.rollback is not None else None
        out[name] = {
            "sticky": route.sticky.cookie if route.sticky is not None else None,
            "rollback": route.rollback.model_dump() if route.rollback is not None else None,
            "rolled_back": any(rolled.get((name, p), 0) >= 1 for p, _ in arms),
            "arms": [
                {
                    "pool": pool,
                    "weight": weight,
                    "stable": pool == stable,
                    "rolled_back": rolled.get((name, pool), 0) >= 1,
                    "rollbacks": int(rollbacks[(name, pool)]),
                    "requests": int(requests[(name, pool)]),
                    "errors_5xx": int(errors[(name, pool)]),
                    "latency_ms": traffic.latency_ms(flat, "split_duration", name, pool),
                }
                for pool, weight in arms
            ],
        }
    return out


def _cache(found: Samples) -> dict[str, Any]:
    """lb_cache_requests_total{route,result}: each route's answers by result, and the share
    answered from the cache among those that could be (BYPASS could not)."""
    by_route: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for labels, value in found:
        by_route[labels.get("route", "")][labels.get("result", "").lower()] += int(value)
    out = {}
    for route, results in sorted(by_route.items()):
        hits = sum(n for result, n in results.items() if result in CACHE_HITS)
        lookups = sum(n for result, n in results.items() if result != "bypass")
        out[route] = {
            "results": dict(sorted(results.items())),
            "hit_ratio": round(hits / lookups, 4) if lookups else None,
        }
    return {"routes": out}


def _queues(found: dict[str, Samples]) -> dict[str, Any]:
    """lb_queue_depth{queue} (the highest a process reports: a queue in Redis is one, seen by
    each) and lb_queue_jobs_total{queue,outcome}."""
    out: dict[str, dict[str, Any]] = defaultdict(lambda: {"depth": None, "jobs": {}})
    for labels, value in found.get("lb_queue_depth", []):
        entry = out[labels.get("queue", "")]
        if not math.isnan(value):
            entry["depth"] = int(max(value, entry["depth"] or 0))
    for labels, value in found.get("lb_queue_jobs_total", []):
        jobs = out[labels.get("queue", "")]["jobs"]
        outcome = labels.get("outcome", "")
        jobs[outcome] = jobs.get(outcome, 0) + int(value)
    return dict(sorted(out.items()))


def token_required(supervisor: Supervised) -> bool:
    return bool(admin_token(supervisor))


def admin_token(supervisor: Supervised) -> str | None:
    """The bearer token mutating endpoints need (admin.token, else LB_ADMIN_TOKEN), if any."""
    admin = supervisor.config.admin
    return (admin.token if admin is not None else None) or os.environ.get("LB_ADMIN_TOKEN")


def _drained(supervisor: Supervised) -> set[tuple[str, str]]:
    """(pool, server) drained through the admin API (lb.proxy.health.channel carries it)."""
    health = getattr(supervisor, "health", None)
    return health.drained if health is not None else set()


def _health(supervisor: Supervised, pool: str, address: str) -> dict[str, Any]:
    """`health` ("up", "down" or "unchecked") and `last_check`, from the supervisor's active
    checks; `up` above also counts each worker's passive ejections (lb_server_up is a min)."""
    health = getattr(supervisor, "health", None)
    return health.state(pool, address) if health is not None else {}


@cache
def status_page() -> bytes:
    """GET /status: one self-contained page (inline CSS and JS, no data: it reads
    /api/v1/status every 2 s), so it is the same file for everyone and holds no secret."""
    return resources.files("lb.admin").joinpath("status.html").read_bytes()
