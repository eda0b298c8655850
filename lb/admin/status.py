"""The status document behind GET /api/v1/status: listeners, pools and servers from the
running config, with each server's health and traffic from the workers' metrics."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from lb.admin.metrics import samples

if TYPE_CHECKING:
    from lb.supervisor import Supervisor


def status_document(supervisor: Supervisor) -> dict[str, Any]:
    config = supervisor.config
    requests: dict[tuple[str, str], float] = defaultdict(float)
    errors: dict[tuple[str, str], float] = defaultdict(float)
    for labels, value in samples("lb_upstream_requests_total"):
        key = (labels["pool"], labels["server"])
        requests[key] += value
        if labels["code"].startswith("5"):
            errors[key] += value
    up: dict[tuple[str, str], float] = {}
    for labels, value in samples("lb_server_up"):
        up[(labels["pool"], labels["server"])] = value
    active = {labels["listener"]: v for labels, v in samples("lb_active_connections")}
    return {
        "pid": os.getpid(),
        "config": supervisor.config_path,
        "loaded_at": round(supervisor.loaded_at, 3),
        "time": round(time.time(), 3),
        "workers": [
            {
                "index": w.index,
                "pid": w.proc.pid,
                "alive": w.proc.poll() is None,
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
                        "requests": int(requests[(name, s.address)]),
                        "errors_5xx": int(errors[(name, s.address)]),
                    }
                    for s in pool.servers
                ],
            }
            for name, pool in config.pools.items()
        },
    }
