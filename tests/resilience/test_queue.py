"""Server max_connections and the pool queue through a real lb worker (wait, queue_full,
queue_timeout, FIFO, a client leaving while queued, the depth gauge), the config keys, and
slow start's sans-IO ramp with the balancers reading effective weights."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from functools import partial
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from lb.config import ConfigError, load_config_text
from lb.core.balancer import ServerState, make_balancer
from lb.core.slow_start import START, SlowStart, ramp
from tests.conftest import Message, Origin, _record, response, wait_until

GET = b"GET /%d HTTP/1.1\r\nhost: t\r\n\r\n"


def gated() -> tuple[Any, asyncio.Event, list[int]]:
    """A handler that holds every request until `release` is set; `peak` tracks the most
    requests it held at once."""
    release = asyncio.Event()
    peak = [0, 0]  # now, max

    async def handle(origin: Origin, req: Message, reader: Any, writer: Any) -> None:
        await _record(origin, req, reader)
        peak[0] += 1
        peak[1] = max(peak[1], peak[0])
        await release.wait()
        peak[0] -= 1
        writer.write(response(200, req.target.encode()))

    return handle, release, peak


def limited(origin: Origin, max_connections: int, **queue: Any) -> dict[str, Any]:
    pool: dict[str, Any] = {
        "servers": [{"address": origin.address, "max_connections": max_connections}]
    }
    if queue:
        pool["queue"] = queue
    return {
        "listeners": {"web": {}},
        "routes": [{"name": "default", "match": {}, "pool": "app"}],
        "pools": {"app": pool},
    }


def depth() -> float:
    return REGISTRY.get_sample_value("lb_pool_queue_depth", {"pool": "app"}) or 0.0


async def test_full_server_queues_in_order_then_serves(proxy, origin, connect):
    handle, release, peak = gated()
    o = await origin(handle)
    worker = await proxy(limited(o, 2, max=10, timeout="5s"))
    clients = [await connect(worker) for _ in range(6)]

    def arrived(n: int) -> bool:
        """The first `n` requests are at the server (two at most) or in the queue."""
        return (len(o.requests), depth()) == (min(n, 2), max(n - 2, 0))

    for i, c in enumerate(clients):
        await c.send(GET % i)
        # A known arrival order: each is at the server or in the queue before the next.
        await wait_until(partial(arrived, i + 1), what=f"request {i} at the server or queued")
    assert len(o.requests) == 2  # two at the server, four waiting in lb
    assert depth() == 4
    release.set()
    answers = [await c.response() for c in clients]
    assert [a.status for a in answers] == [200] * 6
    assert [r.target for r in o.requests] == [f"/{i}" for i in range(6)]  # FIFO
    assert peak[1] == 2  # never more than max_connections at once
    assert depth() == 0


async def test_queue_full_and_queue_timeout(proxy, origin, connect):
    handle, release, _ = gated()
    o = await origin(handle)
    worker = await proxy(limited(o, 1, max=1, timeout="300ms"))
    busy, waiting, refused = [await connect(worker) for _ in range(3)]
    await busy.send(GET % 0)
    await wait_until(lambda: len(o.requests) == 1)
    await waiting.send(GET % 1)
    await wait_until(lambda: depth() == 1)
    started = time.monotonic()
    resp = await refused.request(GET % 2)
    assert resp.status == 503 and resp.header("x-lb-error") == "queue_full"
    assert time.monotonic() - started < 0.2  # at once, not after the timeout
    resp = await waiting.response()
    assert resp.status == 503 and resp.header("x-lb-error") == "queue_timeout"
    assert b"pool app" in resp.body
    release.set()
    assert (await busy.response()).status == 200
    assert len(o.requests) == 1  # the refused and timed-out ones never reached the server


async def test_client_leaving_the_queue_frees_its_place(proxy, origin, connect):
    handle, release, _ = gated()
    o = await origin(handle)
    worker = await proxy(limited(o, 1, max=1, timeout="5s"))
    busy, leaver, next_ = [await connect(worker) for _ in range(3)]
    await busy.send(GET % 0)
    await wait_until(lambda: len(o.requests) == 1)
    await leaver.send(GET % 1)
    await wait_until(lambda: depth() == 1)
    leaver.reset()
    await wait_until(lambda: depth() == 0, what="the leaver's place freed")
    await next_.send(GET % 2)  # the place is free again
    await wait_until(lambda: depth() == 1, what="next_ queued")
    release.set()
    assert (await busy.response()).status == 200
    assert (await next_.response()).status == 200
    assert [r.target for r in o.requests] == ["/0", "/2"]


async def test_without_queue_key_a_default_queue_waits(proxy, origin, connect):
    handle, release, _ = gated()
    o = await origin(handle)
    worker = await proxy(limited(o, 1))
    a, b = await connect(worker), await connect(worker)
    await a.send(GET % 0)
    await wait_until(lambda: len(o.requests) == 1)
    await b.send(GET % 1)
    await wait_until(lambda: depth() == 1, what="b waiting in the default queue")
    release.set()
    assert [(await a.response()).status, (await b.response()).status] == [200, 200]


async def test_backup_takes_requests_when_primaries_are_full(proxy, origin, connect):
    handle, release, _ = gated()
    primary = await origin(handle)
    spare = await origin()
    data = limited(primary, 1, max=0)
    data["pools"]["app"]["servers"].append({"address": spare.address, "backup": True})
    worker = await proxy(data)
    a, b = await connect(worker), await connect(worker)
    await a.send(GET % 0)
    await wait_until(lambda: len(primary.requests) == 1)
    assert (await b.request(GET % 1)).status == 200
    assert len(spare.requests) == 1
    release.set()
    assert (await a.response()).status == 200


# -- config -----------------------------------------------------------------------------------


def _config(pool: dict[str, Any], listener: dict[str, Any] | None = None) -> str:
    data: dict[str, Any] = {
        "version": 1,
        "listeners": {"web": listener or {"bind": "127.0.0.1:0"}},
        "pools": {"app": pool},
    }
    if listener is None:
        data["routes"] = [{"pool": "app"}]
    return yaml.safe_dump(data)


def test_config_keys_are_built() -> None:
    config = load_config_text(
        _config(
            {
                "slow_start": "30s",
                "queue": {"max": 7, "timeout": "2s"},
                "servers": [{"address": "127.0.0.1:1", "max_connections": 3}],
            }
        )
    )
    pool = config.pools["app"]
    assert pool.slow_start == 30.0
    assert pool.queue is not None and (pool.queue.max, pool.queue.timeout) == (7, 2.0)
    assert pool.servers[0].max_connections == 3


@pytest.mark.parametrize(
    ("pool", "listener", "message"),
    [
        (
            {"balance": "ip_hash", "slow_start": "10s"},
            None,
            "pools.app.slow_start: no effect with balance: ip_hash",
        ),
        ({"queue": {"max": 5}}, None, "pools.app.queue: no effect: requests wait only when"),
        ({"slow_start": "0s"}, None, "pools.app.slow_start"),
        ({"queue": {"timeout": "0s"}}, None, "pools.app.queue.timeout"),
        (
            {"servers": [{"address": "127.0.0.1:1", "max_connections": 2}]},
            {"bind": "127.0.0.1:0", "mode": "tcp", "pool": "app"},
            "pools.app.servers[0].max_connections: only for pools that http routes use",
        ),
    ],
)
def test_config_problems(pool: dict[str, Any], listener: Any, message: str) -> None:
    pool.setdefault("servers", [{"address": "127.0.0.1:1"}])
    with pytest.raises(ConfigError) as info:
        load_config_text(_config(pool, listener))
    assert message in str(info.value)


# -- slow start, sans-IO ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("elapsed", "share"),
    [(-1.0, START), (0.0, START), (5.0, 0.55), (7.5, 0.775), (10.0, 1.0), (99.0, 1.0)],
)
def test_ramp_is_linear_from_start_to_full(elapsed: float, share: float) -> None:
    assert ramp(elapsed, 10.0) == pytest.approx(share)


def test_slow_start_sets_effective_weights_until_done() -> None:
    s = ServerState("a", weight=4)
    slow = SlowStart(10.0)
    slow.begin(s, now=100.0)
    assert s.effective == pytest.approx(0.4) and s.weight == 4
    assert slow.update(105.0) and s.effective == pytest.approx(4 * 0.55)
    assert not slow.update(110.0) and s.effective == 4  # done: back to the weight
    slow.begin(s, now=200.0)
    s.healthy = False  # down again: its ramp ends (the next UP starts a new one)
    assert not slow.update(201.0) and s.effective == 4
    s.weight = 2  # a reload's new weight resets the effective one
    assert s.effective == 2


@pytest.mark.parametrize("kind", ["round_robin", "least_conn", "random", "p2c"])
def test_balancers_follow_effective_weights(kind: str) -> None:
    import random

    ramping, steady = ServerState("ramping"), ServerState("steady")
    ramping.effective = 0.25  # a quarter of its weight of 1, while slow-starting
    balancer = make_balancer(kind, [ramping, steady], random.Random(7))
    picks: Counter[str] = Counter()
    for _ in range(1000):
        s = balancer.pick()
        assert s is not None
        if kind == "least_conn":
            s.in_flight += 1  # least_conn shares by in_flight/weight: let them pile up
        picks[s.address] += 1
    assert 150 <= picks["ramping"] <= 250, picks  # 0.25 / 1.25 = 20%
