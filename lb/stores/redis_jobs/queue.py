"""RedisJobQueue: the JobQueue protocol on Redis (the layout: lb.stores.redis_jobs).

Each state change is one script (lb.stores.redis_jobs.scripts) given its keys and arguments
here; reads that change nothing (`get`) are plain commands. `claim` is the one loop: due
retries back to the stream, then a delivery whose worker went silent (XAUTOCLAIM), else a
blocking XREADGROUP of at most a fraction of `ack_timeout`, so silent deliveries are looked
for again soon enough. A consumer group lost with the server's data (a restart without
persistence) is made again on the spot. Every call goes through `RedisConnection.call`:
within the configured timeout, or StoreUnavailable.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from lb.stores.base import Enqueued, Job, JobRecord, JobStatus, QueuePolicy, QueueStats
from lb.stores.errors import QueueFull
from lb.stores.job_rules import new_job_id, repeated, silent_reason
from lb.stores.redis_client import RedisConnection
from lb.stores.redis_jobs.batch import ScriptBatcher
from lb.stores.redis_jobs.scripts import (
    CANCEL,
    COMPLETE,
    ENQUEUE,
    FAIL,
    PROMOTE,
    REPLAY,
    START,
    STATS,
)

GROUP = "lb"
Entry = tuple[str, dict[bytes, bytes]]  # a stream entry: its id, its fields
_REPLAY_BATCH = 100


class RedisJobQueue:
    def __init__(self, connection: RedisConnection) -> None:
        self._conn = connection
        self._prefix = connection.prefix
        register = connection.client.register_script
        self._enqueue = register(ENQUEUE)
        self._start = register(START)
        self._complete = register(COMPLETE)
        self._fail = register(FAIL)
        self._cancel = register(CANCEL)
        self._replay = register(REPLAY)
        self._stats = register(STATS)
        self._promote = register(PROMOTE)
        # Enqueues are the hot path (every 202): those of one event-loop tick share a pipeline.
        self._enqueues = ScriptBatcher(connection, self._enqueue)

    def _stream(self, queue: str) -> str:
        return f"{self._prefix}q:{queue}"

    def _dead(self, queue: str) -> str:
        return f"{self._prefix}q:{queue}:dead"

    def _later(self, queue: str) -> str:
        return f"{self._prefix}q:{queue}:later"

    def _job(self, job_id: str) -> str:
        return f"{self._prefix}j:{job_id}"

    def enqueue(
        self,
        queue: str,
        payload: bytes,
        policy: QueuePolicy,
        *,
        idempotency_key: str | None = None,
        fingerprint: str = "",
        owner: str | None = None,
    ) -> asyncio.Future[Enqueued]:
        """(Not a coroutine: the job leaves with the next batch whether or not the future is
        awaited; a request path waits on it without a task of its own.)"""
        job_id = new_job_id()
        idem = f"{self._prefix}i:{queue}:{idempotency_key or ''}"
        keys = [self._stream(queue), self._job(job_id), idem, self._later(queue)]
        args: list[Any] = [
            policy.max_length,
            job_id,
            payload,
            _ms(policy.idempotency_ttl),
            "1" if idempotency_key is not None else "0",
            queue,
            fingerprint,
            owner or "",
        ]
        return self._enqueues.submit(
            keys, args, functools.partial(_enqueued, queue, policy.max_length, fingerprint)
        )

    async def get(self, job_id: str) -> JobRecord | None:
        fields: Any = await self._conn.call(lambda r: r.hgetall(self._job(job_id)))
        if not fields:
            return None
        f = {k.decode(): v for k, v in fields.items()}
        reason = f.get("reason")
        return JobRecord(
            id=job_id,
            queue=_text(f.get("queue", b"")),
            status=JobStatus(_text(f["status"])),
            attempt=int(f.get("attempt", 0)),
            reason=_text(reason) if reason is not None else None,
            result=f.get("result"),
            created_at=float(f.get("created", 0)),
            updated_at=float(f.get("updated", 0)),
            owner=_text(f["owner"]) if "owner" in f else None,
        )

    async def claim(
        self, queue: str, consumer: str, policy: QueuePolicy, *, block: float = 1.0
    ) -> Job | None:
        stream = self._stream(queue)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block
        promote_keys = [stream, self._later(queue)]
        promote_args: list[Any] = [self._prefix, _REPLAY_BATCH]
        while True:
            await self._conn.call(
                lambda r: self._promote(keys=promote_keys, args=promote_args, client=r)
            )

            async def reclaim(r: Redis) -> Entry | None:
                return await _with_group(r, stream, lambda: _reclaim(r, stream, consumer, policy))

            entry = await self._conn.call(reclaim)
            if entry is None:
                # Wake often enough to look for silent deliveries again.
                poll = min(1.0, max(0.01, policy.ack_timeout / 4))
                wait = min(max(0.0, deadline - loop.time()), poll)

                async def read(r: Redis, wait: float = wait) -> Entry | None:
                    return await _with_group(r, stream, lambda: _read(r, stream, consumer, wait))

                entry = await self._conn.call(read, timeout=wait + self._conn.timeout)
            if entry is not None:
                job = await self._begin(queue, entry, policy)
                if job is not None:
                    return job
                continue  # dropped or buried: look again at once
            if loop.time() >= deadline:
                return None

    async def _begin(
        self, queue: str, entry: tuple[str, dict[bytes, bytes]], policy: QueuePolicy
    ) -> Job | None:
        msg, fields = entry
        job_id = _text(fields.get(b"id", b""))
        payload = fields.get(b"payload", b"")
        keys = [self._stream(queue), self._job(job_id), self._dead(queue)]
        args: list[Any] = [
            msg,
            policy.max_attempts,
            silent_reason(policy),
            _ms(policy.result_ttl),
            job_id,
            payload,
        ]
        outcome, attempt = await self._conn.call(
            lambda r: self._start(keys=keys, args=args, client=r)
        )
        if outcome != 1:
            return None
        return Job(job_id, queue, payload, int(attempt), msg)

    async def complete(self, job: Job, result: bytes, policy: QueuePolicy) -> None:
        keys = [self._stream(job.queue), self._job(job.id)]
        args: list[Any] = [job.handle, result, _ms(policy.result_ttl), job.queue]
        await self._conn.call(lambda r: self._complete(keys=keys, args=args, client=r))

    async def fail(
        self, job: Job, reason: str, policy: QueuePolicy, *, retry: bool = True, delay: float = 0.0
    ) -> None:
        keys = [
            self._stream(job.queue),
            self._job(job.id),
            self._dead(job.queue),
            self._later(job.queue),
        ]
        args: list[Any] = [
            job.handle,
            reason,
            "1" if retry else "0",
            policy.max_attempts,
            _ms(policy.result_ttl),
            job.id,
            job.payload,
            int(delay * 1000) if delay > 0 else 0,
        ]
        await self._conn.call(lambda r: self._fail(keys=keys, args=args, client=r))

    async def cancel(self, job_id: str, policy: QueuePolicy) -> bool:
        args: list[Any] = [self._prefix, _ms(policy.result_ttl), job_id]
        done = await self._conn.call(
            lambda r: self._cancel(keys=[self._job(job_id)], args=args, client=r)
        )
        return bool(done)

    async def replay_dead(self, queue: str) -> int:
        keys = [self._stream(queue), self._dead(queue)]
        args: list[Any] = [self._prefix, queue, _REPLAY_BATCH]
        total = 0
        while True:  # one batch per call, so no call holds Redis for long
            moved = int(
                await self._conn.call(lambda r: self._replay(keys=keys, args=args, client=r))
            )
            total += moved
            if moved < _REPLAY_BATCH:
                return total

    async def stats(self, queue: str) -> QueueStats:
        keys = [self._stream(queue), self._dead(queue), self._later(queue)]
        depth, in_flight, oldest_ms, dead = await self._conn.call(
            lambda r: self._stats(keys=keys, client=r)
        )
        oldest = max(0, int(oldest_ms)) / 1000 if int(oldest_ms) >= 0 else 0.0
        return QueueStats(int(depth), int(in_flight), oldest, int(dead))


async def _with_group(
    r: Redis, stream: str, read: Callable[[], Awaitable[Entry | None]]
) -> Entry | None:
    """Run `read()`; if the group is missing (a Redis restarted without its data), make it."""
    try:
        return await read()
    except redis_errors.ResponseError as e:
        if "NOGROUP" not in str(e):
            raise
    try:
        await r.xgroup_create(stream, GROUP, id="0", mkstream=True)
    except redis_errors.ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise
    return await read()


async def _reclaim(r: Redis, stream: str, consumer: str, policy: QueuePolicy) -> Entry | None:
    """A delivery whose worker has been silent for `ack_timeout`, now ours."""
    reply: Any = await r.xautoclaim(
        stream, GROUP, consumer, min_idle_time=_ms(policy.ack_timeout), start_id="0-0", count=1
    )
    for msg, fields in reply[1] if len(reply) > 1 else []:
        if fields:  # None: deleted meanwhile (Redis < 7 still lists it)
            return _text(msg), fields
    return None


async def _read(r: Redis, stream: str, consumer: str, wait: float) -> Entry | None:
    block = int(wait * 1000)
    reply: Any = await r.xreadgroup(
        GROUP, consumer, {stream: ">"}, count=1, block=block if block > 0 else None
    )
    for _name, entries in reply or []:
        for msg, fields in entries:
            return _text(msg), fields
    return None


def _enqueued(queue: str, max_length: int, fingerprint: str, reply: Any) -> Enqueued:
    """The ENQUEUE script's reply as the caller's answer."""
    outcome, known = reply
    if outcome == -1:
        raise QueueFull(queue, max_length)
    if outcome == 0:
        known_id, _, known_print = _text(known).partition("|")
        return repeated(known_id, known_print, fingerprint)
    return Enqueued(_text(known), created=True)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
