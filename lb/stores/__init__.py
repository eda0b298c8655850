"""Shared state for the response cache, queue offload and rate limits (DESIGN.md, "Redis").

One small interface per use (`CacheStore`, `JobQueue`, `RateCounter`, in lb.stores.base), each
with an in-process implementation (`memory_*`) and a Redis one (`redis_*`), chosen by
`build_stores` from the config's `redis:` section. Every call on a Redis store returns within
`redis.timeout` or raises `StoreUnavailable`; callers degrade, they never wait on Redis.
"""

from lb.stores.base import (
    CacheStore,
    Enqueued,
    Invalidation,
    InvalidationCallback,
    Job,
    JobQueue,
    JobRecord,
    JobStatus,
    QueuePolicy,
    QueueStats,
    RateCounter,
    RateDecision,
    Subscription,
)
from lb.stores.bundle import Stores, build_stores, retire
from lb.stores.errors import QueueFull, StoreError, StoreUnavailable
from lb.stores.redis_client import RedisConnection

__all__ = [
    "CacheStore",
    "Enqueued",
    "Invalidation",
    "InvalidationCallback",
    "Job",
    "JobQueue",
    "JobRecord",
    "JobStatus",
    "QueueFull",
    "QueuePolicy",
    "QueueStats",
    "RateCounter",
    "RateDecision",
    "RedisConnection",
    "StoreError",
    "StoreUnavailable",
    "Stores",
    "Subscription",
    "build_stores",
    "retire",
]
