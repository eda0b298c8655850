"""The stores of one config: `build_stores(config, previous)`.

Without `redis:` (the default) every store is in-process, one set per worker process, except
the job queue of an `lb run` worker: the supervisor names a directory in `LB_JOBS_DIR` and every
worker opens the same `FileJobQueue` there, so a job accepted by one is known to all (and to
the supervisor's admin API); in a single process (tests, embedding) it is a `MemoryJobQueue`.
With `redis:` all three are on Redis, through one `RedisConnection` per process.

A reload passes the running `Stores` as `previous`: what the new config does not change is
kept (the Redis client and its state when the `redis:` section is the same; the in-process
stores, with their cached entries and queued jobs, while `redis:` stays absent).
`retire(old, new)` then closes what only the old one used, once nothing running on the old
config needs it.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any

from lb.config.schema import Config
from lb.stores.base import CacheStore, JobQueue, RateCounter
from lb.stores.file_jobs import JOBS_DIR_ENV, FileJobQueue
from lb.stores.memory_cache import MemoryCacheStore
from lb.stores.memory_jobs import MemoryJobQueue
from lb.stores.memory_rates import MemoryRateCounter
from lb.stores.redis_cache import RedisCacheStore
from lb.stores.redis_client import RedisConnection, connect
from lb.stores.redis_jobs import RedisJobQueue
from lb.stores.redis_rates import RedisRateCounter

# The in-process cache's bound until the cache feature gives it a config key.
DEFAULT_MEMORY_CACHE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Stores:
    cache: CacheStore
    jobs: JobQueue
    rates: RateCounter
    redis: RedisConnection | None = None  # None: in-process stores
    # In this process whatever `redis:` says: for `rate_limit.scope: local`, called without a
    # coroutine (`decide`). Kept across every reload, so a reload does not refill buckets.
    local_rates: MemoryRateCounter = field(default_factory=MemoryRateCounter)
    # Without Redis: the directory of the job queue shared by an `lb run`'s processes (None: the
    # queue is this process's own, or on Redis).
    jobs_dir: str | None = None

    def redis_status(self) -> dict[str, Any]:
        """The `redis` part of /api/v1/status: {"configured": false} without `redis:`."""
        if self.redis is None:
            return {"configured": False}
        return self.redis.status()


def build_stores(
    config: Config,
    previous: Stores | None = None,
    *,
    memory_cache_bytes: int = DEFAULT_MEMORY_CACHE_BYTES,
    jobs_dir: str | None = None,
) -> Stores:
    """The stores for `config`, reusing `previous`'s parts that it leaves unchanged.

    Without `redis:`, jobs go to the directory `jobs_dir` (default: `LB_JOBS_DIR`, which the
    supervisor sets for its workers) when there is one, else stay in this process.
    Called with a running loop (a worker's), the Redis state is checked at once in the
    background; otherwise on first use.
    """
    local_rates = previous.local_rates if previous is not None else MemoryRateCounter()
    if config.redis is None:
        if previous is not None and previous.redis is None:
            return previous
        jobs_dir = jobs_dir or os.environ.get(JOBS_DIR_ENV) or None
        jobs: JobQueue = FileJobQueue(jobs_dir) if jobs_dir else MemoryJobQueue()
        return Stores(
            MemoryCacheStore(memory_cache_bytes),
            jobs,
            local_rates,
            local_rates=local_rates,
            jobs_dir=jobs_dir,
        )
    connection = connect(config.redis, previous.redis if previous is not None else None)
    if previous is not None and previous.redis is connection:
        return previous
    _start_if_running(connection)
    return Stores(
        RedisCacheStore(connection),
        RedisJobQueue(connection),
        RedisRateCounter(connection),
        connection,
        local_rates,
    )


async def retire(old: Stores, new: Stores | None) -> None:
    """Close what `old` holds that `new` does not share (its Redis connection)."""
    if old.redis is not None and (new is None or new.redis is not old.redis):
        await old.redis.aclose()


def _start_if_running(connection: RedisConnection) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    connection.start()
