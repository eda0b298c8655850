"""CacheStore, in-process and on Redis: what the response cache will rely on."""

from __future__ import annotations

from collections.abc import Callable

from lb.stores.base import CacheStore, Invalidation
from lb.stores.memory_cache import MemoryCacheStore
from lb.stores.redis_cache import RedisCacheStore
from lb.stores.redis_client import RedisConnection
from tests.conftest import wait_until
from tests.stores.helpers import until


async def eventually_missing(cache: CacheStore, key: str) -> None:
    async def missing() -> bool:
        return await cache.get(key) is None

    await until(missing)


async def test_set_get_delete(cache: CacheStore) -> None:
    assert await cache.get("GET example.com/a") is None
    await cache.set("GET example.com/a", b"\x00body\xff", ttl=60)
    assert await cache.get("GET example.com/a") == b"\x00body\xff"
    await cache.set("GET example.com/a", b"v2", ttl=60)  # replaces
    assert await cache.get("GET example.com/a") == b"v2"
    assert await cache.delete(["GET example.com/a", "GET example.com/none"]) == 1
    assert await cache.get("GET example.com/a") is None
    assert await cache.delete([]) == 0


async def test_ttl_expiry(cache: CacheStore) -> None:
    await cache.set("short", b"x", ttl=0.2)
    await cache.set("long", b"y", ttl=60)
    assert await cache.get("short") == b"x"
    await eventually_missing(cache, "short")
    assert await cache.get("long") == b"y"


async def test_purge_by_prefix_counts_what_it_removed(cache: CacheStore) -> None:
    for key in ["/products/1", "/products/2", "/products", "/productsX", "/a*b/1", "/aXb/1"]:
        await cache.set(key, b"v", ttl=60)
    assert await cache.purge_prefix("/products/") == 2
    assert await cache.get("/products/1") is None
    assert await cache.get("/products") == b"v"
    assert await cache.get("/productsX") == b"v"
    # Glob characters are taken literally.
    assert await cache.purge_prefix("/a*b/") == 1
    assert await cache.get("/aXb/1") == b"v"
    assert await cache.purge_prefix("/nothing") == 0


async def test_purge_by_tag(cache: CacheStore) -> None:
    await cache.set("a", b"1", ttl=60, tags=["product:1", "catalog"])
    await cache.set("b", b"2", ttl=60, tags=["catalog"])
    await cache.set("c", b"3", ttl=60)
    assert await cache.purge_tag("product:1") == 1
    assert await cache.get("a") is None and await cache.get("b") == b"2"
    assert await cache.purge_tag("catalog") == 1  # "a" is already gone
    assert await cache.purge_tag("catalog") == 0
    assert await cache.get("c") == b"3"


async def test_purge_all(cache: CacheStore) -> None:
    for i in range(7):
        await cache.set(f"k{i}", b"v", ttl=60, tags=["t"])
    assert await cache.purge_all() == 7
    assert await cache.get("k3") is None
    assert await cache.purge_tag("t") == 0
    assert await cache.purge_all() == 0


async def test_lock_is_exclusive_until_unlocked(cache: CacheStore) -> None:
    token = await cache.try_lock("GET /slow", lease=30)
    assert token is not None
    assert await cache.try_lock("GET /slow", lease=30) is None
    assert await cache.try_lock("GET /other", lease=30) is not None
    assert await cache.unlock("GET /slow", "not-the-token") is False
    assert await cache.try_lock("GET /slow", lease=30) is None
    assert await cache.unlock("GET /slow", token) is True
    assert await cache.try_lock("GET /slow", lease=30) is not None


async def test_lock_lease_ends_a_dead_holders_lock(cache: CacheStore) -> None:
    old = await cache.try_lock("GET /slow", lease=0.2)
    assert old is not None
    tokens: list[str | None] = []

    async def taken() -> bool:
        tokens.append(await cache.try_lock("GET /slow", lease=30))
        return tokens[-1] is not None

    await until(taken)
    assert await cache.unlock("GET /slow", old) is False  # the late holder frees nothing
    assert await cache.try_lock("GET /slow", lease=30) is None


async def test_invalidations_reach_subscribers(cache: CacheStore) -> None:
    seen: list[Invalidation] = []
    subscription = await cache.subscribe_invalidations(seen.append)
    await cache.set("/p/1", b"v", ttl=60, tags=["t"])
    await cache.set("/p/2", b"v", ttl=60)
    await cache.delete(["/p/1"])
    await wait_until(lambda: Invalidation(("/p/1",)) in seen)
    await cache.purge_prefix("/p/")
    await wait_until(lambda: Invalidation(("/p/2",)) in seen)
    await cache.publish_invalidation(Invalidation(("/x",)))
    await wait_until(lambda: Invalidation(("/x",)) in seen)
    await cache.purge_all()
    await wait_until(lambda: Invalidation(everything=True) in seen)
    await subscription.close()
    count = len(seen)
    await cache.publish_invalidation(Invalidation(("/after-close",)))
    await cache.set("/sync", b"v", ttl=60)  # a round trip, after which a message would be in
    assert await cache.get("/sync") == b"v"
    assert len(seen) == count


async def test_memory_store_is_bounded_by_bytes_least_recently_used_first() -> None:
    cache = MemoryCacheStore(max_bytes=1400)  # room for 5 of these
    for i in range(5):
        await cache.set(f"k{i}", b"x" * 150, ttl=60)
    assert await cache.get("k0") == b"x" * 150  # k0 is now the most recently used
    await cache.set("k5", b"x" * 150, ttl=60)
    assert cache.size_bytes <= 1400
    assert await cache.get("k1") is None  # the least recently used went first
    assert await cache.get("k0") is not None and await cache.get("k5") is not None
    await cache.set("huge", b"x" * 2000, ttl=60)  # larger than the bound: not stored
    assert await cache.get("huge") is None and await cache.get("k5") is not None


async def test_two_lb_instances_share_entries_and_invalidations(
    redis_connection: Callable[..., RedisConnection],
) -> None:
    one = RedisCacheStore(redis_connection())
    two = RedisCacheStore(redis_connection())
    seen: list[Invalidation] = []
    subscription = await two.subscribe_invalidations(seen.append)
    await one.set("/shared", b"v", ttl=60, tags=["t"])
    assert await two.get("/shared") == b"v"
    assert await one.purge_tag("t") == 1
    await wait_until(lambda: Invalidation(("/shared",)) in seen)
    await subscription.close()
