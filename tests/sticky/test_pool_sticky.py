"""Cookie-insert server affinity (`pools.NAME.sticky`) over real sockets."""

from __future__ import annotations

from tests.sticky.conftest import config_of


def pool_config(*origins, sticky=None):
    return {
        "listeners": {"web": {}},
        "routes": [{"name": "default", "match": {}, "pool": "app"}],
        "pools": {
            "app": {
                "servers": [{"address": o.address} for o in origins],
                "sticky": sticky or {"cookie": "lb_srv", "ttl": "30m"},
            }
        },
    }


async def test_first_answer_sets_an_opaque_cookie_with_the_attributes(named, worker, jar):
    a, b = await named("a"), await named("b")
    w = await worker(pool_config(a, b))
    c = await jar(w)
    await c.get()
    [cookie] = c.set_cookies
    name, _, rest = cookie.partition("=")
    value, *attrs = [p.strip() for p in rest.split(";")]
    assert name == "lb_srv"
    assert sorted(attrs) == sorted(["Path=/", "Max-Age=1800", "HttpOnly", "SameSite=Lax"])
    for o in (a, b):  # names the server opaquely
        assert o.address not in value and str(o.port) not in value


async def test_sticky_client_keeps_its_server_then_moves_once_when_it_goes_down(named, worker, jar):
    origins = {n: await named(n) for n in ("a", "b", "c")}
    w = await worker(pool_config(*origins.values()))
    c = await jar(w)
    first = await c.get()
    cookie = c.cookies["lb_srv"]
    for _ in range(200):
        assert await c.get() == first
        assert c.set_cookies == []  # the cookie still names this server: not sent again
    # Its server goes down: the request goes elsewhere and the cookie is re-issued.
    await origins[first].close()
    moved = await c.get()
    assert moved != first
    assert len(c.set_cookies) == 1 and c.cookies["lb_srv"] != cookie
    for _ in range(50):
        assert await c.get() == moved
        assert c.set_cookies == []


async def test_drained_or_unhealthy_server_moves_the_client(named, worker, jar):
    a, b = await named("a"), await named("b")
    w = await worker(pool_config(a, b))
    c = await jar(w)
    first = await c.get()
    servers = {s.address: s for s in w.runtime.pools["app"].servers}
    origin_of = {"a": a, "b": b}
    servers[origin_of[first].address].state.drained = True
    second = await c.get()
    assert second != first and len(c.set_cookies) == 1
    servers[origin_of[second].address].state.healthy = False  # as a health check would
    servers[origin_of[first].address].state.drained = False
    assert await c.get() == first and len(c.set_cookies) == 1


async def test_forged_stale_or_foreign_cookies_are_ignored(named, worker, jar):
    a, b = await named("a"), await named("b")
    w = await worker(pool_config(a, b))
    c = await jar(w)
    await c.get()
    real = c.cookies["lb_srv"]
    ident, expires, sig = real.split(".")
    forged = [
        "garbage",
        "",
        "a.b.c",
        f"{ident}.{expires}.{'A' * 16}",  # bad signature
        f"{ident}.{int(expires, 16) + 999:x}.{sig}",  # extended expiry
        f"{'B' * 16}.{expires}.{sig}",
        "x" * 4000,
        "%00%ff\\",
    ]
    for value in forged:
        c.cookies["lb_srv"] = value
        assert await c.get() in ("a", "b")  # served, never an error
        assert len(c.set_cookies) == 1  # and given a real cookie
        assert c.cookies["lb_srv"] != value


async def test_cookie_from_another_instance_with_the_same_secret_is_honoured(named, worker, jar):
    origins = {n: await named(n) for n in ("a", "b", "c", "d")}
    w1 = await worker(pool_config(*origins.values()))
    w2 = await worker(pool_config(*origins.values()))
    c1, c2 = await jar(w1), await jar(w2)
    for _ in range(8):  # several clients, so a match by chance is ruled out
        c1.cookies.clear()
        first = await c1.get()
        c2.cookies = dict(c1.cookies)
        assert await c2.get() == first and c2.set_cookies == []


async def test_removed_server_makes_its_cookie_stale_on_reload(named, worker, jar):
    a, b = await named("a"), await named("b")
    w = await worker(pool_config(a, b))
    c = await jar(w)
    first = await c.get()
    keep = b if first == "a" else a
    w.reload(config_of(pool_config(keep)))
    assert await c.get() == ("b" if first == "a" else "a")
    assert len(c.set_cookies) == 1
