"""JobQueue in this process, with the Redis queue's semantics (lb.stores.redis_jobs).

Theory of operation. Each queue holds `waiting` deliveries (FIFO) and `in_flight` ones (given
to a worker, not yet acknowledged). A delivery is a handle naming one job; a job retried gets
a new handle. `claim` first takes an in-flight delivery whose worker has been silent for
`ack_timeout` (as XAUTOCLAIM does), then the oldest waiting one. A retry with a backoff waits
in `delayed` (a heap by due time) and joins `waiting` once due. Records and idempotency keys
expire lazily, from a heap checked on every call: no background task.

Jobs live as long as the process; they are lost with it (configure `redis:` for durability).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from lb.stores.base import Enqueued, Job, JobRecord, JobStatus, QueuePolicy, QueueStats
from lb.stores.errors import QueueFull
from lb.stores.job_rules import WAITING, new_job_id, repeated, silent_reason


@dataclass(slots=True)
class _Record:
    id: str
    queue: str
    payload: bytes
    status: JobStatus
    created_at: float
    updated_at: float
    attempt: int = 0
    reason: str | None = None
    result: bytes | None = None
    handle: str | None = None  # its delivery while queued or running
    owner: str | None = None
    expires_at: float | None = None  # monotonic; None while the job is live


@dataclass(slots=True)
class _Delivery:
    job_id: str
    queued_at: float  # monotonic
    consumer: str = ""
    delivered_at: float = 0.0


@dataclass(slots=True)
class _Dead:
    job_id: str
    payload: bytes
    reason: str


@dataclass(slots=True)
class _Queue:
    waiting: OrderedDict[str, _Delivery] = field(default_factory=OrderedDict)
    in_flight: dict[str, _Delivery] = field(default_factory=dict)
    dead: list[_Dead] = field(default_factory=list)
    delayed: list[tuple[float, str]] = field(default_factory=list)  # (due, job id), a heap
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryJobQueue:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall = wall_clock
        self._queues: dict[str, _Queue] = {}
        self._records: dict[str, _Record] = {}
        # (queue, key) -> (job id, expiry, fingerprint)
        self._idempotency: dict[tuple[str, str], tuple[str, float, str]] = {}
        self._expiries: list[tuple[float, str]] = []  # (when, job id) for finished records
        self._idem_expiries: list[tuple[float, tuple[str, str]]] = []
        self._handles = itertools.count(1)

    async def enqueue(
        self,
        queue: str,
        payload: bytes,
        policy: QueuePolicy,
        *,
        idempotency_key: str | None = None,
        fingerprint: str = "",
        owner: str | None = None,
    ) -> Enqueued:
        now = self._expire()
        if idempotency_key is not None:
            known = self._idempotency.get((queue, idempotency_key))
            if known is not None:
                return repeated(known[0], known[2], fingerprint)
        q = self._queue(queue)
        if len(q.waiting) + len(q.in_flight) + len(q.delayed) >= policy.max_length:
            raise QueueFull(queue, policy.max_length)
        job_id = new_job_id()
        wall = self._wall()
        record = _Record(job_id, queue, bytes(payload), JobStatus.QUEUED, wall, wall)
        record.owner = owner
        self._records[job_id] = record
        self._add_waiting(q, record, now)
        if idempotency_key is not None:
            expires = now + policy.idempotency_ttl
            self._idempotency[(queue, idempotency_key)] = (job_id, expires, fingerprint)
            heapq.heappush(self._idem_expiries, (expires, (queue, idempotency_key)))
        return Enqueued(job_id, created=True)

    async def get(self, job_id: str) -> JobRecord | None:
        self._expire()
        r = self._records.get(job_id)
        if r is None:
            return None
        return JobRecord(
            r.id,
            r.queue,
            r.status,
            r.attempt,
            r.reason,
            r.result,
            r.created_at,
            r.updated_at,
            r.owner,
        )

    async def claim(
        self, queue: str, consumer: str, policy: QueuePolicy, *, block: float = 1.0
    ) -> Job | None:
        q = self._queue(queue)
        deadline = self._clock() + block
        while True:
            now = self._expire()
            job = self._take(q, consumer, policy, now)
            if job is not None:
                return job
            if now >= deadline:
                return None
            wait = deadline - now
            if q.in_flight:  # wake when the oldest silent delivery may be reclaimed
                oldest = min(d.delivered_at for d in q.in_flight.values())
                wait = min(wait, max(0.0, oldest + policy.ack_timeout - now))
            if q.delayed:  # or when the next retry is due
                wait = min(wait, max(0.0, q.delayed[0][0] - now))
            q.wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(q.wakeup.wait(), wait)

    async def complete(self, job: Job, result: bytes, policy: QueuePolicy) -> None:
        self._queue(job.queue).in_flight.pop(job.handle, None)
        record = self._records.get(job.id)
        if record is None:
            return
        record.status, record.result, record.handle = JobStatus.DONE, bytes(result), None
        self._finish(record, policy)

    async def fail(
        self, job: Job, reason: str, policy: QueuePolicy, *, retry: bool = True, delay: float = 0.0
    ) -> None:
        q = self._queue(job.queue)
        if q.in_flight.pop(job.handle, None) is None:
            return  # already acknowledged (by a worker this delivery was reclaimed for)
        record = self._records.get(job.id)
        if record is None:
            return
        record.reason = reason
        if retry and record.attempt < policy.max_attempts:
            record.status = JobStatus.RETRYING
            record.updated_at = self._wall()
            if delay > 0:
                record.handle = None
                heapq.heappush(q.delayed, (self._clock() + delay, record.id))
            else:
                self._add_waiting(q, record, self._clock())
        else:
            self._bury(q, record, reason, policy)

    async def cancel(self, job_id: str, policy: QueuePolicy) -> bool:
        self._expire()
        record = self._records.get(job_id)
        if record is None or record.status not in WAITING:
            return False
        if record.handle is not None:
            self._queue(record.queue).waiting.pop(record.handle, None)
        # (a cancelled job still in `delayed` is dropped when it comes due)
        record.status, record.handle = JobStatus.CANCELLED, None
        self._finish(record, policy)
        return True

    async def replay_dead(self, queue: str) -> int:
        q = self._queue(queue)
        dead, q.dead = q.dead, []
        now, wall = self._clock(), self._wall()
        for item in dead:
            record = self._records.get(item.job_id)
            if record is None:  # its record expired: the job is queued again under its id
                record = _Record(item.job_id, queue, item.payload, JobStatus.QUEUED, wall, wall)
                self._records[item.job_id] = record
            record.status, record.attempt, record.reason, record.result = (
                JobStatus.QUEUED,
                0,
                None,
                None,
            )
            record.expires_at = None
            self._add_waiting(q, record, now)
        return len(dead)

    async def stats(self, queue: str) -> QueueStats:
        now = self._expire()
        q = self._queue(queue)
        queued_at = [d.queued_at for d in q.waiting.values()]
        queued_at += [d.queued_at for d in q.in_flight.values()]
        oldest = now - min(queued_at) if queued_at else 0.0
        depth = len(q.waiting) + len(q.delayed)
        return QueueStats(depth, len(q.in_flight), oldest, len(q.dead))

    # -- internals -----------------------------------------------------------------------------

    def _queue(self, name: str) -> _Queue:
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = _Queue()
        return q

    def _add_waiting(self, q: _Queue, record: _Record, now: float) -> None:
        handle = str(next(self._handles))
        record.handle = handle
        q.waiting[handle] = _Delivery(record.id, now)
        q.wakeup.set()

    def _take(self, q: _Queue, consumer: str, policy: QueuePolicy, now: float) -> Job | None:
        """The next delivery to run, started; dead or cancelled ones are dropped on the way."""
        while q.delayed and q.delayed[0][0] <= now:  # retries whose backoff is over
            _, job_id = heapq.heappop(q.delayed)
            record = self._records.get(job_id)
            if record is not None and record.status is JobStatus.RETRYING:
                self._add_waiting(q, record, now)
        while True:
            silent = [
                h for h, d in q.in_flight.items() if now - d.delivered_at >= policy.ack_timeout
            ]
            if silent:
                handle = min(silent, key=lambda h: q.in_flight[h].delivered_at)
                delivery = q.in_flight[handle]
            elif q.waiting:
                handle, delivery = q.waiting.popitem(last=False)
                q.in_flight[handle] = delivery
            else:
                return None
            delivery.consumer, delivery.delivered_at = consumer, now
            record = self._records.get(delivery.job_id)
            if record is None or record.status in (JobStatus.CANCELLED, JobStatus.DONE):
                q.in_flight.pop(handle, None)
                continue
            if record.attempt >= policy.max_attempts:  # its workers kept dying on it
                q.in_flight.pop(handle, None)
                self._bury(q, record, silent_reason(policy), policy)
                continue
            record.attempt += 1
            record.status, record.updated_at = JobStatus.RUNNING, self._wall()
            return Job(record.id, record.queue, record.payload, record.attempt, handle)

    def _bury(self, q: _Queue, record: _Record, reason: str, policy: QueuePolicy) -> None:
        record.status, record.reason, record.handle = JobStatus.FAILED, reason, None
        q.dead.append(_Dead(record.id, record.payload, reason))
        self._finish(record, policy)

    def _finish(self, record: _Record, policy: QueuePolicy) -> None:
        record.updated_at = self._wall()
        record.expires_at = self._clock() + policy.result_ttl
        heapq.heappush(self._expiries, (record.expires_at, record.id))

    def _expire(self) -> float:
        now = self._clock()
        while self._expiries and self._expiries[0][0] <= now:
            _, job_id = heapq.heappop(self._expiries)
            record = self._records.get(job_id)
            # A record replayed or finished again since has a later (or no) expiry.
            if record is not None and record.expires_at is not None and record.expires_at <= now:
                del self._records[job_id]
        while self._idem_expiries and self._idem_expiries[0][0] <= now:
            _, key = heapq.heappop(self._idem_expiries)
            known = self._idempotency.get(key)
            if known is not None and known[1] <= now:
                del self._idempotency[key]
        return now
