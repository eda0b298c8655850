"""A route's `rate_limit` over real sockets: 429 with Retry-After and the IETF RateLimit fields,
keys that are counted apart, `scope: shared` counted together by two lbs through one Redis,
and `on_store_error` when that Redis is down."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import REGISTRY

from lb.proxy.proxy import Proxy
from tests.conftest import Message, Origin, RawClient, RedisServer, one_pool

Start = Callable[..., Awaitable[Proxy]]
Connect = Callable[..., Awaitable[RawClient]]


def get(path: str = "/", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def limited(origin: Origin, name: str = "api", **rate_limit: Any) -> dict[str, Any]:
    return one_pool(
        origin,
        routes=[{"name": name, "match": {}, "pool": "app", "rate_limit": rate_limit}],
    )


def limited_total(route: str) -> float:
    return REGISTRY.get_sample_value("lb_rate_limited_total", {"route": route}) or 0.0


async def statuses(client: RawClient, n: int, request: bytes) -> list[Message]:
    """`n` requests written at once on one connection (pipelined), and their answers."""
    await client.send(request * n)
    return [await client.response() for _ in range(n)]


async def test_a_burst_of_20_at_5_per_second_burst_5(
    proxy: Start, origin: Callable[..., Awaitable[Origin]], connect: Connect
) -> None:
    o = await origin()
    worker = await proxy(limited(o, rate="5/s", burst=5))
    before = limited_total("api")
    client = await connect(worker)
    started = time.monotonic()
    answers = await statuses(client, 20, get())
    elapsed = time.monotonic() - started
    allowed = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status == 429]
    assert len(allowed) + len(refused) == 20
    assert [a.status for a in answers[:5]] == [200] * 5  # a fresh bucket holds the burst
    # GCRA's bound: burst + elapsed x rate (5, or 6 when a unit came back while sending).
    assert 5 <= len(allowed) <= 5 + math.floor(elapsed * 5)
    assert len(o.requests) == len(allowed)  # a refused request never reaches the pool
    assert limited_total("api") - before == len(refused)

    answer = refused[-1]
    assert answer.header("x-lb-error") == "rate_limited"
    assert answer.header("retry-after") == "1"  # 0.2s to the next unit, in whole seconds
    # draft-ietf-httpapi-ratelimit-headers-11: the bucket (5 per 1s), and nothing left for 1s.
    assert answer.header("ratelimit-policy") == '"default";q=5;w=1'
    assert answer.header("ratelimit") == '"default";r=0;t=1'
    assert b"route 'api' allows 5/s (burst 5) per client address" in answer.body
    assert not allowed[0].has("ratelimit")  # headers: false [default]: only on the 429


async def test_allowed_responses_carry_the_fields_with_headers_true(
    proxy: Start, origin: Callable[..., Awaitable[Origin]], connect: Connect
) -> None:
    o = await origin()
    worker = await proxy(limited(o, rate="10/m", burst=3, headers=True))
    client = await connect(worker)
    answers = await statuses(client, 4, get())
    assert [a.status for a in answers] == [200, 200, 200, 429]
    assert [a.header("ratelimit-policy") for a in answers] == ['"default";q=3;w=18'] * 4
    # r counts down; t: one unit of 10/m comes back within 6s.
    assert [a.header("ratelimit") for a in answers[:3]] == [
        '"default";r=2;t=6',
        '"default";r=1;t=6',
        '"default";r=0;t=6',
    ]
    assert answers[3].header("ratelimit") == '"default";r=0;t=6'
    assert answers[3].header("retry-after") == "6"
    assert answers[3].all("ratelimit") == ['"default";r=0;t=6']  # once, not twice


async def test_a_servers_own_ratelimit_fields_are_left_alone(
    proxy: Start, origin: Callable[..., Awaitable[Origin]], connect: Connect
) -> None:
    from tests.conftest import handlers

    o = await origin(handlers.fixed(headers=[("RateLimit", '"app";r=7')]))
    worker = await proxy(limited(o, rate="10/s", headers=True))
    answer = await (await connect(worker)).request(get())
    assert answer.status == 200
    assert answer.all("ratelimit") == ['"app";r=7'] and not answer.has("ratelimit-policy")


async def test_keys_by_header_and_cookie_are_counted_apart(
    proxy: Start, origin: Callable[..., Awaitable[Origin]], connect: Connect
) -> None:
    o = await origin()
    worker = await proxy(
        one_pool(
            o,
            routes=[
                {
                    "name": "by-header",
                    "match": {"path_prefix": "/h"},
                    "pool": "app",
                    "rate_limit": {"rate": "1/h", "burst": 2, "key": "header:X-Api-Key"},
                },
                {
                    "name": "by-cookie",
                    "match": {"path_prefix": "/c"},
                    "pool": "app",
                    "rate_limit": {"rate": "1/h", "burst": 2, "key": "cookie:sid"},
                },
            ],
        )
    )
    client = await connect(worker)

    async def codes(path: str, extra: str = "") -> list[int]:
        return [a.status for a in await statuses(client, 3, get(path, extra))]

    assert await codes("/h", "X-Api-Key: alice\r\n") == [200, 200, 429]
    assert await codes("/h", "x-api-key: bob\r\n") == [200, 200, 429]
    assert await codes("/h") == [200, 200, 429]  # no key: counted by the client's address
    assert await codes("/c", "Cookie: a=1; sid=alice\r\n") == [200, 200, 429]
    assert await codes("/c", "Cookie: sid=bob\r\n") == [200, 200, 429]
    assert await codes("/c", "Cookie: other=alice\r\n") == [200, 200, 429]
    # The routes count apart too: alice's header used up /h, not /c.
    assert await codes("/c", "X-Api-Key: alice\r\nCookie: sid=carol\r\n") == [200, 200, 429]


async def test_key_route_counts_every_client_together(
    proxy: Start, origin: Callable[..., Awaitable[Origin]], connect: Connect
) -> None:
    o = await origin()
    worker = await proxy(limited(o, rate="1/h", burst=2, key="route"))
    first, second = await connect(worker), await connect(worker)
    assert (await first.request(get(extra="X-Api-Key: a\r\n"))).status == 200
    assert (await second.request(get(extra="X-Api-Key: b\r\n"))).status == 200
    assert (await first.request(get())).status == 429
    assert (await second.request(get())).status == 429


async def test_a_reload_keeps_the_counts(
    proxy: Start, origin: Callable[..., Awaitable[Origin]], connect: Connect
) -> None:
    o = await origin()
    worker = await proxy(limited(o, rate="1/h", burst=1))
    client = await connect(worker)
    assert (await client.request(get())).status == 200
    worker.reload(worker.runtime.config)
    assert (await client.request(get())).status == 429


async def test_shared_scope_counts_two_lbs_together(
    proxy: Start,
    origin: Callable[..., Awaitable[Origin]],
    connect: Connect,
    redis_server: RedisServer,
) -> None:
    o = await origin()
    config = limited(o, rate="1/h", burst=4, scope="shared", headers=True)
    config["redis"] = {"url": redis_server.url}
    one, two = await proxy(config), await proxy(config)
    a, b = await connect(one), await connect(two)
    answers = [await (a if i % 2 == 0 else b).request(get()) for i in range(6)]
    assert [x.status for x in answers] == [200, 200, 200, 200, 429, 429]
    # Each answer saw the count both made: one bucket, one decision per request.
    assert [x.header("ratelimit") for x in answers[:4]] == [
        f'"default";r={r};t=3600' for r in (3, 2, 1, 0)
    ]
    assert answers[4].header("retry-after") == "3600"
    assert answers[5].header("ratelimit-policy") == '"default";q=4;w=14400'


async def test_shared_scope_with_redis_down_allows_by_default(
    proxy: Start,
    origin: Callable[..., Awaitable[Origin]],
    connect: Connect,
    redis_server: RedisServer,
) -> None:
    o = await origin()
    config = limited(o, rate="1/h", burst=1, scope="shared")
    config["redis"] = {"url": redis_server.url, "timeout": "100ms"}
    worker = await proxy(config)
    client = await connect(worker)
    assert [(await client.request(get())).status for _ in range(2)] == [200, 429]
    redis_server.stop()
    assert [(await client.request(get())).status for _ in range(3)] == [200, 200, 200]


async def test_shared_scope_with_redis_down_and_deny_answers_503(
    proxy: Start,
    origin: Callable[..., Awaitable[Origin]],
    connect: Connect,
    redis_server: RedisServer,
) -> None:
    o = await origin()
    config = limited(o, rate="1/h", burst=5, scope="shared", on_store_error="deny")
    config["redis"] = {"url": redis_server.url, "timeout": "100ms"}
    worker = await proxy(config)
    client = await connect(worker)
    assert (await client.request(get())).status == 200
    redis_server.stop()
    for _ in range(2):  # the call that finds it down, then one while it is known down
        answer = await client.request(get())
        assert answer.status == 503
        assert answer.header("x-lb-error") == "rate_limit_unavailable"
        assert b"on_store_error is deny" in answer.body
    assert len(o.requests) == 1
