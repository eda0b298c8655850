"""JobQueue on Redis Streams: durable (with the server's AOF), shared by every lb and worker.

Layout, under the configured `key_prefix` P:
  P q:{queue}        a stream of jobs waiting or in flight, entries {id, payload}; one consumer
                     group, `lb`, whose pending list (PEL) is the jobs in flight
  P q:{queue}:dead   the dead letters, entries {id, payload, reason}
  P q:{queue}:later  retries waiting out their backoff: a sorted set of job ids by due time
                     (ms, the server's clock); the job's payload waits in its record meanwhile,
                     and `claim` moves due ones back to the stream first
  P j:{id}           the job's record, a hash {queue, status, attempt, reason, result, created,
                     updated, msg (its stream entry while queued)}; it expires `result_ttl`
                     after the job finished, was cancelled or died
  P i:{queue}:{key}  idempotency key -> "{job id}|{fingerprint}" (`idempotency_ttl`)

Every change of state is one Lua script (atomic, on the server's clock): enqueue checks
`max_length` (XLEN: acknowledged entries are deleted, so it counts waiting and in flight)
before XADD; `complete` writes the result, then XACKs and deletes the entry, in that order, in
one script; a delivery idle for `ack_timeout` is taken over by the next `claim` (XAUTOCLAIM)
and counts as a new attempt. The script bodies are loaded once and run by EVALSHA (redis-py
falls back to EVAL on NOSCRIPT).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from lb.stores.base import Enqueued, Job, JobRecord, JobStatus, QueuePolicy, QueueStats
from lb.stores.errors import QueueFull
from lb.stores.redis_client import RedisConnection

GROUP = "lb"
Entry = tuple[str, dict[bytes, bytes]]  # a stream entry: its id, its fields
_REPLAY_BATCH = 100

_NOW = """
local function now()
  local t = redis.call('TIME')
  return string.format('%d.%06d', t[1], t[2])
end
"""
# KEYS: stream, job, idempotency, later; ARGV: max_length, id, payload, idem_ttl_ms, has_idem,
# queue, fingerprint, owner
_ENQUEUE = (
    _NOW
    + """
if ARGV[5] == '1' then
  local known = redis.call('GET', KEYS[3])
  if known then return {0, known} end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], 'lb', '0', 'MKSTREAM')
end
local length = redis.call('XLEN', KEYS[1]) + redis.call('ZCARD', KEYS[4])
if length >= tonumber(ARGV[1]) then return {-1, ''} end
local msg = redis.call('XADD', KEYS[1], '*', 'id', ARGV[2], 'payload', ARGV[3])
local t = now()
redis.call('HSET', KEYS[2], 'queue', ARGV[6], 'status', 'queued', 'attempt', 0,
  'created', t, 'updated', t, 'msg', msg)
if ARGV[8] ~= '' then redis.call('HSET', KEYS[2], 'owner', ARGV[8]) end
if ARGV[5] == '1' then
  redis.call('SET', KEYS[3], ARGV[2] .. '|' .. ARGV[7], 'PX', ARGV[4])
end
return {1, ARGV[2]}
"""
)
# A delivery arrived: run it, or drop it (cancelled, finished), or bury it (out of attempts).
# KEYS: stream, job, dead; ARGV: msg, max_attempts, reason if buried, result_ttl_ms, id,
# payload. Returns {1, attempt} to run, {0, 0} dropped, {-1, attempt} buried.
_START = (
    _NOW
    + """
local status = redis.call('HGET', KEYS[2], 'status')
if (not status) or status == 'cancelled' or status == 'done' or status == 'failed' then
  redis.call('XACK', KEYS[1], 'lb', ARGV[1])
  redis.call('XDEL', KEYS[1], ARGV[1])
  return {0, 0}
end
local attempt = tonumber(redis.call('HGET', KEYS[2], 'attempt') or '0') + 1
if attempt > tonumber(ARGV[2]) then
  redis.call('XADD', KEYS[3], '*', 'id', ARGV[5], 'payload', ARGV[6], 'reason', ARGV[3])
  redis.call('HSET', KEYS[2], 'status', 'failed', 'reason', ARGV[3], 'updated', now())
  redis.call('HDEL', KEYS[2], 'msg')
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  redis.call('XACK', KEYS[1], 'lb', ARGV[1])
  redis.call('XDEL', KEYS[1], ARGV[1])
  return {-1, attempt - 1}
end
redis.call('HSET', KEYS[2], 'status', 'running', 'attempt', attempt, 'updated', now())
return {1, attempt}
"""
)
# KEYS: stream, job; ARGV: msg, result, result_ttl_ms, queue. The result first, then the ack.
_COMPLETE = (
    _NOW
    + """
redis.call('HSET', KEYS[2], 'queue', ARGV[4], 'status', 'done', 'result', ARGV[2],
  'updated', now())
redis.call('HDEL', KEYS[2], 'msg', 'reason')
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('XACK', KEYS[1], 'lb', ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
"""
)
# KEYS: stream, job, dead, later; ARGV: msg, reason, retry, max_attempts, result_ttl_ms, id,
# payload, delay_ms (0: queued again at once)
_FAIL = (
    _NOW
    + """
if redis.call('XACK', KEYS[1], 'lb', ARGV[1]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[1])
local attempt = tonumber(redis.call('HGET', KEYS[2], 'attempt') or '0')
if ARGV[3] == '1' and attempt < tonumber(ARGV[4]) and tonumber(ARGV[8]) > 0 then
  local t = redis.call('TIME')
  local due = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[8])
  redis.call('ZADD', KEYS[4], due, ARGV[6])
  redis.call('HSET', KEYS[2], 'status', 'retrying', 'reason', ARGV[2], 'updated', now(),
    'payload', ARGV[7])
  redis.call('HDEL', KEYS[2], 'msg')
  return 1
end
if ARGV[3] == '1' and attempt < tonumber(ARGV[4]) then
  local msg = redis.call('XADD', KEYS[1], '*', 'id', ARGV[6], 'payload', ARGV[7])
  redis.call('HSET', KEYS[2], 'status', 'retrying', 'reason', ARGV[2], 'updated', now(),
    'msg', msg)
  return 1
end
redis.call('XADD', KEYS[3], '*', 'id', ARGV[6], 'payload', ARGV[7], 'reason', ARGV[2])
redis.call('HSET', KEYS[2], 'status', 'failed', 'reason', ARGV[2], 'updated', now())
redis.call('HDEL', KEYS[2], 'msg')
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 2
"""
)
# KEYS: job; ARGV: key prefix, result_ttl_ms, id
_CANCEL = (
    _NOW
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'retrying' then return 0 end
local msg = redis.call('HGET', KEYS[1], 'msg')
local stream = ARGV[1] .. 'q:' .. redis.call('HGET', KEYS[1], 'queue')
if msg then
  redis.call('XACK', stream, 'lb', msg)
  redis.call('XDEL', stream, msg)
end
redis.call('ZREM', stream .. ':later', ARGV[3])
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'updated', now())
redis.call('HDEL', KEYS[1], 'msg', 'payload')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
)
# KEYS: stream, dead; ARGV: key prefix, queue, batch. Returns how many it moved.
_REPLAY = (
    _NOW
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], 'lb', '0', 'MKSTREAM')
end
local entries = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', ARGV[3])
local t = now()
for _, entry in ipairs(entries) do
  local f = {}
  for i = 1, #entry[2], 2 do f[entry[2][i]] = entry[2][i + 1] end
  local msg = redis.call('XADD', KEYS[1], '*', 'id', f['id'], 'payload', f['payload'])
  local job = ARGV[1] .. 'j:' .. f['id']
  redis.call('HSETNX', job, 'created', t)
  redis.call('HSET', job, 'queue', ARGV[2], 'status', 'queued', 'attempt', 0, 'updated', t,
    'msg', msg)
  redis.call('HDEL', job, 'reason', 'result')
  redis.call('PERSIST', job)
  redis.call('XDEL', KEYS[2], entry[1])
end
return #entries
"""
)
# Retries whose backoff is over go back to the stream. KEYS: stream, later; ARGV: key prefix,
# batch. Returns how many it moved.
_PROMOTE = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms, 'LIMIT', 0, ARGV[2])
for _, id in ipairs(due) do
  local job = ARGV[1] .. 'j:' .. id
  redis.call('ZREM', KEYS[2], id)
  if redis.call('HGET', job, 'status') == 'retrying' then
    local payload = redis.call('HGET', job, 'payload') or ''
    local msg = redis.call('XADD', KEYS[1], '*', 'id', id, 'payload', payload)
    redis.call('HSET', job, 'msg', msg)
    redis.call('HDEL', job, 'payload')
  end
end
return #due
"""
# KEYS: stream, dead, later. Returns {depth, in flight, oldest age ms (-1: none), dead}.
_STATS = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local depth, pending, oldest = 0, 0, -1
if redis.call('EXISTS', KEYS[1]) == 1 then
  local ok, summary = pcall(redis.call, 'XPENDING', KEYS[1], 'lb')
  if ok then pending = summary[1] end
  depth = redis.call('XLEN', KEYS[1]) - pending
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
  if #first > 0 then
    oldest = now_ms - tonumber(string.match(first[1][1], '^(%d+)'))
  end
end
depth = depth + redis.call('ZCARD', KEYS[3])
return {depth, pending, oldest, redis.call('XLEN', KEYS[2])}
"""


class RedisJobQueue:
    def __init__(self, connection: RedisConnection) -> None:
        self._conn = connection
        self._prefix = connection.prefix
        register = connection.client.register_script
        self._enqueue = register(_ENQUEUE)
        self._start = register(_START)
        self._complete = register(_COMPLETE)
        self._fail = register(_FAIL)
        self._cancel = register(_CANCEL)
        self._replay = register(_REPLAY)
        self._stats = register(_STATS)
        self._promote = register(_PROMOTE)

    def _stream(self, queue: str) -> str:
        return f"{self._prefix}q:{queue}"

    def _dead(self, queue: str) -> str:
        return f"{self._prefix}q:{queue}:dead"

    def _later(self, queue: str) -> str:
        return f"{self._prefix}q:{queue}:later"

    def _job(self, job_id: str) -> str:
        return f"{self._prefix}j:{job_id}"

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
        job_id = secrets.token_hex(16)  # 128 random bits: a job URL is its only secret
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
        outcome, known = await self._conn.call(
            lambda r: self._enqueue(keys=keys, args=args, client=r)
        )
        if outcome == -1:
            raise QueueFull(queue, policy.max_length)
        if outcome == 0:
            known_id, _, known_print = _text(known).partition("|")
            return Enqueued(known_id, created=False, conflict=known_print != fingerprint)
        return Enqueued(_text(known), created=True)

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
        reason = f"no acknowledgement within {policy.ack_timeout:g}s"
        keys = [self._stream(queue), self._job(job_id), self._dead(queue)]
        args: list[Any] = [
            msg,
            policy.max_attempts,
            reason,
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


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
