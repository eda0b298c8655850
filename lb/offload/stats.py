"""Queue stats as gauges (`lb_queue_depth`, `lb_queue_in_flight`, `lb_queue_dead`,
`lb_queue_oldest_age_seconds`), refreshed every `INTERVAL` by whoever reads the store: the
supervisor of `lb run` alone (its queues are shared, on Redis or in the workers' job
directory: one reader, one value), or a `Proxy` that has its queue to itself."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from lb.metrics import QUEUE_DEAD, QUEUE_DEPTH, QUEUE_IN_FLIGHT, QUEUE_OLDEST
from lb.stores.base import JobQueue, QueueStats
from lb.stores.errors import StoreError

log = logging.getLogger("lb.offload")

INTERVAL = 1.0


def publish(queue: str, stats: QueueStats) -> None:
    QUEUE_DEPTH.labels(queue).set(stats.depth)
    QUEUE_IN_FLIGHT.labels(queue).set(stats.in_flight)
    QUEUE_DEAD.labels(queue).set(stats.dead)
    QUEUE_OLDEST.labels(queue).set(stats.oldest_age)


async def publish_forever(source: Callable[[], tuple[JobQueue, Iterable[str]]]) -> None:
    """Every INTERVAL: the stats of each queue `source()` names, from its store."""
    while True:
        jobs, queues = source()
        for queue in queues:
            with contextlib.suppress(StoreError):  # Redis down: lb_redis_up says so
                publish(queue, await jobs.stats(queue))
        await asyncio.sleep(INTERVAL)


def stats_document(stats: QueueStats) -> dict[str, Any]:
    return {
        "depth": stats.depth,
        "in_flight": stats.in_flight,
        "oldest_age": round(stats.oldest_age, 3),
        "dead": stats.dead,
    }
