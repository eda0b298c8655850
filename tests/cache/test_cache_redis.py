"""The response cache shared through a real redis-server (the suite's own, on a free port):
two lb instances share one cache, purges reach both, Redis going away costs no request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import redis as redis_py

from lb.proxy.proxy import Proxy
from tests.conftest import Message, RawClient, RedisServer, handlers, one_pool, wait_until


def shared(origin: Any, redis: RedisServer, **route_cache: Any) -> dict[str, Any]:
    return one_pool(
        origin,
        routes=[{"name": "cached", "match": {}, "pool": "app", "cache": route_cache}],
        redis={"url": redis.url, "timeout": "200ms"},
        cache={"local_ttl": "5s"},
    )


async def get(connect: Callable[..., Awaitable[RawClient]], lb: Proxy, path: str = "/p") -> Message:
    client = await connect(lb)
    try:
        return await client.request(f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
    finally:
        client.close()


async def redis_up(lb: Proxy) -> None:
    redis = lb.stores.redis
    assert redis is not None
    await wait_until(lambda: redis.up, what="lb to see redis up")
    await wait_until(lambda: lb.cache.local_ttl, what="lb to follow cache invalidations")


async def test_two_instances_share_one_cache(proxy, origin, connect, redis_server) -> None:
    o = await origin(handlers.fixed(b"shared", 200, [("cache-control", "max-age=60")]))
    a = await proxy(shared(o, redis_server))
    b = await proxy(shared(o, redis_server))
    await redis_up(a)
    await redis_up(b)
    assert (await get(connect, a)).header("x-cache") == "MISS"
    # Stored in Redis in the background, after the response went out.
    hit = await wait_until(
        lambda: _hit_on(connect, b), what="the other instance to serve a HIT from redis"
    )
    assert hit.body == b"shared"
    assert len(o.requests) == 1


async def _hit_on(connect: Callable[..., Awaitable[RawClient]], lb: Proxy) -> Message | None:
    msg = await get(connect, lb)
    return msg if msg.header("x-cache") == "HIT" else None


async def test_a_purge_by_tag_on_one_clears_both(proxy, origin, connect, redis_server) -> None:
    o = await origin(
        handlers.fixed(b"tagged", 200, [("cache-control", "max-age=60"), ("cache-tag", "t1")])
    )
    a = await proxy(shared(o, redis_server))
    b = await proxy(shared(o, redis_server))
    await redis_up(a)
    await redis_up(b)
    await get(connect, a)
    await wait_until(lambda: _hit_on(connect, b), what="b to hold the entry")
    await wait_until(lambda: _hit_on(connect, a), what="a to hold the entry")
    assert await a.cache.purge("tag", "t1") >= 1
    # b's in-process tier hears of it through Redis.
    await wait_until(
        lambda: _miss_on(connect, b), what="the purge to reach the other instance's local tier"
    )
    assert len(o.requests) >= 2


async def _miss_on(connect: Callable[..., Awaitable[RawClient]], lb: Proxy) -> bool:
    return (await get(connect, lb)).header("x-cache") == "MISS"


async def test_redis_down_costs_no_request_and_the_cache_comes_back(
    proxy, origin, connect, redis_server
) -> None:
    o = await origin(handlers.fixed(b"ok", 200, [("cache-control", "max-age=60")]))
    lb = await proxy(shared(o, redis_server))
    await redis_up(lb)
    redis_server.stop()
    results = [await get(connect, lb, f"/down{i}") for i in range(10)]
    assert all(r.status == 200 and r.body == b"ok" for r in results)
    assert {r.header("x-cache") for r in results} <= {"BYPASS", "MISS"}
    assert "BYPASS" in {r.header("x-cache") for r in results}
    redis_server.start()
    await redis_up(lb)
    await get(connect, lb, "/back")
    hit = await wait_until(
        lambda: _hit_on_path(connect, lb, "/back"), what="HITs once redis is back"
    )
    assert hit.body == b"ok"


async def _hit_on_path(
    connect: Callable[..., Awaitable[RawClient]], lb: Proxy, path: str
) -> Message | None:
    msg = await get(connect, lb, path)
    return msg if msg.header("x-cache") == "HIT" else None


async def test_a_corrupt_entry_is_dropped_and_fetched_again(
    proxy, origin, connect, redis_server
) -> None:
    o = await origin(handlers.fixed(b"whole", 200, [("cache-control", "max-age=60")]))
    lb = await proxy(shared(o, redis_server))
    await redis_up(lb)
    await get(connect, lb)
    client = redis_py.Redis.from_url(redis_server.url)
    try:
        keys = await wait_until(
            lambda: [k for k in client.keys("*c:v:*") if b"/p" in k], what="the stored entry"
        )
        for key in keys:
            value = client.get(key)
            assert value is not None
            client.set(key, value[: len(value) // 2])  # truncated
        lb.cache.local.clear()  # only Redis holds it now
        msg = await get(connect, lb)
        assert (msg.status, msg.body, msg.header("x-cache")) == (200, b"whole", "MISS")
        assert len(o.requests) == 2
    finally:
        client.close()
