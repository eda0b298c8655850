"""RateCounter, in-process and on Redis: GCRA decisions a client would notice."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from lb.stores.base import RateCounter
from lb.stores.redis_client import RedisConnection
from lb.stores.redis_rates import RedisRateCounter
from tests.stores.helpers import until


async def test_a_burst_of_20_at_5_per_second_burst_5(rates: RateCounter) -> None:
    decisions = [await rates.acquire("client:1", 5, 5) for _ in range(20)]
    allowed = [d for d in decisions if d.allowed]
    denied = [d for d in decisions if not d.allowed]
    assert 5 <= len(allowed) <= 6  # 5 at once, maybe one more refilled while sending
    assert decisions[0].allowed and decisions[0].remaining == 4
    assert all(d.retry_after_seconds == 0 for d in allowed)
    assert all(0 < d.retry_after_seconds <= 0.2 + 1e-3 for d in denied)
    assert all(d.remaining == 0 for d in denied)
    assert all(0 < d.reset_seconds <= 1.0 + 1e-3 for d in decisions)


async def test_keys_are_independent_and_refill_at_rate(rates: RateCounter) -> None:
    assert (await rates.acquire("a", 10, 1)).allowed
    denied = await rates.acquire("a", 10, 1)
    assert not denied.allowed
    assert (await rates.acquire("b", 10, 1)).allowed

    await asyncio.sleep(denied.retry_after_seconds)  # what Retry-After tells the client

    async def allowed_again() -> bool:
        return (await rates.acquire("a", 10, 1)).allowed

    await until(allowed_again, timeout=2)


async def test_cost(rates: RateCounter) -> None:
    first = await rates.acquire("k", 1, 10, cost=7)
    assert first.allowed and first.remaining == 3
    too_much = await rates.acquire("k", 1, 10, cost=4)
    assert not too_much.allowed and 0.9 <= too_much.retry_after_seconds <= 1.1
    never = await rates.acquire("k", 1, 10, cost=11)
    assert not never.allowed and math.isinf(never.retry_after_seconds)


async def test_two_lb_instances_share_one_limit(
    redis_connection: Callable[..., RedisConnection],
) -> None:
    one = RedisRateCounter(redis_connection())
    two = RedisRateCounter(redis_connection())
    results = [await (one if i % 2 else two).acquire("route:api", 1, 4) for i in range(8)]
    assert sum(d.allowed for d in results) == 4
