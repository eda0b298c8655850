"""GET /api/v1/queues and POST /api/v1/queues/{queue}/dead/replay, and the `queues` part of
/api/v1/status.

The supervisor reads the queues its workers share itself: on Redis, or without it in the
workers' job directory (lb.stores.file_jobs); it also keeps the `lb_queue_*` gauges
(lb.offload.stats), which the status document reads.
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
    """Each configured queue's numbers as last published (by the supervisor)."""
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


def store_kind(supervisor: Supervised) -> str:
    """`redis`, or `files` (the job directory the workers of this `lb run` share)."""
    return "redis" if supervisor.stores.redis is not None else "files"


async def queues_document(supervisor: Supervised) -> tuple[int, dict[str, Any]]:
    stores = supervisor.stores
    kind = store_kind(supervisor)
    out: dict[str, Any] = {}
    try:
        for name in supervisor.config.queues:
            out[name] = stats_document(await stores.jobs.stats(name))
    except StoreError as e:
        return 503, {"store": kind, "error": f"the {kind} store cannot be reached: {e}"}
    return 200, {"store": kind, "queues": out}


async def replay(supervisor: Supervised, queue: str) -> tuple[int, dict[str, Any]]:
    if queue not in supervisor.config.queues:
        known = ", ".join(supervisor.config.queues) or "none"
        return 404, {"error": f"unknown queue {queue!r} (queues: {known})"}
    kind = store_kind(supervisor)
    try:
        count = await supervisor.stores.jobs.replay_dead(queue)
    except StoreError as e:
        return 503, {"error": f"the {kind} store cannot be reached: {e}"}
    return 200, {"queue": queue, "replayed": count}
