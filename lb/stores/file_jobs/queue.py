"""FileJobQueue: the JobQueue protocol on a job directory (the layout: lb.stores.file_jobs).

Each call is a sequence of the moves that lb.stores.file_jobs.tickets settles races with: the
process that wins a ticket's rename owns the job and writes its record (the record first,
then the move). `claim` renames the oldest queued ticket into running/ after taking over any
delivery whose worker died or went silent. `fail` first renames its delivery to a new name (if
that fails, another worker took the job over: nothing to do), then writes the record, then
moves the ticket to queued/, delayed/ or dead/. `complete` writes the result and the record,
then removes its ticket (a job taken over meanwhile is then dropped by whoever claimed it, as
with Redis). `cancel` removes a waiting ticket (unlink, which again only one process wins).

Blocking. Every call is a few syscalls on tiny files, made directly on the event loop: tens
of microseconds, less than parsing a request (payloads and results over `files.LARGE` are
copied in a thread). Waiting for a job is polling (every `POLL` seconds) plus a wakeup for
jobs queued by this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

from lb.stores.base import Enqueued, Job, JobRecord, JobStatus, QueuePolicy, QueueStats
from lb.stores.errors import QueueFull
from lb.stores.file_jobs.files import listdir, remove, remove_stale_temporaries, unavailable
from lb.stores.file_jobs.idempotency import IdempotencyKeys
from lb.stores.file_jobs.records import Record, Records, job_record, new_record
from lb.stores.file_jobs.tickets import Tickets, job_of, ticket_name
from lb.stores.job_rules import WAITING, new_job_id, repeated, silent_reason

POLL = 0.05  # seconds between looks at the queue while a claim waits
_WAITING = tuple(status.value for status in WAITING)  # as records hold them


class FileJobQueue:
    def __init__(self, root: str, *, pid: int | None = None) -> None:
        """The queue in directory `root` (made if missing). `pid`: the process named in this
        instance's deliveries [this one] (tests fake a dead claimer with it)."""
        self.root = root
        pid = os.getpid() if pid is None else pid
        self._records = Records(root, pid)
        self._idem = IdempotencyKeys(root, pid)
        self._tickets = Tickets(root, pid)
        self._wakeup: dict[str, asyncio.Event] = {}

    def __repr__(self) -> str:
        return f"<FileJobQueue {self.root}>"

    # -- the protocol ----------------------------------------------------------------------------

    @unavailable
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
        q = self._tickets.queue_dir(queue)
        idem = None
        if idempotency_key is not None:
            idem = self._idem.path(os.path.basename(q), idempotency_key)
            known = self._idem.read(idem)
            if known is not None:
                return repeated(known[0], known[1], fingerprint)
        if self._tickets.count(q, "queued", "running", "delayed") >= policy.max_length:
            raise QueueFull(queue, policy.max_length)
        job_id = new_job_id()
        now = time.time()
        if idem is not None:
            expires = now + policy.idempotency_ttl
            while not self._idem.create(idem, job_id, expires, fingerprint):
                known = self._idem.read(idem)  # another process queued it first
                if known is not None:
                    return repeated(known[0], known[1], fingerprint)
            self._records.mark_expiry(expires, self._idem.marker(idem))
        ticket = ticket_name(time.time_ns(), job_id)
        self._records.write(job_id, new_record(queue, ticket, owner, now))
        await self._tickets.add(q, ticket, payload)
        self._wake(queue)
        return Enqueued(job_id, created=True)

    @unavailable
    async def get(self, job_id: str) -> JobRecord | None:
        record = self._records.read(job_id)
        if record is None:
            return None
        result = None
        if record["status"] == JobStatus.DONE.value:
            result = await self._records.read_result(job_id)
            if result is None:  # removed by an expiry after the record was read
                return None
        return job_record(job_id, record, result)

    @unavailable
    async def claim(
        self, queue: str, consumer: str, policy: QueuePolicy, *, block: float = 1.0
    ) -> Job | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block
        wakeup = self._wakeup.setdefault(queue, asyncio.Event())
        while True:
            wakeup.clear()
            job = self._take(queue, policy)
            if job is not None:
                return job
            left = deadline - loop.time()
            if left <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), min(left, POLL))

    @unavailable
    async def complete(self, job: Job, result: bytes, policy: QueuePolicy) -> None:
        q = self._tickets.queue_dir(job.queue)
        record = self._records.read(job.id, expire=False)
        if record is not None:  # (None: expired while it ran, nobody can ask for it)
            await self._records.write_result(job.id, result)  # before the record says done
            record.update(status=JobStatus.DONE.value, reason=None, ticket=None)
            self._records.finish(job.id, record, policy)
        self._tickets.done(q, job.handle)

    @unavailable
    async def fail(
        self, job: Job, reason: str, policy: QueuePolicy, *, retry: bool = True, delay: float = 0.0
    ) -> None:
        q = self._tickets.queue_dir(job.queue)
        mine = self._tickets.redeliver(q, job.handle)
        if mine is None:
            return  # another worker took it over after ack_timeout: its delivery now
        record = self._records.read(job.id, expire=False)
        if record is None:  # its record is gone (expired while it ran): nothing to keep
            remove(mine)
            return
        record["reason"] = reason
        if retry and int(record["attempt"]) < policy.max_attempts:
            if delay > 0:
                where, key = "delayed", time.time_ns() + int(delay * 1e9)
            else:
                where, key = "queued", time.time_ns()
            ticket = ticket_name(key, job.id)
            record.update(status=JobStatus.RETRYING.value, updated=time.time(), ticket=ticket)
            self._records.write(job.id, record)
            self._tickets.put(q, mine, where, ticket)
            self._wake(job.queue)
        else:
            self._bury(q, mine, job.id, record, reason, policy)

    @unavailable
    async def cancel(self, job_id: str, policy: QueuePolicy) -> bool:
        for _ in range(3):  # the ticket may move (a retry queued again) while we look
            record = self._records.read(job_id)
            if record is None or record["status"] not in _WAITING:
                return False
            q = self._tickets.queue_dir(record["queue"])
            if self._tickets.cancel(q, record["ticket"]):
                record.update(status=JobStatus.CANCELLED.value, ticket=None)
                self._records.finish(job_id, record, policy)
                return True
        return False

    @unavailable
    async def replay_dead(self, queue: str) -> int:
        q = self._tickets.queue_dir(queue)
        count = 0
        for name in listdir(os.path.join(q, "dead")):
            job_id = name.partition("-")[2]
            mine = self._tickets.take_dead(q, name)
            if mine is None:
                continue  # another replay took it
            now = time.time()
            record = self._records.read(job_id, expire=False) or {"created": now, "owner": None}
            ticket = ticket_name(time.time_ns(), job_id)
            record.update(
                queue=queue,
                status=JobStatus.QUEUED.value,
                attempt=0,
                reason=None,
                updated=now,
                ticket=ticket,
                expires=None,
            )
            self._records.remove_result(job_id)
            self._records.write(job_id, record)
            self._tickets.put(q, mine, "queued", ticket)
            count += 1
        if count:
            self._wake(queue)
        return count

    @unavailable
    async def stats(self, queue: str) -> QueueStats:
        q = self._tickets.queue_dir(queue)
        names = self._tickets.names
        queued = names(os.path.join(q, "queued"))
        running = names(os.path.join(q, "running"))
        keys = [int(n.partition("-")[0]) for n in (*queued[:1], *running) if n[:1].isdigit()]
        oldest = max(0.0, time.time() - min(keys) / 1e9) if keys else 0.0
        depth = len(queued) + len(names(os.path.join(q, "delayed")))
        return QueueStats(depth, len(running), oldest, len(names(os.path.join(q, "dead"))))

    # -- housekeeping (the supervisor's) ---------------------------------------------------------

    def sweep(self) -> int:
        """Remove the records, results and idempotency keys past their expiry, and temporary
        files a dead process left; how many records and keys. Reads only what is due."""
        now = time.time()
        removed = 0
        for path, kind, what in self._records.due_markers(now):
            if kind == "job":
                gone = self._records.remove_expired(what, now)
            else:
                gone = kind == "idem" and self._idem.expire(what)
            removed += gone
            remove(path)
        records = self._records
        remove_stale_temporaries(
            [
                records.directory,
                records.expiry,
                *self._tickets.queue_dirs(),
                *self._idem.directories(),
            ],
            now,
        )
        return removed

    # -- internals -------------------------------------------------------------------------------

    def _take(self, queue: str, policy: QueuePolicy) -> Job | None:
        """The next delivery to run, started; dead or cancelled ones are dropped on the way."""
        tickets = self._tickets
        q = tickets.queue_dir(queue)
        tickets.promote_due(q)
        while True:
            mine = tickets.reclaim(q, policy)
            if mine is None:
                mine = tickets.next_queued(q)
            if mine is None:
                return None
            job = self._start(q, queue, mine, policy)
            if job is not None:
                return job

    def _start(self, q: str, queue: str, mine: str, policy: QueuePolicy) -> Job | None:
        """Run the delivery `mine` (a path in running/, ours), or drop or bury it: None."""
        handle = os.path.basename(mine)
        job_id = job_of(handle)
        record = self._records.read(job_id, expire=False)
        if record is None or record["status"] in (
            JobStatus.CANCELLED.value,
            JobStatus.DONE.value,
        ):
            remove(mine)
            return None
        if record["status"] == JobStatus.FAILED.value:  # buried by a process that died then
            self._tickets.bury(q, mine, job_id)
            return None
        if int(record["attempt"]) >= policy.max_attempts:  # its workers kept dying on it
            self._bury(q, mine, job_id, record, silent_reason(policy), policy)
            return None
        try:
            with open(mine, "rb") as f:  # (at most the queue's max_body_size, 1MiB by default)
                payload = f.read()
        except FileNotFoundError:  # (taken over already: a worker paused past ack_timeout)
            return None
        record["attempt"] = int(record["attempt"]) + 1
        record.update(status=JobStatus.RUNNING.value, updated=time.time(), ticket=None)
        self._records.write(job_id, record)
        return Job(job_id, queue, payload, int(record["attempt"]), handle)

    def _bury(
        self, q: str, mine: str, job_id: str, record: Record, reason: str, policy: QueuePolicy
    ) -> None:
        record.update(status=JobStatus.FAILED.value, reason=reason, ticket=None)
        self._records.finish(job_id, record, policy)
        self._tickets.bury(q, mine, job_id)

    def _wake(self, queue: str) -> None:
        event = self._wakeup.get(queue)
        if event is not None:
            event.set()
