"""Regressions from a review of the pipeline and the cache: each scenario once let lb do
something a user would notice (resend a POST, cache a cut-short body, buffer without bound for
a client that does not read, recurse on long pipelines, refresh a private entry...)."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

from tests.conftest import (
    Message,
    Origin,
    _record,
    handlers,
    in_flight,
    one_pool,
    response,
    wait_until,
)


def cached(origin: Origin, top: dict[str, Any] | None = None, **route_cache: Any) -> dict[str, Any]:
    cfg = one_pool(
        origin, routes=[{"name": "cached", "match": {}, "pool": "app", "cache": route_cache}]
    )
    if top:
        cfg["cache"] = top
    return cfg


async def get(connect: Any, lb: Any, path: str = "/p", extra: str = "") -> Message:
    c = await connect(lb)
    try:
        return await c.request(f"GET {path} HTTP/1.1\r\nHost: h\r\n{extra}\r\n".encode())
    finally:
        c.close()


# F1: a POST (no body) on a reused kept-alive connection is sent twice when the server
# closes after receiving it (RFC 9112 §9.3.1: a proxy MUST NOT retry non-idempotent requests).
async def test_post_is_not_resent_after_a_reused_connection_closes(proxy, origin, connect):
    async def handle(o: Origin, req: Message, reader: Any, writer: Any) -> str | None:
        await _record(o, req, reader)
        if req.method == "POST":
            return "close"  # processed (say, an order placed), then the server dies
        writer.write(response(200, b"ok"))
        return None

    o = await origin(handle)
    lb = await proxy(one_pool(o))
    c = await connect(lb)
    assert (await c.request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")).status == 200
    await c.request(b"POST /orders HTTP/1.1\r\nHost: h\r\ncontent-length: 0\r\n\r\n")
    posts = [r for r in o.requests if r.method == "POST"]
    assert len(posts) == 1, f"the POST reached the origin {len(posts)} times"


# F2: a close-delimited response cut by a TCP reset is taken as complete: stored, then
# served to the next client as a HIT (and the first client got a clean last-chunk).
async def test_a_reset_close_delimited_body_is_not_stored(proxy, origin, connect):
    async def handle(o: Origin, req: Message, reader: Any, writer: Any) -> str:
        await _record(o, req, reader)
        writer.write(response(200, b"partial-", [("cache-control", "max-age=60")], length=False))
        await writer.drain()
        await asyncio.sleep(0.05)  # the scenario: part of the body first, then the crash
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST: the server crashed mid-body
        return "close"

    o = await origin(handle)
    lb = await proxy(cached(o))
    c = await connect(lb)
    await c.send(b"GET /p HTTP/1.1\r\nHost: h\r\n\r\n")
    await c.read_all()  # cut short: lb closes the client's connection
    await wait_until(lambda: not lb.cache.flights, what="the first request to be over")
    c2 = await connect(lb)
    await c2.send(b"GET /p HTTP/1.1\r\nHost: h\r\n\r\n")
    data = await c2.read_all()
    c2.close()
    assert b"x-cache: HIT" not in data.lower(), f"truncated body served as a HIT: {data!r}"
    assert len(o.requests) == 2  # the second went to the server again


# F3: the origin's own Age is stored and a HIT then carries two Age fields.
async def test_hit_has_one_age(proxy, origin, connect):
    o = await origin(handlers.fixed(b"v", 200, [("cache-control", "max-age=600"), ("age", "100")]))
    lb = await proxy(cached(o))
    await get(connect, lb)
    hit = await get(connect, lb)
    assert hit.header("x-cache") == "HIT"
    assert len(hit.all("age")) == 1, hit.all("age")


# F4: pipelined requests answered synchronously (cache hits) recurse exchange_done ->
# _start -> answer -> _finish -> exchange_done: a burst of them overflows the stack.
async def test_many_pipelined_hits(proxy, origin, connect):
    o = await origin(handlers.fixed(b"v", 200, [("cache-control", "max-age=600")]))
    lb = await proxy(cached(o))
    await get(connect, lb)
    c = await connect(lb)
    n = 400
    await c.send(b"GET /p HTTP/1.1\r\nHost: h\r\n\r\n" * n)
    got = 0
    try:
        for _ in range(n):
            m = await c.response()
            assert m.status == 200
            got += 1
    except Exception as e:
        raise AssertionError(f"only {got}/{n} pipelined answers: {e!r}") from e


# F5: a 304 from the cache carries Content-Length: 0 (RFC 9110 §8.6).
async def test_cached_304_has_no_zero_content_length(proxy, origin, connect):
    o = await origin(
        handlers.fixed(b"0123456789", 200, [("cache-control", "max-age=60"), ("etag", '"e"')])
    )
    lb = await proxy(cached(o))
    await get(connect, lb)
    m = await get(connect, lb, extra='If-None-Match: "e"\r\n')
    assert m.status == 304
    assert m.header("content-length") in (None, "10"), m.header("content-length")


# F6: a client that never reads: cache HITs keep being written into its transport buffer,
# nothing stops reading its requests (CLIENT_FULL is defined, never used).
async def test_a_client_that_does_not_read_is_not_buffered_without_bound(proxy, origin, connect):
    big = b"x" * (900 * 1024)
    o = await origin(handlers.fixed(big, 200, [("cache-control", "max-age=600")]))
    lb = await proxy(cached(o))
    await get(connect, lb)
    c = await connect(lb)
    # keep the client's own receive buffer small so lb's send side fills up
    for _ in range(20):
        await c.send(b"GET /p HTTP/1.1\r\nHost: h\r\n\r\n" * 50)
        await asyncio.sleep(0.02)  # the scenario: a client that keeps sending, never reads
    conns = [x for s in lb.connections.values() for x in s]
    buffered = max(x.transport.get_write_buffer_size() for x in conns if x.transport)
    assert buffered < 64 * 1024 * 1024, f"lb holds {buffered >> 20} MiB for one non-reading client"


# F7: the client of a revalidation leaves: the revalidation call is not cancelled and keeps
# its server slot (in_flight) until the origin answers or the request timeout.
async def test_revalidation_call_is_cancelled_when_its_client_leaves(proxy, origin, connect):
    async def handle(o: Origin, req: Message, reader: Any, writer: Any) -> str | None:
        await _record(o, req, reader)
        if req.header("if-none-match"):
            await asyncio.sleep(3)  # a slow validation
        writer.write(response(200, b"b", [("etag", '"v"'), ("cache-control", "max-age=0")]))
        return None

    o = await origin(handle)
    lb = await proxy(cached(o))
    await get(connect, lb)
    c = await connect(lb)
    await c.send(b"GET /p HTTP/1.1\r\nHost: h\r\n\r\n")
    await wait_until(lambda: sum(in_flight(lb)) == 1, what="the revalidation to be sent")
    c.reset()
    await wait_until(
        lambda: sum(in_flight(lb)) == 0, timeout=2, what="the revalidation to give its slot back"
    )


# F8: a 304 that now says private (or no-store) still refreshes the shared entry, which
# then answers other clients.
async def test_a_private_304_does_not_refresh_the_shared_entry(proxy, origin, connect):
    async def handle(o: Origin, req: Message, reader: Any, writer: Any) -> None:
        await _record(o, req, reader)
        if req.header("if-none-match") == '"v1"':
            writer.write(
                response(
                    304,
                    b"",
                    [("etag", '"v1"'), ("cache-control", "private, max-age=600")],
                    length=False,
                )
            )
        else:
            writer.write(response(200, b"body", [("etag", '"v1"'), ("cache-control", "max-age=0")]))

    o = await origin(handle)
    lb = await proxy(cached(o))
    await get(connect, lb)
    await get(connect, lb)  # revalidated: the 304 says private
    third = await get(connect, lb, extra="Cookie: someone=else\r\n")
    assert third.header("x-cache") != "HIT", (
        third.header("x-cache"),
        third.header("cache-control"),
    )
