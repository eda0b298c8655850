"""GET /api/v1/queues and POST /api/v1/queues/{queue}/dead/replay, and the `queues` part of
/api/v1/status.

With Redis the supervisor reads the shared queues itself (and keeps the `lb_queue_*` gauges,
lb.offload.stats). Without it every `lb run` worker has its own in-process queues: their
numbers are the sum of the workers' gauges, and their dead letters can only be replayed by
the worker that holds them (the admin API answers 409 and says so).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from lb.admin.metrics import samples
from lb.offload.stats import stats_document
from lb.stores.errors import StoreError

if TYPE_CHECKING:
    from lb.admin.target import Supervised

_GAUGES = {
    "depth": "lb_queue_depth",
    "in_flight": "lb_queue_in_flight",
    "oldest_age": "lb_queue_oldest_age_seconds",
    "dead": "lb_queue_dead",
}


def from_gauges(supervisor: Supervised) -> dict[str, dict[str, Any]]:
    """Each configured queue's numbers as the workers last published them."""
    values: dict[str, dict[str, float]] = defaultdict(dict)
    for key, metric in _GAUGES.items():
        for labels, value in samples(metric):
            values[labels.get("queue", "")][key] = value
    out = {}
    for name in supervisor.config.queues:
        v = values.get(name, {})
        out[name] = {
            "depth": int(v.get("depth", 0)),
            "in_flight": int(v.get("in_flight", 0)),
            "oldest_age": round(v.get("oldest_age", 0.0), 3),
            "dead": int(v.get("dead", 0)),
        }
    return out


async def queues_document(supervisor: Supervised) -> tuple[int, dict[str, Any]]:
    stores = supervisor.stores
    if stores.redis is None:
        return 200, {"store": "in-process", "queues": from_gauges(supervisor)}
    out: dict[str, Any] = {}
    try:
        for name in supervisor.config.queues:
            out[name] = stats_document(await stores.jobs.stats(name))
    except StoreError as e:
        return 503, {"store": "redis", "error": f"redis cannot be reached: {e}"}
    return 200, {"store": "redis", "queues": out}


async def replay(supervisor: Supervised, queue: str) -> tuple[int, dict[str, Any]]:
    if queue not in supervisor.config.queues:
        known = ", ".join(supervisor.config.queues) or "none"
        return 404, {"error": f"unknown queue {queue!r} (queues: {known})"}
    if supervisor.stores.redis is None:
        return 409, {
            "error": "without redis: each lb run worker holds its own dead letters; "
            "configure redis: to replay them from here"
        }
    try:
        count = await supervisor.stores.jobs.replay_dead(queue)
    except StoreError as e:
        return 503, {"error": f"redis cannot be reached: {e}"}
    return 200, {"queue": queue, "replayed": count}
