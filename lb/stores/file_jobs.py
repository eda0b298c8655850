"""JobQueue in a directory: shared by the worker processes of one `lb run` on one machine.

Without `redis:`, the supervisor makes `{run_dir}/jobs` and names it to its workers in
`LB_JOBS_DIR` (lb.stores.bundle); every worker (and the supervisor, for the admin API and the
`lb_queue_*` gauges) opens the same directory, so a job URL answers on any worker's connection.

Layout, under the root R:
  R/jobs/{id}.json          the job's record {queue, status, attempt, reason, created, updated,
                            owner, ticket, expires}: replaced whole (write a temporary file, then
                            `os.replace`), so a reader sees the old record or the new one
  R/jobs/{id}.result        the stored response, once done (written before the record says so)
  R/q/{queue}/queued/{key}-{id}   a ticket per job waiting, holding its payload; `key` is a
                            zero-padded ns timestamp, so names sort in FIFO order
  R/q/{queue}/delayed/{due}-{id}  a retry waiting out its backoff (`due`: ns timestamp)
  R/q/{queue}/running/{key}-{id}.{pid}.{rand}   a delivery: the claimer's pid, and a random
                            part that makes each delivery's name (`Job.handle`) unique
  R/q/{queue}/dead/{key}-{id}     the dead letters (the payload stays in the ticket)
  R/idem/{queue}/{sha256(key)}    an idempotency key: "{id}|{expires}|{fingerprint}",
                            created with O_EXCL (one job per key, whoever races)
  R/expiry/{when}.{rand}    "job {id}" or "idem {path}": what `sweep` removes once due

Ownership. A job's ticket moves between the subdirectories by `os.rename`, which exactly one
process wins; the winner owns the job until it moves the ticket on, and only the owner writes
its record (the record first, then the move). `claim` renames the oldest queued ticket into
running/ (touching it first: a rename keeps the mtime, and running/'s mtimes are the delivery
times); a running ticket whose pid is gone (`kill(pid, 0)`), or whose mtime is older than
`ack_timeout`, is renamed by the next `claim` to its own name, as a new attempt. `fail` first
renames its delivery to a new name (if that fails, another worker took the job over: nothing
to do), then writes the record, then moves the ticket to queued/, delayed/ or dead/. `complete`
writes the result and the record, then removes its ticket (a job taken over meanwhile is then
dropped by whoever claimed it, as with Redis). `cancel` removes a waiting ticket (unlink, which
again only one process wins). Due retries are renamed from delayed/ to queued/ by `claim`.

Expiry. Finished records and idempotency keys carry their expiry: `get` and `enqueue` treat an
expired one as absent (and remove it); `sweep` (the supervisor calls it every few seconds)
removes the ones nobody asked for, from the due markers in R/expiry, reading nothing else.

Counting. `max_length` and `stats` count directory entries; a directory's listing is cached
with its mtime, and trusted only once that mtime is `_SETTLED` old (timestamps are coarse, so a
change within the same tick may not move it).

Blocking. Every call is a few syscalls on tiny files in a directory under /tmp (no fsync: the
jobs live as long as the `lb run` that owns the directory), made directly on the event loop:
tens of microseconds, less than parsing a request (payloads and results over `_LARGE` are
copied in a thread). A listing is one `scandir` of at most
`max_length` names. Waiting for a job is polling (every `POLL` seconds) plus a wakeup for jobs
queued by this process. An OSError other than the expected races (ENOENT, EEXIST) raises
StoreUnavailable (e.g. the disk is full), so offload answers 503 queue_unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from lb.stores.base import Enqueued, Job, JobRecord, JobStatus, QueuePolicy, QueueStats
from lb.stores.errors import QueueFull, StoreUnavailable

JOBS_DIR_ENV = "LB_JOBS_DIR"  # set by the supervisor of `lb run` for its workers
POLL = 0.05  # seconds between looks at the queue while a claim waits
_SETTLED = 0.1  # a directory listing is reused while its mtime is at least this old
_LARGE = 256 * 1024  # bytes: a payload or result larger than this is copied in a thread
_STALE_TMP = 60.0  # seconds: a temporary file left by a process that died is removed by sweep
_ID = re.compile(r"^[0-9A-Za-z]{1,64}$")
_SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
_FINISHED = (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)

P = ParamSpec("P")
T = TypeVar("T")


def _unavailable(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """An unexpected OSError (disk full, directory removed) as StoreUnavailable."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except OSError as e:
            raise StoreUnavailable(f"job directory: {e}") from e

    return wrapper


class FileJobQueue:
    def __init__(self, root: str) -> None:
        self.root = root
        self._jobs = os.path.join(root, "jobs")
        self._expiry = os.path.join(root, "expiry")
        for path in (self._jobs, self._expiry, os.path.join(root, "q"), os.path.join(root, "idem")):
            os.makedirs(path, exist_ok=True)
        self._pid = os.getpid()
        self._listings: dict[str, tuple[int, list[str]]] = {}  # dir -> (mtime_ns, names)
        self._made: set[str] = set()  # queue directories known to exist
        self._wakeup: dict[str, asyncio.Event] = {}

    def __repr__(self) -> str:
        return f"<FileJobQueue {self.root}>"

    # -- the protocol --------------------------------------------------------------------------

    @_unavailable
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
        q = self._queue_dir(queue)
        idem = None
        if idempotency_key is not None:
            idem = self._idem_path(queue, idempotency_key)
            known = self._read_idem(idem)
            if known is not None:
                return Enqueued(known[0], created=False, conflict=known[1] != fingerprint)
        if self._count(q, "queued", "running", "delayed") >= policy.max_length:
            raise QueueFull(queue, policy.max_length)
        job_id = secrets.token_hex(16)  # 128 random bits: a job URL is its only secret
        now = time.time()
        if idem is not None:
            expires = now + policy.idempotency_ttl
            content = f"{job_id}|{expires!r}|{fingerprint}".encode()
            while not self._create_exclusive(idem, content):
                known = self._read_idem(idem)  # another process queued it first
                if known is not None:
                    return Enqueued(known[0], created=False, conflict=known[1] != fingerprint)
            self._mark_expiry(expires, f"idem {os.path.relpath(idem, self.root)}")
        ticket = f"{time.time_ns():020d}-{job_id}"
        record = {
            "queue": queue,
            "status": JobStatus.QUEUED.value,
            "attempt": 0,
            "reason": None,
            "created": now,
            "updated": now,
            "owner": owner,
            "ticket": ticket,
            "expires": None,
        }
        self._write_record(job_id, record)
        tmp = self._tmp_path(q)
        await _write_bytes(tmp, payload)
        os.rename(tmp, os.path.join(q, "queued", ticket))
        self._wake(queue)
        return Enqueued(job_id, created=True)

    @_unavailable
    async def get(self, job_id: str) -> JobRecord | None:
        record = self._read_record(job_id)
        if record is None:
            return None
        result = None
        if record["status"] == JobStatus.DONE.value:
            try:
                result = await _read_bytes(self._result_path(job_id))
            except FileNotFoundError:  # removed by an expiry after the record was read
                return None
        return JobRecord(
            job_id,
            record["queue"],
            JobStatus(record["status"]),
            int(record["attempt"]),
            record["reason"],
            result,
            float(record["created"]),
            float(record["updated"]),
            record.get("owner"),
        )

    @_unavailable
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

    @_unavailable
    async def complete(self, job: Job, result: bytes, policy: QueuePolicy) -> None:
        q = self._queue_dir(job.queue)
        record = self._read_record(job.id, expire=False)
        if record is not None:  # (None: expired while it ran, nobody can ask for it)
            tmp = self._tmp_path(self._jobs)
            await _write_bytes(tmp, result)
            os.replace(tmp, self._result_path(job.id))  # the result before the record says done
            record.update(status=JobStatus.DONE.value, reason=None, ticket=None)
            self._finish(job.id, record, policy)
        if os.sep not in job.handle:
            _remove(os.path.join(q, "running", job.handle))  # (gone: taken over meanwhile)

    @_unavailable
    async def fail(
        self, job: Job, reason: str, policy: QueuePolicy, *, retry: bool = True, delay: float = 0.0
    ) -> None:
        q = self._queue_dir(job.queue)
        mine = self._redeliver(q, job.handle)
        if mine is None:
            return  # another worker took it over after ack_timeout: its delivery now
        record = self._read_record(job.id, expire=False)
        if record is None:  # its record is gone (expired while it ran): nothing to keep
            _remove(mine)
            return
        record["reason"] = reason
        if retry and int(record["attempt"]) < policy.max_attempts:
            if delay > 0:
                where, key = "delayed", time.time_ns() + int(delay * 1e9)
            else:
                where, key = "queued", time.time_ns()
            ticket = f"{key:020d}-{job.id}"
            record.update(status=JobStatus.RETRYING.value, updated=time.time(), ticket=ticket)
            self._write_record(job.id, record)
            os.rename(mine, os.path.join(q, where, ticket))
            self._wake(job.queue)
        else:
            self._bury(q, mine, job.id, record, reason, policy)

    @_unavailable
    async def cancel(self, job_id: str, policy: QueuePolicy) -> bool:
        for _ in range(3):  # the ticket may move (a retry queued again) while we look
            record = self._read_record(job_id)
            if record is None or record["status"] not in (
                JobStatus.QUEUED.value,
                JobStatus.RETRYING.value,
            ):
                return False
            q = self._queue_dir(record["queue"])
            ticket = record["ticket"]
            # delayed/ first: `claim` moves due retries from there to queued/, never back.
            if _remove(os.path.join(q, "delayed", ticket)) or _remove(
                os.path.join(q, "queued", ticket)
            ):
                record.update(status=JobStatus.CANCELLED.value, ticket=None)
                self._finish(job_id, record, policy)
                return True
        return False

    @_unavailable
    async def replay_dead(self, queue: str) -> int:
        q = self._queue_dir(queue)
        count = 0
        for name in _listdir(os.path.join(q, "dead")):
            job_id = name.partition("-")[2]
            mine = self._move(q, "dead", name, "running", self._delivery(name))
            if mine is None:
                continue  # another replay took it
            now = time.time()
            record = self._read_record(job_id, expire=False) or {"created": now, "owner": None}
            ticket = f"{time.time_ns():020d}-{job_id}"
            record.update(
                queue=queue,
                status=JobStatus.QUEUED.value,
                attempt=0,
                reason=None,
                updated=now,
                ticket=ticket,
                expires=None,
            )
            _remove(self._result_path(job_id))
            self._write_record(job_id, record)
            os.rename(mine, os.path.join(q, "queued", ticket))
            count += 1
        if count:
            self._wake(queue)
        return count

    @_unavailable
    async def stats(self, queue: str) -> QueueStats:
        q = self._queue_dir(queue)
        queued = self._names(os.path.join(q, "queued"))
        running = self._names(os.path.join(q, "running"))
        keys = [int(n.partition("-")[0]) for n in (*queued[:1], *running) if n[:1].isdigit()]
        oldest = max(0.0, time.time() - min(keys) / 1e9) if keys else 0.0
        depth = len(queued) + len(self._names(os.path.join(q, "delayed")))
        return QueueStats(depth, len(running), oldest, len(self._names(os.path.join(q, "dead"))))

    # -- housekeeping (the supervisor's) -------------------------------------------------------

    def sweep(self) -> int:
        """Remove the records, results and idempotency keys past their expiry, and temporary
        files a dead process left; how many records and keys. Reads only what is due."""
        now = time.time()
        removed = 0
        for name in sorted(_listdir(self._expiry)):
            if name.startswith("."):
                continue
            if int(name.partition(".")[0]) > now * 1e9:
                break
            path = os.path.join(self._expiry, name)
            try:
                with open(path, encoding="utf-8") as f:
                    kind, _, what = f.read().partition(" ")
            except FileNotFoundError:
                continue
            if kind == "job" and _ID.match(what):
                record = self._read_record(what, expire=False)
                if record is not None and _expired(record, now):
                    _remove(self._record_path(what))
                    _remove(self._result_path(what))
                    removed += 1
            elif kind == "idem" and ".." not in what:
                idem = os.path.join(self.root, what)
                if self._read_idem(idem) is None:  # (removes it when expired)
                    removed += 1
            _remove(path)
        for directory in self._tmp_dirs():
            with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
                for entry in entries:
                    if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                        with contextlib.suppress(FileNotFoundError):
                            if now - entry.stat().st_mtime > _STALE_TMP:
                                _remove(entry.path)
        return removed

    # -- internals -----------------------------------------------------------------------------

    def _take(self, queue: str, policy: QueuePolicy) -> Job | None:
        """The next delivery to run, started; dead or cancelled ones are dropped on the way."""
        q = self._queue_dir(queue)
        now_ns = time.time_ns()
        for name in self._names(os.path.join(q, "delayed")):  # retries whose backoff is over
            if int(name.partition("-")[0]) > now_ns:
                break
            self._move(q, "delayed", name, "queued", name)
        while True:
            mine = self._reclaim(q, policy)
            if mine is None:
                mine = self._next_queued(q)
            if mine is None:
                return None
            job = self._start(q, queue, mine, policy)
            if job is not None:
                return job

    def _reclaim(self, q: str, policy: QueuePolicy) -> str | None:
        """A running ticket whose worker is gone or silent for ack_timeout, now ours."""
        running = os.path.join(q, "running")
        names = self._names(running)
        if not names:
            return None
        silent: list[tuple[float, str]] = []
        limit = time.time() - policy.ack_timeout
        for name in names:
            try:
                mtime = os.stat(os.path.join(running, name)).st_mtime
            except FileNotFoundError:
                continue
            if mtime <= limit or not _alive(_pid_of(name)):
                silent.append((mtime, name))
        for _, name in sorted(silent):
            mine = self._move(q, "running", name, "running", self._delivery(name))
            if mine is not None:
                return mine
        return None

    def _next_queued(self, q: str) -> str | None:
        for name in self._names(os.path.join(q, "queued")):
            mine = self._move(q, "queued", name, "running", self._delivery(name))
            if mine is not None:
                return mine
        return None

    def _start(self, q: str, queue: str, mine: str, policy: QueuePolicy) -> Job | None:
        """Run the delivery `mine` (a path in running/, ours), or drop or bury it: None."""
        handle = os.path.basename(mine)
        job_id = handle.partition("-")[2].partition(".")[0]
        record = self._read_record(job_id, expire=False)
        if record is None or record["status"] in (
            JobStatus.CANCELLED.value,
            JobStatus.DONE.value,
        ):
            _remove(mine)
            return None
        if record["status"] == JobStatus.FAILED.value:  # buried by a process that died then
            os.rename(mine, os.path.join(q, "dead", f"{time.time_ns():020d}-{job_id}"))
            return None
        if int(record["attempt"]) >= policy.max_attempts:  # its workers kept dying on it
            reason = f"no acknowledgement within {policy.ack_timeout:g}s"
            self._bury(q, mine, job_id, record, reason, policy)
            return None
        try:
            with open(mine, "rb") as f:  # (at most the queue's max_body_size, 1MiB by default)
                payload = f.read()
        except FileNotFoundError:  # (taken over already: a worker paused past ack_timeout)
            return None
        record["attempt"] = int(record["attempt"]) + 1
        record.update(status=JobStatus.RUNNING.value, updated=time.time(), ticket=None)
        self._write_record(job_id, record)
        return Job(job_id, queue, payload, int(record["attempt"]), handle)

    def _bury(
        self,
        q: str,
        mine: str,
        job_id: str,
        record: dict[str, Any],
        reason: str,
        policy: QueuePolicy,
    ) -> None:
        record.update(status=JobStatus.FAILED.value, reason=reason, ticket=None)
        self._finish(job_id, record, policy)
        os.rename(mine, os.path.join(q, "dead", f"{time.time_ns():020d}-{job_id}"))

    def _finish(self, job_id: str, record: dict[str, Any], policy: QueuePolicy) -> None:
        now = time.time()
        record.update(updated=now, expires=now + policy.result_ttl)
        self._write_record(job_id, record)
        self._mark_expiry(record["expires"], f"job {job_id}")

    def _redeliver(self, q: str, handle: str) -> str | None:
        """Our delivery `handle` under a new name (so a late takeover cannot race the move
        that follows); None when it is no longer ours."""
        if os.sep in handle or handle.startswith("."):
            return None
        return self._move(q, "running", handle, "running", self._delivery(handle))

    def _delivery(self, name: str) -> str:
        """A name in running/ for the ticket `name` (queued/, dead/ or running/ before)."""
        return f"{name.partition('.')[0]}.{self._pid}.{secrets.token_hex(4)}"

    def _move(self, q: str, src: str, name: str, dst: str, new: str) -> str | None:
        """Rename q/src/name to q/dst/new, touched (its mtime: when it got there); the new
        path, or None when another process moved or removed it first."""
        old = os.path.join(q, src, name)
        path = os.path.join(q, dst, new)
        try:
            os.utime(old)
            os.rename(old, path)
        except FileNotFoundError:
            return None
        return path

    def _names(self, directory: str) -> list[str]:
        """The sorted entries of `directory` (temporary files left out), cached by mtime."""
        try:
            mtime = os.stat(directory).st_mtime_ns
        except FileNotFoundError:
            return []
        cached = self._listings.get(directory)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        names = sorted(n for n in _listdir(directory) if not n.startswith("."))
        if time.time_ns() - mtime >= _SETTLED * 1e9:
            self._listings[directory] = (mtime, names)
        else:
            self._listings.pop(directory, None)
        return names

    def _count(self, q: str, *subdirs: str) -> int:
        return sum(len(self._names(os.path.join(q, sub))) for sub in subdirs)

    def _queue_dir(self, queue: str) -> str:
        name = queue if _SAFE.match(queue) else "~" + hashlib.sha256(queue.encode()).hexdigest()
        q = os.path.join(self.root, "q", name)
        if q not in self._made:
            for sub in ("queued", "running", "delayed", "dead"):
                os.makedirs(os.path.join(q, sub), exist_ok=True)
            self._made.add(q)
        return q

    def _tmp_dirs(self) -> list[str]:
        """Where temporary files are made."""
        dirs = [self._jobs, self._expiry]
        for kind in ("q", "idem"):
            base = os.path.join(self.root, kind)
            dirs += [os.path.join(base, name) for name in _listdir(base)]
        return dirs

    def _record_path(self, job_id: str) -> str:
        return os.path.join(self._jobs, f"{job_id}.json")

    def _result_path(self, job_id: str) -> str:
        return os.path.join(self._jobs, f"{job_id}.result")

    def _tmp_path(self, directory: str) -> str:
        return os.path.join(directory, f".{self._pid}.{secrets.token_hex(6)}.tmp")

    def _read_record(self, job_id: str, *, expire: bool = True) -> dict[str, Any] | None:
        if not _ID.match(job_id):
            return None
        try:
            with open(self._record_path(job_id), "rb") as f:
                record: dict[str, Any] = json.loads(f.read())
        except FileNotFoundError:
            return None
        if expire and _expired(record, time.time()):
            return None  # (sweep removes it)
        return record

    def _write_record(self, job_id: str, record: dict[str, Any]) -> None:
        tmp = self._tmp_path(self._jobs)
        _write_file(tmp, json.dumps(record, separators=(",", ":")).encode())
        os.replace(tmp, self._record_path(job_id))

    def _idem_path(self, queue: str, key: str) -> str:
        directory = os.path.join(self.root, "idem", os.path.basename(self._queue_dir(queue)))
        if directory not in self._made:
            os.makedirs(directory, exist_ok=True)
            self._made.add(directory)
        return os.path.join(directory, hashlib.sha256(key.encode()).hexdigest())

    def _read_idem(self, path: str) -> tuple[str, str] | None:
        """(job id, fingerprint) that the key at `path` names; None when absent or expired
        (then removed: moved aside first, so a fresh key made meanwhile is never removed)."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        job_id, _, rest = data.decode().partition("|")
        expires, _, fingerprint = rest.partition("|")
        if float(expires) > time.time():
            return job_id, fingerprint
        aside = self._tmp_path(os.path.dirname(path))
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return None
        with open(aside, "rb") as f:
            moved = f.read()
        if moved == data:
            _remove(aside)
        else:  # a fresh key replaced the expired one meanwhile: put it back
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
            _remove(aside)
        return None

    def _create_exclusive(self, path: str, data: bytes) -> bool:
        """Make `path` hold `data` unless it exists: written aside, then linked (link(2), as
        O_EXCL, fails if the name exists; and the file appears whole)."""
        tmp = self._tmp_path(os.path.dirname(path))
        _write_file(tmp, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            _remove(tmp)
        return True

    def _mark_expiry(self, when: float, what: str) -> None:
        tmp = self._tmp_path(self._expiry)
        _write_file(tmp, what.encode())
        os.rename(tmp, os.path.join(self._expiry, f"{int(when * 1e9):020d}.{secrets.token_hex(4)}"))

    def _wake(self, queue: str) -> None:
        event = self._wakeup.get(queue)
        if event is not None:
            event.set()


async def _write_bytes(path: str, data: bytes) -> None:
    """`_write_file`, in a thread when `data` is large (a result of many megabytes)."""
    if len(data) > _LARGE:
        await asyncio.to_thread(_write_file, path, data)
    else:
        _write_file(path, data)


async def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size > _LARGE:
            return await asyncio.to_thread(f.read)
        return f.read()


def _write_file(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _remove(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _listdir(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


def _expired(record: dict[str, Any], now: float) -> bool:
    expires = record.get("expires")
    return expires is not None and float(expires) <= now


def _pid_of(name: str) -> int:
    parts = name.split(".")
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else 0


def _alive(pid: int) -> bool:
    if pid <= 0:
        return True  # (not ours to judge: the ack_timeout applies)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["JOBS_DIR_ENV", "FileJobQueue"]
