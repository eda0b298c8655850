"""Weighted canary splits over real sockets: distribution, sticky arms, force, reload, rollback."""

from __future__ import annotations

import asyncio
from collections import Counter

from prometheus_client import REGISTRY

from lb.filters.canary import SEED_ENV, rearm_all
from tests.conftest import read_body, read_head
from tests.sticky.conftest import config_of


def split_config(stable, canary, weights=(90, 10), route="api", **route_keys):
    arms = [{"pool": "stable", "weight": weights[0]}]
    pools = {"stable": {"servers": [{"address": stable.address}]}}
    if canary is not None:
        arms.append({"pool": "canary", "weight": weights[1]})
        pools["canary"] = {"servers": [{"address": canary.address}]}
    return {
        "listeners": {"web": {}},
        "routes": [{"name": route, "match": {}, "split": arms, **route_keys}],
        "pools": pools,
    }


STICKY = {"sticky": {"cookie": "lb_arm", "ttl": "1h"}}


async def test_10000_new_clients_split_by_weight(named, worker, monkeypatch):
    monkeypatch.setenv(SEED_ENV, "5")
    stable, canary = await named("stable"), await named("canary")
    w = await worker(split_config(stable, canary, (80, 20), **STICKY))
    host, port = w.addresses["web"]
    request = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"  # no cookie: a new client
    counts: Counter[str] = Counter()
    cookies = 0

    async def client(n: int) -> None:
        nonlocal cookies
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for _ in range(n // 250):
                writer.write(request * 250)  # pipelined, answered in order
                for _ in range(250):
                    head = await read_head(reader)
                    assert head is not None
                    counts[(await read_body(reader, head)).decode()] += 1
                    cookies += head.has("set-cookie")
        finally:
            writer.close()

    async with asyncio.timeout(15):
        await asyncio.gather(*(client(2500) for _ in range(4)))
    assert counts.total() == 10_000 and cookies == 10_000
    assert abs(counts["canary"] / 10_000 - 0.20) <= 0.015, counts


async def test_sticky_client_keeps_its_arm(named, worker, jar, monkeypatch):
    monkeypatch.setenv(SEED_ENV, "1")  # reproducible draws: six 50/50 clients can all land alike
    stable, canary = await named("stable"), await named("canary")
    w = await worker(split_config(stable, canary, (50, 50), **STICKY))
    seen: set[str] = set()
    for n in range(30):
        if n >= 6 and len(seen) == 2:
            break
        c = await jar(w)
        arm = await c.get()
        assert [v.split("=")[0] for v in c.set_cookies] == ["lb_arm"]
        seen.add(arm)
        for _ in range(200 if len(seen) == 1 else 20):
            assert await c.get() == arm
            assert c.set_cookies == []
    assert seen == {"stable", "canary"}


async def test_arm_and_server_stickiness_together(named, worker, jar):
    s1, s2, canary = await named("s1"), await named("s2"), await named("canary")
    data = split_config(s1, canary, (100, 0), **STICKY)
    data["pools"]["stable"] = {
        "servers": [{"address": s1.address}, {"address": s2.address}],
        "sticky": {"cookie": "lb_srv"},
    }
    w = await worker(data)
    c = await jar(w)
    first = await c.get()
    assert sorted(v.split("=")[0] for v in c.set_cookies) == ["lb_arm", "lb_srv"]
    for _ in range(50):
        assert await c.get() == first and c.set_cookies == []


async def test_force_by_header_and_cookie(named, worker, jar):
    stable, canary = await named("stable"), await named("canary")
    force = {"header": "x-canary", "arms": {"1": "canary", "0": "stable"}}
    w = await worker(split_config(stable, canary, (100, 0), force=force, **STICKY))
    c = await jar(w)
    for _ in range(20):
        assert await c.get(headers={"X-Canary": "1"}) == "canary"
    assert "lb_arm" not in c.cookies  # forcing does not assign the client
    assert await c.get(headers={"x-canary": "nope"}) == "stable"  # unknown value: not forced
    assert await c.get(headers={"x-canary": "1"}) == "canary"  # wins over the sticky arm
    assert await c.get() == "stable"

    w2 = await worker(
        split_config(
            stable,
            canary,
            (100, 0),
            route="api2",
            force={**force, "header": None, "cookie": "canary"},
        )
    )
    c2 = await jar(w2)
    c2.cookies["canary"] = "1"
    assert [await c2.get() for _ in range(5)] == ["canary"] * 5


async def test_reload_changing_weights_keeps_assigned_clients(named, worker, jar):
    stable, canary = await named("stable"), await named("canary")
    w = await worker(split_config(stable, canary, (50, 50), **STICKY))
    clients = []
    for _ in range(16):
        c = await jar(w)
        clients.append((c, await c.get()))
    assert {arm for _, arm in clients} == {"stable", "canary"}
    # The canary stops taking new clients; the ones it has stay until their cookie expires.
    w.reload(config_of(split_config(stable, canary, (1, 0), **STICKY)))
    for c, arm in clients:
        assert await c.get() == arm and c.set_cookies == []
    newcomers = [await (await jar(w)).get() for _ in range(10)]
    assert newcomers == ["stable"] * 10
    # Weights swapped: still nobody moves.
    w.reload(config_of(split_config(stable, canary, (5, 95), **STICKY)))
    for c, arm in clients:
        assert await c.get() == arm
    # The arm is removed: its clients move, with a new cookie.
    w.reload(config_of(split_config(stable, None, (1, 0), **STICKY)))
    for c, arm in clients:
        assert await c.get() == "stable"
        assert (len(c.set_cookies) == 1) == (arm == "canary")


def _sample(name: str, route: str, pool: str) -> float:
    return REGISTRY.get_sample_value(name, {"route": route, "pool": pool}) or 0.0


async def test_rollback_takes_out_a_canary_answering_half_5xx(named, origin, worker, jar):
    from tests.conftest import response

    stable = await named("stable")
    answered = 0

    async def flaky(o, req, reader, writer):
        nonlocal answered
        answered += 1
        writer.write(response(500 if answered % 2 else 200, b"canary"))

    canary = await origin(flaky)
    rollback = {"max_error_rate": "5%", "min_requests": 40, "window": "60s"}
    force = {"header": "x-canary", "arms": {"1": "canary", "0": "stable"}}
    route = "rb-half"
    data = split_config(
        stable, canary, (50, 50), route=route, rollback=rollback, force=force, **STICKY
    )
    w = await worker(data)
    split = w.runtime.splits[route]
    for _ in range(100):  # a client the split assigned to the canary
        stuck = await jar(w)
        if (await stuck.get()).endswith("canary"):
            break
    assert "lb_arm" in stuck.cookies and split.rolled_back == frozenset()
    before = _sample("lb_split_rollbacks_total", route, "canary")
    c = await jar(w)
    for i in range(80):
        await c.get(headers={"x-canary": str(i % 2)})
    assert split.rolled_back == {"canary"}
    assert _sample("lb_split_rolled_back", route, "canary") == 1.0
    assert _sample("lb_split_rollbacks_total", route, "canary") == before + 1
    # New clients and clients stuck to the canary all go to the stable arm now.
    assert [await (await jar(w)).get() for _ in range(10)] == ["stable"] * 10
    assert await stuck.get() == "stable" and len(stuck.set_cookies) == 1
    # Re-armed (what SIGUSR1 does in a worker): the canary takes new clients again.
    assert rearm_all(w.runtime.splits) == [(route, "canary")]
    assert split.rolled_back == frozenset()
    assert _sample("lb_split_rolled_back", route, "canary") == 0.0
    arms = {await (await jar(w)).get() for _ in range(30)}
    assert any("canary" in a for a in arms)


async def test_no_rollback_when_the_canary_matches_the_stable_error_rate(origin, worker, jar):
    from tests.conftest import response

    counts: Counter[str] = Counter()

    def half_failing(name):
        async def handle(o, req, reader, writer):
            counts[name] += 1
            writer.write(response(500 if counts[name] % 2 else 200, name.encode()))

        return handle

    stable, canary = await origin(half_failing("stable")), await origin(half_failing("canary"))
    rollback = {"max_error_rate": "5%", "min_requests": 40, "window": "60s"}
    force = {"header": "x-canary", "arms": {"1": "canary", "0": "stable"}}
    route = "rb-same"
    w = await worker(
        split_config(stable, canary, (50, 50), route=route, rollback=rollback, force=force)
    )
    c = await jar(w)
    for i in range(200):
        await c.get(headers={"x-canary": str(i % 2)})
    assert counts == {"stable": 100, "canary": 100}
    assert w.runtime.splits[route].rolled_back == frozenset()
    assert _sample("lb_split_rolled_back", route, "canary") == 0.0


async def test_reload_rearms_a_rolled_back_split(named, worker, jar):
    stable, canary = await named("stable"), await named("canary", status=503)
    rollback = {"max_error_rate": "5%", "min_requests": 5, "window": "60s"}
    force = {"header": "x-canary", "arms": {"1": "canary"}}
    route = "rb-reload"
    data = split_config(stable, canary, (50, 50), route=route, rollback=rollback, force=force)
    w = await worker(data)
    c = await jar(w)
    for _ in range(5):
        await c.get(headers={"x-canary": "1"})
    assert w.runtime.splits[route].rolled_back == {"canary"}
    w.reload(config_of(data))
    assert w.runtime.splits[route].rolled_back == frozenset()
    assert _sample("lb_split_rolled_back", route, "canary") == 0.0
