"""The response cache through real sockets, in-process store (one Proxy in this process):
what a client sees (X-Cache, Age, bodies) and how many requests reach the origin."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import REGISTRY

from lb.proxy.proxy import Proxy
from tests.conftest import Message, Origin, RawClient, handlers, one_pool, response


def cached(origin: Origin, **route_cache: Any) -> dict[str, Any]:
    return one_pool(
        origin, routes=[{"name": "cached", "match": {}, "pool": "app", "cache": route_cache}]
    )


async def get(connect: Callable[..., Awaitable[RawClient]], lb: Proxy, path: str = "/p",
              extra: str = "") -> Message:  # fmt: skip
    client = await connect(lb)
    try:
        return await client.request(f"GET {path} HTTP/1.1\r\nHost: h\r\n{extra}\r\n".encode())
    finally:
        client.close()


def counting(body: bytes, headers: list[tuple[str, str]]) -> Any:
    """An origin handler answering `body` with `headers`, its requests counted."""
    return handlers.fixed(body, 200, headers)


async def test_a_fresh_response_is_served_from_the_cache(proxy, origin, connect) -> None:
    o = await origin(counting(b"v1", [("cache-control", "max-age=60")]))
    lb = await proxy(cached(o))
    first = await get(connect, lb)
    second = await get(connect, lb)
    assert (first.status, first.header("x-cache"), first.body) == (200, "MISS", b"v1")
    assert (second.status, second.header("x-cache"), second.body) == (200, "HIT", b"v1")
    assert second.header("age") is not None
    assert len(o.requests) == 1


async def test_default_ttl_only_when_the_response_says_nothing(proxy, origin, connect) -> None:
    silent = await origin(counting(b"a", []))
    lb = await proxy(cached(silent, default_ttl="60s"))
    await get(connect, lb)
    assert (await get(connect, lb)).header("x-cache") == "HIT"
    nostore = await origin(counting(b"b", [("cache-control", "no-store")]))
    lb2 = await proxy(cached(nostore, default_ttl="60s"))
    await get(connect, lb2)
    assert (await get(connect, lb2)).header("x-cache") == "MISS"
    assert len(nostore.requests) == 2


async def test_head_is_answered_from_a_stored_get(proxy, origin, connect) -> None:
    o = await origin(counting(b"body!", [("cache-control", "max-age=60")]))
    lb = await proxy(cached(o))
    await get(connect, lb)
    client = await connect(lb)
    await client.send(b"HEAD /p HTTP/1.1\r\nHost: h\r\n\r\n")
    msg = await client.response(head_only=True)
    assert msg.status == 200 and msg.header("x-cache") == "HIT"
    assert msg.header("content-length") == "5"
    assert len(o.requests) == 1


async def test_vary_keeps_variants_apart(proxy, origin, connect) -> None:
    async def handle(origin: Origin, req: Message, reader: Any, writer: Any) -> None:
        origin.requests.append(req)
        enc = req.header("accept-encoding") or "none"
        fields = [("cache-control", "max-age=60"), ("vary", "Accept-Encoding")]
        writer.write(response(200, enc.encode(), fields))

    o = await origin(handle)
    lb = await proxy(cached(o))
    gz = "Accept-Encoding: gzip\r\n"
    br = "Accept-Encoding: br\r\n"
    assert (await get(connect, lb, extra=gz)).body == b"gzip"
    assert (await get(connect, lb, extra=br)).body == b"br"
    hit_gz = await get(connect, lb, extra=gz)
    hit_br = await get(connect, lb, extra=br)
    assert (hit_gz.body, hit_gz.header("x-cache")) == (b"gzip", "HIT")
    assert (hit_br.body, hit_br.header("x-cache")) == (b"br", "HIT")
    assert len(o.requests) == 2


async def test_a_304_refreshes_the_stored_headers(proxy, origin, connect) -> None:
    async def handle(origin: Origin, req: Message, reader: Any, writer: Any) -> None:
        origin.requests.append(req)
        if req.header("if-none-match") == '"v1"':
            writer.write(
                response(304, b"", [("etag", '"v1"'), ("cache-control", "max-age=60"),
                                    ("x-version", "refreshed")], length=False)
            )  # fmt: skip
        else:
            writer.write(
                response(200, b"body", [("etag", '"v1"'), ("cache-control", "max-age=0"),
                                        ("x-version", "first")])
            )  # fmt: skip

    o = await origin(handle)
    lb = await proxy(cached(o))
    first = await get(connect, lb)
    assert (first.header("x-cache"), first.header("x-version")) == ("MISS", "first")
    second = await get(connect, lb)  # stale at once: validated with If-None-Match
    assert (second.status, second.body) == (200, b"body")
    assert (second.header("x-cache"), second.header("x-version")) == ("REVALIDATED", "refreshed")
    assert o.requests[1].header("if-none-match") == '"v1"'
    third = await get(connect, lb)  # now fresh for 60s, from the 304's Cache-Control
    assert (third.header("x-cache"), third.header("x-version")) == ("HIT", "refreshed")
    assert len(o.requests) == 2


async def test_clients_conditional_is_answered_304_from_a_fresh_entry(
    proxy, origin, connect
) -> None:
    o = await origin(counting(b"x", [("cache-control", "max-age=60"), ("etag", '"e"')]))
    lb = await proxy(cached(o))
    await get(connect, lb)
    msg = await get(connect, lb, extra='If-None-Match: "e"\r\n')
    assert msg.status == 304 and msg.header("etag") == '"e"' and msg.body == b""
    assert len(o.requests) == 1


async def test_concurrent_misses_reach_the_origin_once(proxy, origin, connect) -> None:
    o = await origin(handlers.slow(0.3, b"slow"))  # the first fetch is still running

    lb = await proxy(cached(o, default_ttl="60s"))
    answers = await asyncio.gather(*(get(connect, lb) for _ in range(100)))
    assert all(a.status == 200 and a.body == b"slow" for a in answers)
    assert len(o.requests) == 1
    assert sorted({a.header("x-cache") for a in answers}) == ["HIT", "MISS"]


async def test_an_unsafe_request_invalidates_its_target(proxy, origin, connect) -> None:
    o = await origin(counting(b"ok", [("cache-control", "max-age=60")]))
    lb = await proxy(cached(o))
    await get(connect, lb)
    assert (await get(connect, lb)).header("x-cache") == "HIT"
    client = await connect(lb)
    posted = await client.request(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx")
    client.close()
    assert posted.status == 200 and posted.header("x-cache") == "BYPASS"
    assert (await get(connect, lb)).header("x-cache") == "MISS"


async def test_lb_targeted_fields_win_and_are_not_forwarded(proxy, origin, connect) -> None:
    o = await origin(
        counting(b"t", [("cache-control", "no-store"), ("lb-cache-control", "max-age=60"),
                        ("cdn-cache-control", "max-age=5")])
    )  # fmt: skip
    lb = await proxy(cached(o))
    first = await get(connect, lb)
    assert not first.has("lb-cache-control") and not first.has("cdn-cache-control")
    assert first.header("cache-control") == "no-store"  # meant for the clients: kept
    assert (await get(connect, lb)).header("x-cache") == "HIT"


async def test_only_if_cached_on_a_miss_is_504(proxy, origin, connect) -> None:
    o = await origin(counting(b"x", [("cache-control", "max-age=60")]))
    lb = await proxy(cached(o))
    msg = await get(connect, lb, extra="Cache-Control: only-if-cached\r\n")
    assert msg.status == 504 and not o.requests


async def test_a_response_over_max_object_size_streams_but_is_not_stored(
    proxy, origin, connect
) -> None:
    o = await origin(counting(b"y" * 5000, [("cache-control", "max-age=60")]))
    data = cached(o)
    data["cache"] = {"max_object_size": "1KiB"}
    lb = await proxy(data)
    assert (await get(connect, lb)).body == b"y" * 5000
    assert (await get(connect, lb)).header("x-cache") == "MISS"
    assert len(o.requests) == 2


async def test_stale_if_error_answers_stale_when_the_origin_fails(proxy, origin, connect) -> None:
    state = {"fail": False}

    async def handle(origin: Origin, req: Message, reader: Any, writer: Any) -> None:
        origin.requests.append(req)
        if state["fail"]:
            writer.write(response(503, b"down"))
        else:
            writer.write(
                response(200, b"good", [("cache-control", "max-age=0, stale-if-error=60"),
                                        ("etag", '"g"')])
            )  # fmt: skip

    o = await origin(handle)
    lb = await proxy(cached(o))
    assert (await get(connect, lb)).body == b"good"
    state["fail"] = True
    msg = await get(connect, lb)
    assert (msg.status, msg.body, msg.header("x-cache")) == (200, b"good", "STALE")


async def test_a_hit_is_as_old_as_its_stored_age_plus_its_time_here(
    proxy, origin, connect, monkeypatch
) -> None:
    # RFC 9111 §4.2.3: a hit's Age is the Age it came with plus the time it has been stored,
    # computed for each answer.
    o = await origin(counting(b"old", [("cache-control", "max-age=600"), ("age", "100")]))
    lb = await proxy(cached(o))
    await get(connect, lb)
    first = await get(connect, lb)
    later = time.time() + 30
    # time.time itself, not the filter's name for the module: a compiled filter (mypyc) does
    # not look its globals up again.
    monkeypatch.setattr(time, "time", lambda: later)
    second = await get(connect, lb)
    assert first.header("x-cache") == "HIT" and first.header("age") in ("100", "101")
    assert second.header("x-cache") == "HIT" and second.header("age") in ("130", "131")
    assert len(o.requests) == 1


async def test_a_clients_own_directives_still_reach_a_fresh_entry(proxy, origin, connect) -> None:
    # §5.2.1.4 and §5.4: a client's no-cache (or Pragma: no-cache) is honoured by default, so
    # a fresh entry does not answer it as a plain request's hit; max-stale does not stop one.
    o = await origin(counting(b"x", [("cache-control", "max-age=60")]))
    lb = await proxy(cached(o))
    await get(connect, lb)
    no_cache = await get(connect, lb, extra="Cache-Control: no-cache\r\n")
    pragma = await get(connect, lb, extra="Pragma: no-cache\r\n")
    max_stale = await get(connect, lb, extra="Cache-Control: max-stale\r\n")
    assert (no_cache.header("x-cache"), pragma.header("x-cache")) == ("MISS", "MISS")
    assert max_stale.header("x-cache") == "HIT"
    assert len(o.requests) == 3


async def test_misses_of_a_url_never_storable_are_not_queued_behind_each_other(
    proxy, origin, connect
) -> None:
    # Hit-for-pass (Varnish's name): once a URL's response was not storable, its misses go
    # to the server side by side for a while, instead of waiting for one another's fetch.
    inflight = [0, 0]  # now, most at once

    async def handle(origin: Origin, req: Message, reader: Any, writer: Any) -> None:
        origin.requests.append(req)
        inflight[0] += 1
        inflight[1] = max(inflight)
        await asyncio.sleep(0.2)
        inflight[0] -= 1
        writer.write(response(200, b"mine", [("cache-control", "no-store")]))

    o = await origin(handle)
    lb = await proxy(cached(o, default_ttl="60s"))
    assert (await get(connect, lb)).header("x-cache") == "MISS"
    inflight[1] = 0
    answers = await asyncio.gather(*(get(connect, lb) for _ in range(5)))
    assert [(a.body, a.header("x-cache")) for a in answers] == [(b"mine", "MISS")] * 5
    assert inflight[1] == 5 and len(o.requests) == 6


async def test_each_result_is_counted_once_per_request(proxy, origin, connect) -> None:
    def count(result: str) -> float:
        labels = {"route": "cached", "result": result}
        return REGISTRY.get_sample_value("lb_cache_requests_total", labels) or 0.0

    o = await origin(counting(b"x", [("cache-control", "max-age=60")]))
    lb = await proxy(cached(o))
    before = {r: count(r) for r in ("hit", "miss", "bypass")}
    await get(connect, lb, "/a")  # miss
    await get(connect, lb, "/a")  # hit
    await get(connect, lb, "/b")  # miss
    client = await connect(lb)
    await client.request(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
    client.close()
    lb.cache.flush_metrics()
    got = {r: count(r) - before[r] for r in before}
    assert got == {"hit": 1, "miss": 2, "bypass": 1}


async def test_each_host_has_its_own_entry_for_a_path(proxy, origin, connect) -> None:
    """The same target under two Hosts is two URLs (RFC 9111 §2: the key is the target URI,
    which holds the host): each stored and answered apart, under every parser."""

    async def by_host(o: Origin, req: Message, reader: Any, writer: Any) -> None:
        o.requests.append(req)
        body = f"site {req.header('host')}".encode()
        writer.write(response(200, body, [("cache-control", "max-age=60")]))

    o = await origin(by_host)
    lb = await proxy(cached(o))

    async def at(host: str) -> tuple[str | None, bytes]:
        client = await connect(lb)
        try:
            msg = await client.request(f"GET /p HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        finally:
            client.close()
        return msg.header("x-cache"), msg.body

    assert await at("a.example") == ("MISS", b"site a.example")
    assert await at("b.example") == ("MISS", b"site b.example")
    assert await at("a.example") == ("HIT", b"site a.example")
    assert await at("b.example") == ("HIT", b"site b.example")
    assert await at("A.example") == ("HIT", b"site a.example")  # (host names: any case)
    assert len(o.requests) == 2
