"""The status document behind GET /api/v1/status: listeners, pools and servers from the
running config, with each server's health and traffic from the workers' metrics; and the same
as a small HTML page for GET /status."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from html import escape
from typing import TYPE_CHECKING, Any

from lb.admin.metrics import samples
from lb.admin.queues import from_gauges

if TYPE_CHECKING:
    from lb.admin.target import Supervised


Counts = dict[tuple[str, str], float]


def _counts_and_5xx(metric: str, first: str, second: str) -> tuple[Counts, Counts]:
    """A counter with a `code` label summed by two other labels: all answers, and the 5xx."""
    total: Counts = defaultdict(float)
    errors: Counts = defaultdict(float)
    for labels, value in samples(metric):
        key = (labels[first], labels[second])
        total[key] += value
        if labels["code"].startswith("5"):
            errors[key] += value
    return total, errors


def status_document(supervisor: Supervised) -> dict[str, Any]:
    config = supervisor.config
    requests, errors = _counts_and_5xx("lb_upstream_requests_total", "pool", "server")
    up: dict[tuple[str, str], float] = {}
    for labels, value in samples("lb_server_up"):
        up[(labels["pool"], labels["server"])] = value
    active = {labels["listener"]: v for labels, v in samples("lb_active_connections")}
    return {
        "pid": os.getpid(),
        "config": supervisor.config_path,
        "loaded_at": round(supervisor.loaded_at, 3),
        "generation": supervisor.generation,
        "time": round(time.time(), 3),
        "redis": supervisor.stores.redis_status(),
        "queues": from_gauges(supervisor),
        "workers": [
            {
                "index": w.index,
                "pid": w.proc.pid,
                "alive": w.proc.poll() is None,
                "ready": w.ready,
                "restarts": w.restarts,
            }
            for w in supervisor.workers
        ],
        "listeners": {
            name: {
                "bind": ls.bind,
                "mode": ls.mode,
                "pool": ls.pool,
                "active_connections": int(active.get(name, 0)),
            }
            for name, ls in config.listeners.items()
        },
        "pools": {
            name: {
                "balance": pool.balance,
                "servers": [
                    {
                        "address": s.address,
                        "weight": s.weight,
                        "backup": s.backup,
                        "up": up.get((name, s.address), 1.0) >= 1.0,
                        "drained": (name, s.address) in _drained(supervisor),
                        **_health(supervisor, name, s.address),
                        "requests": int(requests[(name, s.address)]),
                        "errors_5xx": int(errors[(name, s.address)]),
                    }
                    for s in pool.servers
                ],
            }
            for name, pool in config.pools.items()
        },
        "splits": _splits(supervisor),
    }


def _splits(supervisor: Supervised) -> dict[str, Any]:
    """Routes with a split: each arm's weight, traffic, and whether a rollback took it out
    (lb_split_rolled_back is the max over workers: one worker's rollback shows)."""
    from lb.core.rollback import stable_arm
    from lb.core.router import route_name

    rolled = {(m["route"], m["pool"]): v for m, v in samples("lb_split_rolled_back")}
    rollbacks: dict[tuple[str, str], float] = defaultdict(float)
    for labels, value in samples("lb_split_rollbacks_total"):
        rollbacks[(labels["route"], labels["pool"])] += value
    traffic, errors = _counts_and_5xx("lb_requests_total", "route", "pool")
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
                    "requests": int(traffic[(name, pool)]),
                    "errors_5xx": int(errors[(name, pool)]),
                }
                for pool, weight in arms
            ],
        }
    return out


def _drained(supervisor: Supervised) -> set[tuple[str, str]]:
    """(pool, server) drained through the admin API (lb.proxy.health.channel carries it)."""
    health = getattr(supervisor, "health", None)
    return health.drained if health is not None else set()


def _health(supervisor: Supervised, pool: str, address: str) -> dict[str, Any]:
    """`health` ("up", "down" or "unchecked") and `last_check`, from the supervisor's active
    checks; `up` above also counts each worker's passive ejections (lb_server_up is a min)."""
    health = getattr(supervisor, "health", None)
    return health.state(pool, address) if health is not None else {}


def status_page(supervisor: Supervised) -> str:
    """GET /status: the status document as one plain HTML page (no scripts, no assets)."""
    doc = status_document(supervisor)
    rows = []
    for pool_name, pool in doc["pools"].items():
        for server in pool["servers"]:
            state = "up" if server["up"] else "DOWN"
            if server.get("drained"):
                state += " (drained)"
            role = " (backup)" if server["backup"] else ""
            rows.append(
                f"<tr><td>{escape(pool_name)}</td><td>{escape(pool['balance'])}</td>"
                f"<td>{escape(server['address'])}{role}</td><td>{server['weight']}</td>"
                f"<td>{state}</td><td>{server['requests']}</td><td>{server['errors_5xx']}</td></tr>"
            )
    listeners = "".join(
        f"<tr><td>{escape(name)}</td><td>{escape(ls['bind'])}</td><td>{escape(ls['mode'])}</td>"
        f"<td>{ls['active_connections']}</td></tr>"
        for name, ls in doc["listeners"].items()
    )
    workers = ", ".join(
        f"{w['pid']}{'' if w['alive'] else ' (dead)'} restarts={w['restarts']}"
        for w in doc["workers"]
    )
    loaded = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(doc["loaded_at"]))
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>lb status</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 10px;text-align:left}</style>"
        f"</head><body><h1>lb</h1><p>config {escape(doc['config'])}, loaded {loaded}; "
        f"workers: {escape(workers)}</p>"
        "<h2>Listeners</h2><table><tr><th>name</th><th>bind</th><th>mode</th>"
        f"<th>connections</th></tr>{listeners}</table>"
        "<h2>Pools</h2><table><tr><th>pool</th><th>balance</th><th>server</th><th>weight</th>"
        f"<th>state</th><th>requests</th><th>5xx</th></tr>{''.join(rows)}</table>"
        "</body></html>\n"
    )
