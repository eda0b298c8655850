"""build_stores: in-process without `redis:`, Redis with it; reloads keep what is unchanged."""

from __future__ import annotations

import textwrap

from lb.config import Config, load_config_text
from lb.stores import Stores, build_stores, retire
from lb.stores.memory_cache import MemoryCacheStore
from lb.stores.redis_cache import RedisCacheStore
from tests.conftest import RedisServer

BASE = """\
version: 1
listeners: {web: {bind: "127.0.0.1:8080"}}
pools: {app: {servers: [{address: "127.0.0.1:9001"}]}}
routes: [{pool: app}]
"""


def config(redis: str = "") -> Config:
    return load_config_text(BASE + textwrap.dedent(redis))


async def test_in_process_by_default_and_kept_across_reloads() -> None:
    stores = build_stores(config())
    assert isinstance(stores.cache, MemoryCacheStore)
    assert stores.redis_status() == {"configured": False}
    await stores.cache.set("k", b"v", ttl=60)
    reloaded = build_stores(config(), stores)
    assert reloaded is stores  # cached entries and queued jobs survive a reload
    assert await reloaded.cache.get("k") == b"v"


async def test_redis_when_configured_one_client_kept_while_unchanged(
    redis_server: RedisServer,
) -> None:
    section = f"redis: {{url: '{redis_server.url}', timeout: 500ms}}\n"
    stores = build_stores(config(section))
    try:
        assert isinstance(stores.cache, RedisCacheStore) and stores.redis is not None
        await stores.cache.set("k", b"v", ttl=60)
        assert stores.redis_status() == {
            "configured": True,
            "up": True,
            "url": redis_server.url,
            "last_error": None,
            "since": stores.redis_status()["since"],
        }
        same = build_stores(config(section), stores)
        assert same.redis is stores.redis
        await retire(stores, same)  # shares the connection: nothing closed
        assert await same.cache.get("k") == b"v"

        changed = build_stores(config(section.replace("500ms", "1s")), same)
        assert changed.redis is not same.redis
        await retire(same, changed)
        assert await changed.cache.get("k") == b"v"
        stores = changed

        back_to_memory: Stores = build_stores(config(), stores)
        assert back_to_memory.redis is None
    finally:
        await retire(stores, None)
