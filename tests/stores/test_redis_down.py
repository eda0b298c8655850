"""Redis stopped mid-test: callers get StoreUnavailable promptly, the state and lb_redis_up
say down, and everything recovers by itself once Redis is back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY

from lb.stores.base import Invalidation, QueuePolicy
from lb.stores.errors import StoreUnavailable
from lb.stores.redis_cache import RedisCacheStore
from lb.stores.redis_client import RedisConnection
from lb.stores.redis_jobs import RedisJobQueue
from lb.stores.redis_rates import RedisRateCounter
from tests.conftest import RedisServer, wait_until
from tests.stores.helpers import until

# Generous: the point is "promptly, not after a pile-up", not a latency figure.
PROMPTLY = 5.0


def gauge() -> float | None:
    return REGISTRY.get_sample_value("lb_redis_up")


async def works(connection: RedisConnection) -> bool:
    try:
        await connection.call(lambda r: r.ping())
    except StoreUnavailable:
        return False
    return True


async def test_down_then_recovers_by_itself(
    redis_server: RedisServer, redis_connection: Callable[..., RedisConnection]
) -> None:
    connection = redis_connection()
    cache = RedisCacheStore(connection)
    jobs = RedisJobQueue(connection)
    rates = RedisRateCounter(connection)
    seen: list[Invalidation] = []
    subscription = await cache.subscribe_invalidations(seen.append)
    await cache.set("k", b"v", ttl=60)
    assert connection.up and gauge() == 1

    redis_server.stop()
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(cache.get("k"), PROMPTLY)
    assert not connection.up and gauge() == 0
    status = connection.status()
    assert status["configured"] is True and status["up"] is False and status["last_error"]
    # Known down: every store fails at once, without trying the server.
    for call in (
        cache.get("k"),
        jobs.enqueue("q", b"x", QueuePolicy()),
        jobs.stats("q"),
        rates.acquire("c", 1, 1),
    ):
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(call, PROMPTLY)

    redis_server.start()
    await until(lambda: works(connection), timeout=10)
    assert connection.up and gauge() == 1 and connection.status()["up"] is True
    assert await cache.get("k") is None  # a fresh server without persistence
    await jobs.enqueue("q", b"x", QueuePolicy())
    assert (await rates.acquire("c", 1, 1)).allowed
    # The invalidation listener subscribed again, and said that it may have missed messages.
    await wait_until(lambda: Invalidation(everything=True) in seen)
    await cache.delete(["k"])
    await wait_until(lambda: Invalidation(("k",)) in seen)
    await subscription.close()


async def test_a_server_that_does_not_answer_fails_within_the_timeout(
    redis_server: RedisServer, redis_connection: Callable[..., RedisConnection]
) -> None:
    connection = redis_connection(timeout="100ms")
    assert await works(connection)
    redis_server.command("CLIENT", "PAUSE", "1500", "ALL")  # Redis alive, but silent
    with pytest.raises(StoreUnavailable, match="no answer within 100ms"):
        await asyncio.wait_for(connection.call(lambda r: r.get("x")), PROMPTLY)
    assert not connection.up
    await until(lambda: works(connection), timeout=10)


async def test_status_never_shows_the_password(redis_server: RedisServer) -> None:
    from lb.config.redis import Redis as RedisSettings

    url = f"redis://:hunter2@127.0.0.1:{redis_server.port}/0"
    connection = RedisConnection(RedisSettings.model_validate({"url": url}))
    try:
        assert connection.status()["url"] == f"redis://***@127.0.0.1:{redis_server.port}/0"
        assert "hunter2" not in repr(connection)
    finally:
        await connection.aclose()


async def test_a_quick_restart_that_redis_py_hides_still_drops_the_local_tier(
    redis_server: RedisServer, redis_connection: Callable[..., RedisConnection]
) -> None:
    """redis-py reconnects and resubscribes a pubsub without raising when Redis is back
    before it notices; the messages published meanwhile are gone all the same."""
    connection = redis_connection()
    cache = RedisCacheStore(connection)
    seen: list[Invalidation] = []
    subscription = await cache.subscribe_invalidations(seen.append)
    redis_server.stop()
    redis_server.start()
    await wait_until(lambda: Invalidation(everything=True) in seen)
    await cache.delete(["k"])
    await wait_until(lambda: Invalidation(("k",)) in seen)
    await subscription.close()
