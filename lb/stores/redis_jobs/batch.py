"""One script run for many callers: the calls made in the same event-loop tick go to Redis
together, in one write on one connection.

Why. At a few thousand enqueues a second, redis-py's cost per call (taking a connection from
the pool and giving it back, its retry wrapper, the encoding of each argument in Python, one
send and one read) was most of an lb worker's CPU. The requests that arrive together (one poll
of the sockets hands lb many) now share it: each call is packed once (hiredis, in C), then one
connection, one write and one read of all the replies serve the batch. A caller waits no
longer than before: the batch leaves on the next tick, and batches do not wait for each other
(each takes its own connection from the pool).

Invariants.
- Each caller gets its own script's reply (made into its result by its `convert`, which may
  raise, e.g. QueueFull), or its own error: a reply that is an error (the script failed) fails
  that caller alone with StoreError, as a lone call would.
- A batch that fails (Redis down, no answer within the timeout) fails every caller in it whose
  reply had not come with StoreUnavailable, as each lone call would have, and marks Redis down
  once; a caller whose reply came has its result (its job is stored: a 503 would have the
  client send it again, and the job run twice).
- The calls of a batch whose connection broke (a server restarted since the connection was
  last used) that had no reply yet are written once more on a fresh connection, as redis-py
  retries its own calls; so is a call answered NOSCRIPT (the server lost its scripts). The
  script must therefore be safe to run twice with the same arguments: ENQUEUE is (a job id
  already stored is not queued again).
- A caller that stops waiting (its future cancelled) does not cancel the batch: the others
  still get their replies. Its call is left out if its batch has not left yet; otherwise its
  script may still run, as with a lone call cancelled after it was sent.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import hiredis
from redis import exceptions as redis_errors
from redis.asyncio import ConnectionPool, Redis
from redis.commands.core import AsyncScript

from lb.stores.errors import StoreError, StoreUnavailable
from lb.stores.redis_client import RedisConnection, is_unavailable

MAX_CALLS = 64  # calls in one batch; more in one tick make several batches
MAX_BYTES = 1024 * 1024  # bytes in one batch's write (a payload is at most max_body_size)

T = TypeVar("T")
# The call, packed (RESP); the caller's future; what makes the script's reply its result.
Call = tuple[bytes, asyncio.Future[Any], Callable[[Any], Any]]

# redis-py < 5.3 wants a command name to hand out a connection; later ones warn when given one.
_NAMED = (
    inspect.signature(ConnectionPool.get_connection).parameters["command_name"].default
    is inspect.Parameter.empty
)


class ScriptBatcher:
    def __init__(self, connection: RedisConnection, script: AsyncScript) -> None:
        self._conn = connection
        self._script = script
        self._sha = script.sha.encode()  # (the SHA1 of the body: the same on every server)
        self._pending: list[Call] = []
        self._pending_bytes = 0
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()  # (a task must be referenced to run)

    def __repr__(self) -> str:
        return f"<ScriptBatcher {self._script.sha[:8]} pending={len(self._pending)}>"

    def submit(
        self, keys: list[Any], args: list[Any], convert: Callable[[Any], T]
    ) -> asyncio.Future[T]:
        """Run the script with `keys` and `args` (str, bytes or numbers) in the next batch;
        the future of `convert(reply)` (or of what that raises, or of the store's error)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        packed = hiredis.pack_command((b"EVALSHA", self._sha, len(keys), *keys, *args))
        self._pending.append((packed, future, convert))
        self._pending_bytes += len(packed)
        if len(self._pending) >= MAX_CALLS or self._pending_bytes >= MAX_BYTES:
            self._send(loop)
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._send, loop)  # after the other callers of this tick
        return future

    def _send(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        if not self._pending:
            return
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        task = loop.create_task(self._run(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[Call]) -> None:
        batch = [call for call in batch if not call[1].done()]  # (a caller that gave up)
        if not batch:
            return
        replies: list[Any] = []  # in the order of `batch`, as they come
        try:
            await self._conn.call(lambda r: self._execute(r, batch, replies))
        except StoreError as e:
            # The calls answered before it failed are stored: their callers get their jobs
            # (a 503 would have them sent again, and run twice). The others get the error.
            down = isinstance(e, StoreUnavailable)
            for i, (_, future, convert) in enumerate(batch):
                if i < len(replies) and not isinstance(replies[i], redis_errors.RedisError):
                    _answer(future, convert, replies[i])
                elif not future.done():  # each its own exception: they are raised separately
                    future.set_exception(StoreUnavailable(str(e)) if down else StoreError(str(e)))
            return
        except asyncio.CancelledError:  # (the loop is closing)
            for _, future, _ in batch:
                future.cancel()
            raise
        for (_, future, convert), reply in zip(batch, replies, strict=True):
            _answer(future, convert, reply)

    async def _execute(self, r: Redis, batch: list[Call], replies: list[Any]) -> None:
        """Fill `replies`, one per call of `batch`."""
        await _round_trip(r, [packed for packed, _, _ in batch], replies)
        missing = [i for i, reply in enumerate(replies) if _no_script(reply)]
        if missing:
            await r.script_load(self._script.script)
            again: list[Any] = []
            try:
                await _round_trip(r, [batch[i][0] for i in missing], again)
            finally:
                for i, reply in zip(missing, again, strict=False):  # (all, unless it failed)
                    replies[i] = reply
        for reply in replies:
            # e.g. READONLY: we reached a replica (a failover): Redis is down for us.
            if isinstance(reply, redis_errors.RedisError) and is_unavailable(reply):
                raise reply


def _answer(future: asyncio.Future[Any], convert: Callable[[Any], Any], reply: Any) -> None:
    if future.done():
        return  # its caller stopped waiting
    if isinstance(reply, redis_errors.RedisError):
        future.set_exception(StoreError(f"redis: {reply}"))
        return
    try:
        future.set_result(convert(reply))
    except Exception as e:  # e.g. QueueFull
        future.set_exception(e)


async def _round_trip(r: Redis, commands: list[bytes], replies: list[Any]) -> None:
    """Write `commands` at once on a connection of the pool, then append to `replies` one
    reply for each (an error reply as its exception). If the connection turns out broken (the
    server restarted since it was last used), the commands not answered yet are written once
    more on a fresh one."""
    pool = r.connection_pool
    for last in (False, True):
        conn = await (pool.get_connection("EVALSHA") if _NAMED else pool.get_connection())
        try:
            await conn.send_packed_command(b"".join(commands[len(replies) :]))
            while len(replies) < len(commands):
                try:
                    replies.append(await conn.read_response())
                except redis_errors.ResponseError as e:
                    replies.append(e)
            return
        except (redis_errors.ConnectionError, redis_errors.TimeoutError):
            await conn.disconnect()
            if last:
                raise
        except BaseException:
            # Cancelled (the call's timeout) or failed mid-way: replies may still be on their
            # way, and must not reach the next borrower of this connection.
            await conn.disconnect(nowait=True)
            raise
        finally:
            await pool.release(conn)


def _no_script(reply: Any) -> bool:
    return isinstance(reply, redis_errors.NoScriptError)
