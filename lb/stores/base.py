"""The three store interfaces and the values they pass, shared by both implementations.

Each interface is what one feature needs, no more: `CacheStore` (the response cache),
`JobQueue` (queue offload) and `RateCounter` (rate limits). Every method may raise
`StoreUnavailable` (Redis down or slow: within the configured timeout, never later);
in-process implementations never do.

Keys are `str` (cache keys are built from method, host and path, and purged by path prefix);
values, payloads and results are `bytes`. Durations are float seconds.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from lb.core.gcra import RateDecision

__all__ = [
    "CacheStore",
    "Enqueued",
    "Invalidation",
    "InvalidationCallback",
    "Job",
    "JobQueue",
    "JobRecord",
    "JobStatus",
    "QueuePolicy",
    "QueueStats",
    "RateCounter",
    "RateDecision",
    "Subscription",
]


# -- cache --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Invalidation:
    """Keys removed or replaced elsewhere; `everything` when a tier must drop all it holds
    (a purge of all, or a lost subscription that may have missed messages)."""

    keys: tuple[str, ...] = ()
    everything: bool = False


InvalidationCallback = Callable[[Invalidation], None]


class Subscription(Protocol):
    async def close(self) -> None: ...


class CacheStore(Protocol):
    """Bytes by key, with a TTL and tags; purges; a short lock; invalidation messages.

    `delete` and every `purge_*` publish an `Invalidation` for what they removed, so a small
    in-process tier in front of a shared store stays coherent; `publish_invalidation` is for
    the other changes (e.g. a new version stored under a key a tier may hold).
    """

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float, tags: list[str] | None = None) -> None:
        """Store `value` for `ttl` seconds (> 0); replaces any previous value and its tags."""

    async def delete(self, keys: list[str]) -> int:
        """How many of `keys` were present."""

    async def purge_prefix(self, prefix: str) -> int:
        """Remove every key that starts with `prefix` (exact, case-sensitive); how many."""

    async def purge_tag(self, tag: str) -> int:
        """Remove every key stored with `tag`; how many."""

    async def purge_all(self) -> int: ...

    async def try_lock(self, key: str, lease: float) -> str | None:
        """A token when this caller now holds `key`'s lock (for `lease` seconds at most, in
        case it dies), None when someone else holds it. For collapsed forwarding: one
        request fetches, the others wait for the stored answer."""

    async def unlock(self, key: str, token: str) -> bool:
        """Release if `token` still holds the lock (False: the lease ran out, maybe taken)."""

    async def publish_invalidation(self, invalidation: Invalidation) -> None: ...

    async def subscribe_invalidations(self, callback: InvalidationCallback) -> Subscription:
        """Call `callback` for every invalidation published by any process (this one too)."""


# -- job queue ----------------------------------------------------------------------------------


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"  # failed, queued again (`attempt` tells how many ran)
    DONE = "done"
    FAILED = "failed"  # gave up (`reason`); the job is in the queue's dead letters
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """A queue's settings (`queues.NAME` in the config), passed to the calls that need them."""

    max_length: int = 1000  # jobs waiting or in flight; more: QueueFull
    max_attempts: int = 5  # runs (a lost worker's included) before the job is dead
    ack_timeout: float = 60.0  # a job running longer than this is given to another worker
    result_ttl: float = 3600.0  # a finished job's record (and result) lasts this long
    idempotency_ttl: float = 86400.0  # an Idempotency-Key names its job this long


@dataclass(frozen=True, slots=True)
class Enqueued:
    id: str
    created: bool  # False: the idempotency key already named this job
    # The idempotency key names a job queued with another `fingerprint` (a different request
    # under the same key): nothing was queued; `id` is that other job.
    conflict: bool = False


@dataclass(frozen=True, slots=True)
class Job:
    """One delivery of a job to a worker; hand it back to `complete` or `fail`."""

    id: str
    queue: str
    payload: bytes
    attempt: int  # 1 on the first run
    handle: str  # which delivery this is (the stream entry id for Redis)


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: str
    queue: str
    status: JobStatus
    attempt: int  # runs started so far
    reason: str | None  # why the last run failed
    result: bytes | None  # once done
    created_at: float  # Unix seconds
    updated_at: float
    owner: str | None = None  # as given to `enqueue` (offload stores a hash of the owner)


@dataclass(frozen=True, slots=True)
class QueueStats:
    depth: int  # waiting for a worker (retries waiting out their backoff included)
    in_flight: int  # delivered, not yet acknowledged
    oldest_age: float  # seconds since the oldest waiting or in-flight job was queued; 0 if none
    dead: int  # in the dead letters


class JobQueue(Protocol):
    """Durable named queues of jobs; at-least-once delivery to workers.

    A job runs until its worker calls `complete` (the result is stored before the delivery is
    acknowledged, so a crash in between re-runs the job, never loses its result) or `fail`.
    A delivery not acknowledged within `ack_timeout` goes to the next `claim`, as a new
    attempt. After `max_attempts` the job goes to the queue's dead letters, from which
    `replay_dead` queues them all again.
    """

    def enqueue(
        self,
        queue: str,
        payload: bytes,
        policy: QueuePolicy,
        *,
        idempotency_key: str | None = None,
        fingerprint: str = "",
        owner: str | None = None,
    ) -> Awaitable[Enqueued]:
        """Queue a job (raises QueueFull); with `idempotency_key`, a key seen before within
        `policy.idempotency_ttl` returns that job instead of queueing another (`conflict` when
        it was queued with another `fingerprint`). `owner` is kept on the job's record.

        A coroutine, or a future (Redis: the job is already on its way to the server when
        the call returns, in a batch with the other enqueues of this event-loop tick); either
        way the job is stored once it resolves."""

    async def get(self, job_id: str) -> JobRecord | None: ...

    async def claim(
        self, queue: str, consumer: str, policy: QueuePolicy, *, block: float = 1.0
    ) -> Job | None:
        """The next job for worker `consumer`: first one whose worker went silent for
        `ack_timeout`, else a new one, waiting up to `block` seconds; None if none came."""

    async def complete(self, job: Job, result: bytes, policy: QueuePolicy) -> None: ...

    async def fail(
        self, job: Job, reason: str, policy: QueuePolicy, *, retry: bool = True, delay: float = 0.0
    ) -> None:
        """The run failed: queue it again (`retrying`) while attempts remain and `retry`, to
        be claimed no sooner than `delay` seconds from now (backoff); else `failed` and into
        the dead letters."""

    async def cancel(self, job_id: str, policy: QueuePolicy) -> bool:
        """Cancel a job that no worker has started; False when it is running or finished."""

    async def replay_dead(self, queue: str) -> int:
        """Queue every dead job again, attempts counted from zero; how many."""

    async def stats(self, queue: str) -> QueueStats: ...


# -- rate limits --------------------------------------------------------------------------------


class RateCounter(Protocol):
    async def acquire(
        self, key: str, rate_per_second: float, burst: int, cost: int = 1
    ) -> RateDecision:
        """One atomic GCRA decision (lb.core.gcra) for `key`, shared by every process that
        uses the same store."""
