"""Exchange life-cycle edge cases over real sockets: flow-control reasons that must be lifted,
server slots handed on, kept-alive server connections that must not be reused, and
pipelined requests of a half-closed client."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import REGISTRY

from lb.proxy.http.flow import CONNECTING, SERVER_FULL
from tests.conftest import (
    Message,
    Origin,
    _record,
    handlers,
    in_flight,
    lb_garbage,
    one_pool,
    response,
    wait_until,
)

GET = b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n"


def queue_depth() -> float:
    return REGISTRY.get_sample_value("lb_pool_queue_depth", {"pool": "app"}) or 0.0


def held(events: dict[str, asyncio.Event], statuses: dict[str, int] | None = None) -> Any:
    """Answers /NAME once events[NAME] is set (at once for names without an event), with
    statuses[NAME] (200 by default)."""

    async def handle(origin: Origin, req: Message, reader: Any, writer: Any) -> None:
        await _record(origin, req, reader)
        name = req.target.lstrip("/")
        if name in events:
            await events[name].wait()
        status = (statuses or {}).get(name, 200)
        writer.write(response(status, b"%s:%d" % (name.encode(), len(req.body))))

    return handle


async def test_queued_upload_larger_than_connect_buffer_completes(proxy, origin, connect):
    """A request waiting in the pool's queue buffers its body up to CONNECT_BUFFER and pauses
    the client; when it gets the kept-alive connection the previous request released, the
    client must be read again."""
    release = asyncio.Event()
    o = await origin(held({"hold": release}))
    w = await proxy(
        {
            "listeners": {"web": {}},
            "routes": [{"name": "default", "match": {}, "pool": "app"}],
            "pools": {
                "app": {
                    "servers": [{"address": o.address, "max_connections": 1}],
                    "queue": {"max": 10, "timeout": "5s"},
                }
            },
        }
    )
    a, b = await connect(w), await connect(w)
    await a.send(GET % b"hold")
    await wait_until(lambda: o.requests)
    size = 1024 * 1024
    b.writer.write(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
    b.writer.write(b"x" * size)  # not drained: lb reads what it buffers, then pauses
    await wait_until(
        lambda: any(
            conn.gate.reasons & (CONNECTING | SERVER_FULL) for conn in w.connections["web"]
        ),
        what="lb to pause reading b, its buffer for a queued request full",
    )
    release.set()
    assert (await a.response()).body == b"hold:0"
    r = await b.response(timeout=2.0)
    assert (r.status, r.body) == (200, b"up:%d" % size)
    await wait_until(lambda: in_flight(w) == [0])


async def test_retry_hands_the_freed_slot_to_a_waiting_request(proxy, origin, connect):
    """A request retried elsewhere frees its server's slot: the oldest waiter gets it, rather
    than the slot staying unused while both wait."""
    events = {"1": asyncio.Event(), "2": asyncio.Event()}
    statuses = {"1": 503}
    o1 = await origin(held(events, statuses))
    o2 = await origin(held(events, statuses))
    w = await proxy(
        {
            "listeners": {"web": {}},
            "routes": [
                {
                    "name": "default",
                    "match": {},
                    "pool": "app",
                    "retries": {"attempts": 1, "on": [503]},
                }
            ],
            "pools": {
                "app": {
                    "servers": [
                        {"address": o1.address, "max_connections": 1},
                        {"address": o2.address, "max_connections": 1},
                    ],
                    "queue": {"max": 10, "timeout": "5s"},
                }
            },
        }
    )
    c1, c2, c3 = [await connect(w) for _ in range(3)]
    await c1.send(GET % b"1")
    await c2.send(GET % b"2")
    await wait_until(lambda: len(o1.requests) + len(o2.requests) == 2)
    await c3.send(GET % b"3")
    await wait_until(lambda: queue_depth() == 1, what="c3 waiting: both servers are full")
    events["1"].set()  # /1 is answered 503 and retried: its server is free again
    r3 = await c3.response(timeout=1.0)
    assert (r3.status, r3.body) == (200, b"3:0")
    events["2"].set()
    assert (await c2.response()).status == 200
    r1 = await c1.response()
    assert r1.status == 503  # the other server answered 503 too; no server left to try
    await wait_until(lambda: in_flight(w) == [0, 0])


async def test_junk_after_a_response_does_not_poison_the_server_connection(proxy, origin, connect):
    """A server that sends bytes after a complete response: that connection is closed, and a
    later request (a POST, which is never retried) is not answered 502 because of it."""
    calls = [0]

    async def handle(origin: Origin, req: Message, reader: Any, writer: Any) -> None:
        await _record(origin, req, reader)
        calls[0] += 1
        if calls[0] == 1:
            writer.write(response(200, b"ok") + b"JUNK\r\n")
        else:
            writer.write(response(200, b"second"))

    o = await origin(handle)
    w = await proxy(one_pool(o))
    c = await connect(w)
    r = await c.request(GET % b"")
    assert (r.status, r.body) == (200, b"ok")
    # No wait: the junk came in the same write as the response, so lb read it with the
    # response (httptools then closes the connection; h11's adapter drops the bytes).
    r = await c.request(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    assert (r.status, r.body) == (200, b"second")
    await wait_until(lambda: in_flight(w) == [0])


async def test_half_closed_client_gets_every_pipelined_answer(proxy, origin, connect):
    o = await origin(handlers.slow(0.05, b"late"))
    w = await proxy(one_pool(o))
    c = await connect(w)
    await c.send(GET % b"a" + GET % b"b")
    c.writer.write_eof()
    first = await c.response()
    assert (first.status, first.body) == (200, b"late")
    second = await c.response()
    assert (second.status, second.body, second.header("connection")) == (200, b"late", "close")
    assert await c.closed()
    assert [m.target for m in o.requests] == ["/a", "/b"]


async def test_bad_body_behind_a_good_request_in_a_pipeline(proxy, origin, connect):
    """A pipelined request whose body turns out malformed (a bad chunk) is refused in its turn:
    the request before it still gets its answer, then the 400, then the close."""
    o = await origin(handlers.slow(0.05, b"first"))
    w = await proxy(one_pool(o))
    c = await connect(w)
    bad = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
    await c.send(GET % b"a" + bad)
    first = await c.response()
    assert (first.status, first.body) == (200, b"first")
    second = await c.response()
    assert (second.status, second.header("x-lb-error")) == (400, "bad_request")
    assert second.header("connection") == "close"
    assert await c.closed()
    assert [m.target for m in o.requests] == ["/a"]


async def test_closed_connections_are_freed_at_once(proxy, origin, connect):
    """Client and server connections that close are freed by refcounting, not left in
    reference cycles for the cyclic GC: a busy proxy would otherwise hold the memory of many
    closed connections and pay for collecting them."""
    o = await origin(handlers.close_delimited())  # the server closes after every response
    w = await proxy(one_pool(o))
    with lb_garbage() as garbage:
        for _ in range(3):
            c = await connect(w)
            msg = await c.request(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert msg.status == 200 and msg.body == b"until-close"
            assert await c.closed()
        await wait_until(lambda: not w.connections["web"] and not in_flight(w)[0])
    assert garbage == []


async def test_a_stopping_worker_answers_what_it_has_and_closes_the_connection(
    proxy, origin, connect
):
    """Once a worker is stopping (a drain or shutdown begun), each kept-alive connection gets
    the answer to the request it sent, with `Connection: close`, then is closed: a server's
    answer in flight, and lb's own (no route: 404)."""
    o = await origin(handlers.slow(0.2, b"late"))
    w = await proxy(one_pool(o, routes=[{"name": "a", "match": {"path": "/a"}, "pool": "app"}]))
    proxied, own = await connect(w), await connect(w)
    assert (await own.request(GET % b"nope")).header("connection") is None  # kept alive
    await proxied.send(GET % b"a")
    await wait_until(lambda: len(o.requests) == 1, what="the request at the origin")
    w.stopping = True  # (what shutdown() sets first)
    answer = await proxied.response()
    assert (answer.status, answer.body, answer.header("connection")) == (200, b"late", "close")
    assert await proxied.closed()
    answer = await own.request(GET % b"nope")
    assert (answer.status, answer.header("connection")) == (404, "close")
    assert await own.closed()
