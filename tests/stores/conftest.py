"""Each store test runs against every implementation: in-process, and Redis (a private
redis-server from tests/conftest.py; skipped when it is not installed); the job queue also in
a directory (lb.stores.file_jobs, the one `lb run` workers share without Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from lb.config.redis import Redis as RedisSettings
from lb.stores.file_jobs import FileJobQueue
from lb.stores.memory_cache import MemoryCacheStore
from lb.stores.memory_jobs import MemoryJobQueue
from lb.stores.memory_rates import MemoryRateCounter
from lb.stores.redis_cache import RedisCacheStore
from lb.stores.redis_client import RedisConnection
from lb.stores.redis_jobs import RedisJobQueue
from lb.stores.redis_rates import RedisRateCounter
from tests.conftest import RedisServer

KINDS = ["memory", "redis"]


def settings(server: RedisServer, **overrides: str) -> RedisSettings:
    return RedisSettings.model_validate(
        {"url": server.url, "timeout": "250ms", "probe_interval": "100ms", **overrides}
    )


@pytest.fixture
async def redis_connection(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[..., RedisConnection]]:
    """Makes connections to the session's redis-server; closes them after the test."""
    made: list[RedisConnection] = []
    server: RedisServer = request.getfixturevalue("redis_server")

    def make(**overrides: str) -> RedisConnection:
        connection = RedisConnection(settings(server, **overrides))
        made.append(connection)
        return connection

    yield make
    for connection in made:
        await connection.aclose()


def _make(kind: str, request: pytest.FixtureRequest, memory: object, redis: type) -> object:
    if kind == "memory":
        return memory
    return redis(request.getfixturevalue("redis_connection")())


@pytest.fixture(params=KINDS)
def cache(request: pytest.FixtureRequest) -> object:
    return _make(request.param, request, MemoryCacheStore(), RedisCacheStore)


@pytest.fixture(params=[*KINDS, "file"])
def jobs(request: pytest.FixtureRequest) -> object:
    if request.param == "file":
        return FileJobQueue(str(request.getfixturevalue("tmp_path") / "jobs"))
    return _make(request.param, request, MemoryJobQueue(), RedisJobQueue)


@pytest.fixture(params=KINDS)
def rates(request: pytest.FixtureRequest) -> object:
    return _make(request.param, request, MemoryRateCounter(), RedisRateCounter)
