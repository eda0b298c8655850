"""lb's own answers over real sockets: limits (431, 413), timeouts (408, idle, 502/504), servers
and clients that break, and request smuggling (400, close, nothing reaches a server)."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from tests.conftest import Message, handlers, hanging_address, in_flight, one_pool, wait_until

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def assert_lb_error(r: Message, status: int, reason: str) -> None:
    """DESIGN.md: status, `X-LB-Error: <reason>`, a short plain-text body naming the cause."""
    assert r.status == status, r.raw_head
    assert r.header("x-lb-error") == reason
    assert r.header("content-type") == "text/plain; charset=utf-8"
    assert r.body.startswith(b"%d " % status) and len(r.body) < 300
    assert r.header("content-length") == str(len(r.body))


# Limits ------------------------------------------------------------------------------------


async def test_431_headers_too_large(origin, proxy, connect):
    o = await origin()
    w = await proxy(one_pool(o, listeners={"web": {"max_header_size": "1KiB"}}))
    c = await connect(w)
    assert (
        await c.request(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 900 + b"\r\n\r\n")
    ).status == 200
    c = await connect(w)
    r = await c.request(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 2000 + b"\r\n\r\n")
    assert_lb_error(r, 431, "headers_too_large")
    assert r.header("connection") == "close"
    assert await c.closed()
    # A head that never ends is refused once it passes the limit, not buffered.
    c = await connect(w)
    await c.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: ")
    for _ in range(10):
        with contextlib.suppress(ConnectionError):
            await c.send(b"a" * 500)
    assert_lb_error(await c.response(), 431, "headers_too_large")
    assert len(o.requests) == 1


@pytest.fixture
async def limited(origin, proxy):
    o = await origin(handlers.echo())
    routes = [{"match": {}, "pool": "app", "max_body_size": "1KiB"}]
    return o, await proxy(one_pool(o, routes=routes))


async def test_413_by_content_length(limited, connect):
    o, w = limited
    c = await connect(w)
    r = await c.request(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\n\r\n" + b"a" * 1024)
    assert r.status == 200
    r = await c.request(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n")
    assert_lb_error(r, 413, "body_too_large")
    assert await c.closed()
    assert len(o.requests) == 1


async def test_413_by_chunked_body(limited, connect):
    o, w = limited
    c = await connect(w)
    head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    r = await c.request(head + b"400\r\n" + b"a" * 1024 + b"\r\n0\r\n\r\n")
    assert r.status == 200
    await c.send(head + b"300\r\n" + b"a" * 768 + b"\r\n")
    await wait_until(
        lambda: o.received.endswith(b"a" * 768 + b"\r\n") and o.received.count(b"POST /") == 2,
        what="the second body's first chunk (within the limit) at the server",
    )
    with contextlib.suppress(ConnectionError):
        await c.send(b"300\r\n" + b"a" * 768 + b"\r\n0\r\n\r\n")
    assert_lb_error(await c.response(), 413, "body_too_large")
    assert await c.closed()
    assert len(o.requests) == 1
    await wait_until(lambda: in_flight(w) == [0])


# Timeouts ----------------------------------------------------------------------------------


async def test_408_for_a_slow_head_even_if_it_trickles(origin, proxy, connect):
    o = await origin()
    w = await proxy(one_pool(o, defaults={"timeouts": {"client_header": "300ms"}}))
    c = await connect(w)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await c.send(b"GET / HTTP/1.1\r\n")
    for i in range(10):  # a header line every 100 ms: never a complete head
        try:
            r = await c.response(timeout=0.1)
            break
        except TimeoutError:
            await c.send(b"X-%d: y\r\n" % i)
    assert_lb_error(r, 408, "request_timeout")
    assert loop.time() - started < 0.7
    assert await c.closed()
    assert o.connections == 0


async def test_idle_keep_alive_connection_is_closed(origin, proxy, connect):
    o = await origin()
    timeouts = {"idle": "200ms", "client_header": "5s"}
    w = await proxy(one_pool(o, defaults={"timeouts": timeouts}))
    c = await connect(w)
    assert (await c.request(GET)).status == 200
    await asyncio.sleep(0.1)  # fixed on purpose: a pause shorter than the idle timeout
    assert (await c.request(GET)).status == 200  # a request in time restarts the clock
    assert await c.closed(timeout=1.0)
    await wait_until(lambda: not w.connections["web"])
    # A connection that never sends anything is closed (client_header), without a response.
    w = await proxy(one_pool(o, defaults={"timeouts": {"client_header": "200ms"}}))
    c = await connect(w)
    assert await c.closed(timeout=1.0)


async def test_connect_refused_is_502(proxy, connect):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    w = await proxy(
        {
            "listeners": {"web": {}},
            "routes": [{"match": {}, "pool": "app"}],
            "pools": {"app": {"servers": [{"address": f"127.0.0.1:{port}"}]}},
        }
    )
    c = await connect(w)
    r = await c.request(GET)
    assert_lb_error(r, 502, "backend_failed")
    assert b"refused" in r.body
    assert r.header("x-request-id")
    assert in_flight(w) == [0]


async def test_connect_timeout_is_504(proxy, connect):
    with hanging_address(3) as address:
        w = await proxy(
            {
                "listeners": {"web": {}},
                "defaults": {"timeouts": {"connect": "200ms"}},
                "routes": [{"match": {}, "pool": "app"}],
                "pools": {"app": {"servers": [{"address": address}]}},
            }
        )
        c = await connect(w)
        r = await c.request(GET)
        assert_lb_error(r, 504, "backend_timeout")
        assert b"timeout" in r.body
        assert in_flight(w) == [0]


async def test_request_timeout_is_504(origin, proxy, connect):
    o = await origin(handlers.never())
    w = await proxy(one_pool(o, defaults={"timeouts": {"request": "200ms"}}))
    c = await connect(w)
    r = await c.request(GET)
    assert_lb_error(r, 504, "backend_timeout")
    assert in_flight(w) == [0]
    # The client connection is still usable (the request was complete).
    o.handler = handlers.fixed(b"back")
    assert (await c.request(GET)).body == b"back"


async def test_route_timeout_overrides_default(origin, proxy, connect):
    o = await origin(handlers.slow(0.3, b"slow"))
    routes = [
        {"match": {"path": "/short"}, "pool": "app", "timeouts": {"request": "100ms"}},
        {"match": {}, "pool": "app"},
    ]
    w = await proxy(one_pool(o, routes=routes, defaults={"timeouts": {"request": "1s"}}))
    c = await connect(w)
    assert (await c.request(GET)).body == b"slow"
    r = await (await connect(w)).request(b"GET /short HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_lb_error(r, 504, "backend_timeout")


async def test_slow_request_body_is_408(origin, proxy, connect):
    o = await origin(handlers.echo())
    w = await proxy(one_pool(o, defaults={"timeouts": {"request": "200ms"}}))
    c = await connect(w)
    await c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    r = await c.response()
    assert_lb_error(r, 408, "request_timeout")
    assert await c.closed()


# Servers and clients that break --------------------------------------------------------------


async def test_server_closing_before_answering_is_502(origin, proxy, connect):
    o = await origin(handlers.raw(b"", close=True))
    w = await proxy(one_pool(o))
    r = await (await connect(w)).request(GET)
    assert_lb_error(r, 502, "backend_failed")


async def test_malformed_server_response_is_502(origin, proxy, connect):
    o = await origin(handlers.raw(b"HTTP/1.1 abc nope\r\n\r\n", close=True))
    w = await proxy(one_pool(o))
    r = await (await connect(w)).request(GET)
    assert_lb_error(r, 502, "backend_failed")


async def test_server_closing_mid_response_closes_the_client(origin, proxy, connect):
    o = await origin(handlers.truncated(1000, b"partial"))
    w = await proxy(one_pool(o))
    c = await connect(w)
    await c.send(GET)
    data = await c.read_all()  # ends: lb closed the connection
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: 1000" in head.lower()
    assert body == b"partial"
    await wait_until(lambda: not w.connections["web"] and in_flight(w) == [0])


async def test_server_closing_mid_chunked_response_closes_the_client(origin, proxy, connect):
    o = await origin(
        handlers.raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", True)
    )
    w = await proxy(one_pool(o))
    c = await connect(w)
    await c.send(GET)
    data = await c.read_all()
    assert data.endswith(b"3\r\nabc\r\n")  # no last chunk: the client sees it was cut
    await wait_until(lambda: not w.connections["web"] and in_flight(w) == [0])


async def test_stale_kept_alive_connection_is_retried(origin, proxy, connect):
    o = await origin(handlers.fixed(b"ok"))
    w = await proxy(one_pool(o))
    c = await connect(w)
    assert (await c.request(GET)).body == b"ok"
    for writer in o.writers:  # the server drops its idle keep-alive connection
        writer.transport.abort()
    await wait_until(
        lambda: not any(s.idle for p in w.runtime.pools.values() for s in p.servers),
        what="lb to drop the kept-alive connection the server closed",
    )
    assert (await c.request(GET)).body == b"ok"
    assert o.connections == 2


@pytest.mark.parametrize("when", ["body", "waiting", "streaming"])
async def test_client_disconnect_leaks_nothing(origin, proxy, connect, when):
    if when == "streaming":
        o = await origin(handlers.large(64 * 1024 * 1024))
    else:
        o = await origin(handlers.never())
    w = await proxy(one_pool(o))
    c = await connect(w)
    if when == "body":
        await c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
    else:
        await c.send(GET)
    await wait_until(lambda: o.requests)
    await wait_until(lambda: in_flight(w) == [1])
    if when == "body":
        c.close()  # FIN mid-body: the request can never complete
    else:
        c.reset()
    await wait_until(lambda: not w.connections["web"] and in_flight(w) == [0])
    upstream = [u for u in w.ticker.watched if type(u).__name__ == "UpstreamConnection"]
    await wait_until(lambda: not [u for u in upstream if u.call is not None])


async def test_error_before_the_body_arrived_says_it_closes(origin, proxy, connect):
    o = await origin()
    w = await proxy(one_pool(o, routes=[{"match": {"path": "/only"}, "pool": "app"}]))
    c = await connect(w)
    r = await c.request(b"POST /other HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
    assert_lb_error(r, 404, "no_route")
    # The body never read leaves the connection out of step: lb closes it, and says so.
    assert r.header("connection") == "close"
    assert await c.closed()


async def test_half_closed_client_still_gets_its_answer(origin, proxy, connect):
    o = await origin(handlers.slow(0.1, b"late"))
    w = await proxy(one_pool(o))
    c = await connect(w)
    await c.send(GET)
    c.writer.write_eof()
    r = await c.response()
    assert (r.status, r.body, r.header("connection")) == (200, b"late", "close")
    assert await c.closed()


# Request smuggling: 400, close, nothing reaches a server -----------------------------------

SMUGGLING = {
    "cl_and_te": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_and_cl": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 5\r\n\r\n0\r\n\r\n",
    "duplicate_cl_same": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
    b"Content-Length: 3\r\n\r\nabc",
    "duplicate_cl_differs": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
    b"Content-Length: 4\r\n\r\nabcd",
    "cl_list": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
    "cl_alpha": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "cl_plus": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
    "cl_negative": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "cl_hex": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\nabc",
    "cl_space_inside": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1 2\r\n\r\n",
    "te_chunked_not_final": b"POST / HTTP/1.1\r\nHost: x\r\n"
    b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    # (An unknown coding alone, gzip or identity, is 501: test_l7_edges.)
    "te_twice": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_in_http10": b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "chunk_size_alpha": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"zz\r\nabc\r\n0\r\n\r\n",
    "chunk_size_negative": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"-3\r\nabc\r\n0\r\n\r\n",
    "chunk_size_overflow": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"fffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
    "chunk_data_too_long": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabcdef\r\n0\r\n\r\n",
    "obs_fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n",
    "obs_fold_tab": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n\tc\r\n\r\n",
    "bare_lf_everywhere": b"GET / HTTP/1.1\nHost: x\n\n",
    "bare_lf_in_header": b"GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",
    "bare_lf_at_end": b"GET / HTTP/1.1\r\nHost: x\r\n\n",
    "bare_cr_in_value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\rc\r\n\r\n",
    "nul_in_value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\x00c\r\n\r\n",
    "nul_in_name": b"GET / HTTP/1.1\r\nHost: x\r\nX\x00A: b\r\n\r\n",
    "space_before_colon": b"GET / HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n",
    "space_before_colon_cl": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\nabc",
    "space_before_colon_te": b"POST / HTTP/1.1\r\nHost: x\r\n"
    b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "tab_before_colon": b"GET / HTTP/1.1\r\nHost: x\r\nX-A\t: b\r\n\r\n",
    "missing_host": b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n",
    "two_hosts": b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    "control_char_in_value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\x01c\r\n\r\n",
    "space_in_target": b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
    # Not HTTP/1.x: llhttp takes a request line without a version as HTTP/0.9, h11 takes any
    # digit.digit; either way lb would forward it as an HTTP/1.1 request it is not.
    "http09": b"GET /\r\n\r\n",
    "http2_version": b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
    "h2_preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
}


@pytest.mark.parametrize("name", list(SMUGGLING))
async def test_smuggling_vector_is_refused(origin, proxy, connect, name):
    o = await origin(handlers.echo())
    w = await proxy(one_pool(o))
    # Warm the pool first: a kept-alive server connection must not carry a bad request's head.
    assert (await (await connect(w)).request(GET)).status == 200
    before = bytes(o.received)
    c = await connect(w)
    await c.send(SMUGGLING[name])
    r = await c.response()
    assert_lb_error(r, 400, "bad_request")
    assert r.header("connection") == "close"
    assert await c.closed()
    # Fixed on purpose: the server must stay silent, nothing of the refused request may
    # arrive on the kept-alive connection (or a new one) even a little later.
    await asyncio.sleep(0.05)
    assert bytes(o.received) == before, "part of a refused request reached the server"
    assert len(o.requests) == 1


async def test_bad_request_behind_a_good_one_in_a_pipeline(origin, proxy, connect):
    o = await origin(handlers.echo())
    w = await proxy(one_pool(o))
    c = await connect(w)
    await c.send(GET + SMUGGLING["cl_and_te"])
    assert (await c.response()).status == 200
    assert_lb_error(await c.response(), 400, "bad_request")
    assert await c.closed()
    assert len(o.requests) == 1


async def test_smuggled_bytes_in_a_body_stay_in_the_body(origin, proxy, connect):
    """A valid request whose body looks like a request: the server gets one request."""
    o = await origin(handlers.echo())
    w = await proxy(one_pool(o))
    inner = b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
    c = await connect(w)
    r = await c.request(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(inner), inner)
    )
    assert r.status == 200
    assert [m.target for m in o.requests] == ["/"]
    assert o.requests[0].body == inner
