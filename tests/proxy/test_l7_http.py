"""The L7 proxy end to end over real sockets: keep-alive, pipelining, bodies both ways, flow
control, 1xx, HEAD, upgrades, forwarding headers. Every test runs with both parsers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os

from tests.conftest import handlers, one_pool, pattern, wait_until

GET = b"GET %s HTTP/1.1\r\nHost: example.com\r\n\r\n"


def get(path: bytes = b"/") -> bytes:
    return GET % path


async def test_keep_alive_reuses_client_and_server_connections(origin, proxy, connect):
    o = await origin(handlers.fixed(b"hi"))
    w = await proxy(one_pool(o))
    c = await connect(w)
    for i in range(5):
        r = await c.request(get(b"/%d" % i))
        assert (r.status, r.body) == (200, b"hi")
        assert not r.has("connection")
    assert o.connections == 1
    assert [m.target for m in o.requests] == [f"/{i}" for i in range(5)]
    # A second client reuses the same kept-alive server connection.
    c2 = await connect(w)
    assert (await c2.request(get())).status == 200
    assert o.connections == 1


async def test_idle_server_connections_close_after_the_pool_idle_timeout(origin, proxy, connect):
    o = await origin(handlers.fixed(b"hi"))
    config = one_pool(o)
    config["pools"]["app"]["timeouts"] = {"idle": "300ms"}
    w = await proxy(config)
    c = await connect(w)
    assert (await c.request(get())).status == 200
    assert (await c.request(get())).status == 200
    assert o.connections == 1  # kept alive between requests close together
    (server_side,) = o.writers
    await wait_until(server_side.is_closing, timeout=3, what="lb to close the idle connection")
    assert (await c.request(get())).status == 200
    assert o.connections == 2  # the idle one was closed after 300ms, not the default 60s


async def test_pipelined_requests_are_answered_in_order(origin, proxy, connect):
    o = await origin(handlers.echo())
    w = await proxy(one_pool(o))
    c = await connect(w)
    await c.send(
        get(b"/a") + get(b"/b") + b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    )
    targets = []
    for _ in range(3):
        r = await c.response()
        assert r.status == 200
        targets.append(json.loads(r.body)["target"])
    assert targets == ["/a", "/b", "/c"]
    assert o.requests[2].body == b"abc"
    assert o.connections == 1


async def test_pipelined_slow_first_response_keeps_order(origin, proxy, connect):
    slow = await origin(handlers.slow(0.2, b"first"))
    fast = await origin(handlers.fixed(b"second"))
    w = await proxy(
        one_pool(
            slow,
            routes=[
                {"match": {"path": "/slow"}, "pool": "slow"},
                {"match": {}, "pool": "fast"},
            ],
            pools={
                "slow": {"servers": [{"address": slow.address}]},
                "fast": {"servers": [{"address": fast.address}]},
            },
        )
    )
    c = await connect(w)
    await c.send(get(b"/slow") + get(b"/fast"))
    assert (await c.response()).body == b"first"
    assert (await c.response()).body == b"second"


async def test_big_bodies_both_ways_content_length_and_chunked(origin, proxy, connect):
    o = await origin(handlers.sha256())
    w = await proxy(one_pool(o))
    body = os.urandom(5 * 1024 * 1024)
    digest = hashlib.sha256(body).hexdigest()
    c = await connect(w)
    # Content-Length up; chunked down (the origin answers chunked).
    head = b"PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    r = await c.request(head + body, timeout=10)
    assert r.status == 200
    assert r.header("x-sha256") == digest
    assert r.header("transfer-encoding") == "chunked"
    assert hashlib.sha256(r.body).hexdigest() == digest
    # Chunked up, in uneven chunks.
    head = b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    await c.send(head)
    step = 300_001
    for i in range(0, len(body), step):
        part = body[i : i + step]
        await c.send(b"%x\r\n%s\r\n" % (len(part), part))
    await c.send(b"0\r\n\r\n")
    r = await c.response(timeout=10)
    assert r.header("x-sha256") == digest
    assert hashlib.sha256(r.body).hexdigest() == digest
    assert o.requests[1].header("transfer-encoding") == "chunked"
    assert o.connections == 1


async def test_content_length_response_passes_through(origin, proxy, connect):
    o = await origin(handlers.large(3 * 1024 * 1024))
    w = await proxy(one_pool(o))
    c = await connect(w)
    r = await c.request(get(), timeout=10)
    assert r.header("content-length") == str(3 * 1024 * 1024)
    assert not r.has("transfer-encoding")
    assert r.body == pattern(3 * 1024 * 1024)


def lb_write_buffers(worker) -> list[int]:
    return [
        conn.transport.get_write_buffer_size()
        for conns in worker.connections.values()
        for conn in conns
        if conn.transport is not None
    ]


async def test_client_that_does_not_read_bounds_the_response_buffer(origin, proxy, connect):
    size = 512 * 1024 * 1024
    o = await origin(handlers.large(size))
    w = await proxy(one_pool(o))
    c = await connect(w)
    await c.send(get())

    def origin_blocked() -> bool:
        """lb stopped reading the server, and the origin's socket is full: its writes wait
        above the high-water mark, so its drain() blocks until lb reads again."""
        exchanges = [
            e for conns in w.connections.values() for conn in conns for e in conn.exchanges
        ]
        upstreams = [
            e.call.upstream.transport for e in exchanges if e.call and e.call.upstream is not None
        ]
        if len(o.writers) != 1 or len(upstreams) != 1 or upstreams[0] is None:
            return False
        origin_side = o.writers[0].transport
        full = origin_side.get_write_buffer_size() > origin_side.get_write_buffer_limits()[1]
        return full and not upstreams[0].is_reading()

    await wait_until(origin_blocked, what="lb to stop reading the server")
    first = o.sent
    # The origin's writes block: lb stopped reading the server because the client stopped
    # reading lb. Only socket buffers (a few MiB on loopback) hold data, never lb itself.
    assert o.sent < 64 * 1024 * 1024
    assert max(lb_write_buffers(w)) < 1024 * 1024
    # Reading resumes the flow.
    got = 0
    async with asyncio.timeout(5):
        while got < first + 8 * 1024 * 1024:
            got += len(await c.reader.read(1 << 20))
    assert o.sent > first


async def test_server_that_does_not_read_bounds_the_request_buffer(origin, proxy, connect):
    o = await origin(handlers.never())  # reads the head, then never the body
    w = await proxy(one_pool(o, defaults={"timeouts": {"request": "5s"}}))
    c = await connect(w)
    size = 512 * 1024 * 1024
    await c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
    sent = 0
    chunk = b"x" * (1 << 20)
    try:
        async with asyncio.timeout(0.8):
            while sent < size:
                c.writer.write(chunk)
                await c.writer.drain()
                sent += len(chunk)
    except TimeoutError:
        pass
    assert sent < 96 * 1024 * 1024, "lb kept reading a body its server did not take"
    upstream = [u for u in w.ticker.watched if type(u).__name__ == "UpstreamConnection"]
    assert upstream and all(u.transport.get_write_buffer_size() < 2 * 1024 * 1024 for u in upstream)


async def test_expect_100_continue(origin, proxy, connect):
    o = await origin(handlers.informational(100))
    w = await proxy(one_pool(o))
    c = await connect(w)
    await c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    interim = await c.response()
    assert interim.status == 100
    await c.send(b"data")
    r = await c.response()
    assert (r.status, r.body) == (200, b"got:data")
    assert o.requests[0].header("expect") == "100-continue"


async def test_103_early_hints_passed_on(origin, proxy, connect):
    o = await origin(handlers.informational(103, [("link", "</s.css>; rel=preload")]))
    w = await proxy(one_pool(o))
    c = await connect(w)
    await c.send(get())
    hints = await c.response()
    assert hints.status == 103
    assert hints.header("link") == "</s.css>; rel=preload"
    r = await c.response()
    assert r.status == 200
    assert (await c.request(get())).status in (103, 200)


async def test_head_keeps_content_length_and_has_no_body(origin, proxy, connect):
    o = await origin(handlers.head_aware(b"0123456789"))
    w = await proxy(one_pool(o))
    c = await connect(w)
    await c.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    r = await c.response(head_only=True)
    assert (r.status, r.header("content-length")) == (200, "10")
    # The next response on the same connection starts right after the head: no body bytes.
    r = await c.request(get())
    assert (r.status, r.body) == (200, b"0123456789")
    assert o.connections == 1


async def test_websocket_upgrade_is_a_tunnel(origin, proxy, connect):
    o = await origin(handlers.upgrade_echo())
    w = await proxy(one_pool(o))
    c = await connect(w)
    await c.send(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        b"early"
    )
    r = await c.response(head_only=True)
    assert r.status == 101
    assert r.header("upgrade") == "websocket"
    assert "upgrade" in r.header("connection").lower()
    req = o.requests[0]
    assert req.header("upgrade") == "websocket"
    assert req.header("sec-websocket-key") == "dGhlIHNhbXBsZSBub25jZQ=="
    expected = b"server-firstEARLY"
    got = b""
    async with asyncio.timeout(2):
        while len(got) < len(expected):
            got += await c.reader.read(100)
    assert got == expected
    for msg in (b"ping", b"x" * 200_000):
        await c.send(msg)
        got = b""
        async with asyncio.timeout(2):
            while len(got) < len(msg):
                got += await c.reader.read(1 << 16)
        assert got == msg.upper()
    c.writer.close()
    await wait_until(lambda: not any(w.connections.values()), timeout=2)


async def test_idle_tunnel_is_closed_after_the_tunnel_timeout(origin, proxy, connect):
    o = await origin(handlers.upgrade_echo())
    w = await proxy(one_pool(o, defaults={"timeouts": {"tunnel": "400ms"}}))
    c = await connect(w)
    await c.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: ws\r\n\r\n")
    r = await c.response(head_only=True)
    assert r.status == 101
    got = b""
    async with asyncio.timeout(2):
        while len(got) < len(b"server-first"):
            got += await c.reader.read(100)
    # Traffic keeps it open past the timeout...
    for _ in range(4):
        await asyncio.sleep(0.2)  # fixed on purpose: traffic spaced below the tunnel timeout
        await c.send(b"ping")
        async with asyncio.timeout(2):
            assert await c.reader.read(100) == b"PING"
    # ...silence closes both sides.
    async with asyncio.timeout(2):
        assert await c.reader.read(100) == b""
    await wait_until(lambda: not any(w.connections.values()), timeout=2)


async def test_bytes_before_the_101_are_bounded(origin, proxy, connect):
    o = await origin(handlers.never())  # takes the upgrade request, never answers
    w = await proxy(one_pool(o, defaults={"timeouts": {"request": "5s"}}))
    c = await connect(w)
    await c.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: ws\r\n\r\n")
    sent = 0
    chunk = b"x" * (1 << 20)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(0.5):
            while sent < 512 * 1024 * 1024:
                c.writer.write(chunk)
                await c.writer.drain()
                sent += len(chunk)
    assert sent < 64 * 1024 * 1024, "lb buffered tunnel bytes the server had not accepted"


async def test_declined_upgrade_is_a_plain_response(origin, proxy, connect):
    o = await origin(handlers.fixed(b"no upgrade here"))
    w = await proxy(one_pool(o))
    c = await connect(w)
    await c.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n")
    r = await c.response()
    assert (r.status, r.body) == (200, b"no upgrade here")


async def test_forwarding_headers(origin, proxy, connect):
    o = await origin(handlers.echo())
    w = await proxy(one_pool(o))
    c = await connect(w)
    r = await c.request(
        b"GET /p?q=1 HTTP/1.1\r\nHost: Example.com:8080\r\nX-Forwarded-For: 10.0.0.1\r\n"
        b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\nX-Request-ID: abc-123\r\n\r\n"
    )
    doc = json.loads(r.body)
    headers = {}
    for name, value in doc["headers"]:
        headers.setdefault(name.lower(), []).append(value)
    assert doc["target"] == "/p?q=1"
    assert headers["host"] == ["Example.com:8080"]  # passed through unchanged
    assert headers["x-forwarded-for"] == ["10.0.0.1, 127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == ["Example.com:8080"]
    assert headers["x-request-id"] == ["abc-123"]
    assert r.all("x-request-id") == ["abc-123"]
    # Without one (or with an unusable one), an id is generated, sent on and echoed.
    for extra in (b"", b"X-Request-ID: has space\r\n"):
        r = await c.request(b"GET / HTTP/1.1\r\nHost: h\r\n" + extra + b"\r\n")
        sent = [v for n, v in json.loads(r.body)["headers"] if n.lower() == "x-request-id"]
        assert len(sent) == 1 and sent[0] != "has space"
        assert r.all("x-request-id") == sent


async def test_hop_by_hop_headers_removed_both_ways(origin, proxy, connect):
    o = await origin(
        handlers.raw(
            b"HTTP/1.1 200 OK\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n"
            b"Connection: keep-alive, X-Secret, X-Other\r\nX-Other: 2\r\nX-Kept: 3\r\n"
            b"Proxy-Connection: keep-alive\r\nTrailer: X-T\r\nContent-Length: 2\r\n\r\nok"
        )
    )
    w = await proxy(one_pool(o))
    c = await connect(w)
    r = await c.request(
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n"
        b"Keep-Alive: 300\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nTrailer: X-T\r\n"
        b"Upgrade: websocket\r\nX-Keep: yes\r\n\r\n"
    )
    got = o.requests[0]
    for name in ("connection", "x-drop", "keep-alive", "te", "proxy-connection", "trailer"):
        assert not got.has(name), name
    assert not got.has("upgrade")  # not listed in Connection: not an upgrade, and hop-by-hop
    assert got.header("x-keep") == "yes"
    assert r.body == b"ok"
    for name in ("x-secret", "x-other", "keep-alive", "proxy-connection", "trailer"):
        assert not r.has(name), name
    assert r.header("x-kept") == "3"
    assert r.header("content-length") == "2"


async def test_http10_client(origin, proxy, connect):
    o = await origin(handlers.chunked([b"abc", b"def"]))
    w = await proxy(one_pool(o))
    c = await connect(w)
    await c.send(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    data = await c.read_all()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()  # a 1.0 client cannot read chunked
    assert body == b"abcdef"
    # HTTP/1.0 with keep-alive and a Content-Length response stays open.
    o2 = await origin(handlers.fixed(b"ten bytes!"))
    w2 = await proxy(one_pool(o2))
    c2 = await connect(w2)
    for _ in range(2):
        r = await c2.request(b"GET / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        assert (r.status, r.body) == (200, b"ten bytes!")
        # ...and says so: a 1.0 client closes unless told keep-alive was granted.
        assert r.header("connection").lower() == "keep-alive"


async def test_close_delimited_response_is_rechunked(origin, proxy, connect):
    o = await origin(handlers.close_delimited(b"the end is the close"))
    w = await proxy(one_pool(o))
    c = await connect(w)
    r = await c.request(get())
    assert r.header("transfer-encoding") == "chunked"
    assert r.body == b"the end is the close"
    # The client connection stays usable; the server one was closed and a new one opened.
    r = await c.request(get())
    assert r.body == b"the end is the close"
    assert o.connections == 2


async def test_client_connection_close_is_honoured(origin, proxy, connect):
    o = await origin(handlers.fixed(b"bye"))
    w = await proxy(one_pool(o))
    c = await connect(w)
    r = await c.request(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert r.header("connection") == "close"
    assert await c.closed()
