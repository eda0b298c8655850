"""Enqueues on Redis made in the same event-loop tick share one round trip
(lb.stores.redis_jobs.batch): each caller still gets its own job, its own refusal or its own
error, and nothing is queued twice."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace

from redis import exceptions as redis_errors

from lb.stores.base import Enqueued, QueuePolicy
from lb.stores.errors import QueueFull, StoreUnavailable
from lb.stores.redis_client import RedisConnection
from lb.stores.redis_jobs import RedisJobQueue
from lb.stores.redis_jobs.batch import ScriptBatcher
from lb.stores.redis_jobs.scripts import ENQUEUE
from tests.conftest import RedisServer

POLICY = QueuePolicy(max_length=1000, ack_timeout=30)
Connect = Callable[..., RedisConnection]


async def test_enqueues_made_together_each_get_their_own_job(redis_connection: Connect) -> None:
    jobs = RedisJobQueue(redis_connection())
    queued = await asyncio.gather(*(jobs.enqueue("q", b"%d" % i, POLICY) for i in range(150)))
    assert all(q.created for q in queued) and len({q.id for q in queued}) == 150
    claimed = [await jobs.claim("q", "w", POLICY, block=1) for _ in queued]
    # (Calls made at the same moment have no order between them, batched or not.)
    assert sorted((j.id, j.payload) for j in claimed if j) == sorted(
        (q.id, b"%d" % i) for i, q in enumerate(queued)
    )


async def test_a_full_queue_refuses_only_the_calls_past_max_length(
    redis_connection: Connect,
) -> None:
    jobs = RedisJobQueue(redis_connection())
    policy = QueuePolicy(max_length=3)
    results = await asyncio.gather(
        *(jobs.enqueue("q", b"x", policy) for _ in range(5)), return_exceptions=True
    )
    assert [type(r) for r in results] == [Enqueued] * 3 + [QueueFull] * 2


async def test_scripts_the_server_lost_are_loaded_again(
    redis_server: RedisServer, redis_connection: Connect
) -> None:
    jobs = RedisJobQueue(redis_connection())
    await jobs.enqueue("q", b"first", POLICY)
    redis_server.command("SCRIPT", "FLUSH")  # as a restarted server has none
    queued = await asyncio.gather(*(jobs.enqueue("q", b"more", POLICY) for _ in range(3)))
    assert all(q.created for q in queued) and (await jobs.stats("q")).depth == 4


async def test_a_caller_that_gives_up_before_its_batch_leaves_is_left_out(
    redis_connection: Connect,
) -> None:
    jobs = RedisJobQueue(redis_connection())
    calls = [jobs.enqueue("q", b"%d" % i, POLICY) for i in range(3)]
    calls[1].cancel()
    assert (await calls[0]).created and (await calls[2]).created
    assert (await jobs.stats("q")).depth == 2


async def test_the_same_enqueue_run_twice_queues_one_job(redis_connection: Connect) -> None:
    # What a batch written once more after its connection broke does.
    connection = redis_connection()
    script = connection.client.register_script(ENQUEUE)
    p = connection.prefix
    keys = [f"{p}q:q", f"{p}j:abc", f"{p}i:q:", f"{p}q:q:later"]
    args = [10, "abc", b"payload", 1000, "0", "q", "", ""]
    assert await script(keys=keys, args=args) == [1, b"abc"]
    assert await script(keys=keys, args=args) == [1, b"abc"]
    assert (await RedisJobQueue(connection).stats("q")).depth == 1


async def test_every_caller_of_a_batch_without_an_answer_gets_store_unavailable(
    redis_server: RedisServer, redis_connection: Connect
) -> None:
    connection = redis_connection(timeout="100ms")
    jobs = RedisJobQueue(connection)
    await jobs.enqueue("q", b"warm", POLICY)
    redis_server.command("CLIENT", "PAUSE", "1000", "ALL")  # Redis alive, but silent
    results = await asyncio.gather(
        *(jobs.enqueue("q", b"x", POLICY) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    assert len({id(r) for r in results}) == 5  # each raised on its own
    assert not connection.up


class _BreakingConnection:
    """A pooled connection whose server answers `answered` calls, then is gone."""

    def __init__(self, answered: int) -> None:
        self.answered = answered
        self.sent: list[bytes] = []

    async def send_packed_command(self, data: bytes) -> None:
        self.sent.append(data)

    async def read_response(self) -> object:
        if self.answered == 0:
            raise redis_errors.ConnectionError("Connection closed by server.")
        self.answered -= 1
        return [1, b"job%d" % self.answered]

    async def disconnect(self, nowait: bool = False) -> None:
        pass


class _Pool:
    def __init__(self, *connections: _BreakingConnection) -> None:
        self.connections = list(reversed(connections))  # handed out in this order

    async def get_connection(self, *_: object) -> _BreakingConnection:
        if not self.connections:
            raise redis_errors.ConnectionError("Error 111 connecting. Connection refused.")
        return self.connections.pop()

    async def release(self, connection: object) -> None:
        pass


async def test_callers_answered_before_the_connection_broke_keep_their_jobs(
    redis_connection: Connect,
) -> None:
    connection = redis_connection()
    broken = _BreakingConnection(answered=2)
    real, connection.client.connection_pool = connection.client.connection_pool, _Pool(broken)
    batcher = ScriptBatcher(connection, SimpleNamespace(sha="0" * 40, script=""))  # type: ignore[arg-type]
    calls = [batcher.submit(["k"], [i], lambda reply: reply[1]) for i in range(5)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    connection.client.connection_pool = real
    # Two replies came: those jobs are stored, and their callers get them (not a 503 that
    # would have the client send the request again). The other three get StoreUnavailable.
    assert results[:2] == [b"job1", b"job0"]
    assert all(isinstance(r, StoreUnavailable) for r in results[2:])
    assert len(broken.sent) == 1 and not connection.up


async def test_calls_unanswered_when_the_connection_broke_are_sent_again_on_a_fresh_one(
    redis_connection: Connect,
) -> None:
    connection = redis_connection()
    broken, fresh = _BreakingConnection(answered=2), _BreakingConnection(answered=10)
    real, connection.client.connection_pool = (
        connection.client.connection_pool,
        _Pool(broken, fresh),
    )
    batcher = ScriptBatcher(connection, SimpleNamespace(sha="0" * 40, script=""))  # type: ignore[arg-type]
    calls = [batcher.submit(["k"], [i], lambda reply: reply[1]) for i in range(5)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    connection.client.connection_pool = real
    assert results == [b"job1", b"job0", b"job9", b"job8", b"job7"]
    assert fresh.sent[0].count(b"EVALSHA") == 3  # only the three calls not answered
    assert connection.up
