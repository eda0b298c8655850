"""The exchange and its upstream call, driven through fake transports: no sockets, no timers
but the waiting room's. Each case is a script of what the client and the server do, and what
the client must then have received (and whether its connection is closed)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from lb.config import load_config_text
from lb.proxy.http.client import ClientConnection
from lb.proxy.http.connection import UpstreamConnection, UpstreamServer
from lb.proxy.proxy import Proxy

CONFIG = """
version: 1
listeners: {web: {bind: "127.0.0.1:0"}}
routes:
  - {name: small, match: {path_prefix: /small}, pool: app, max_body_size: 16}
  - {name: all, match: {}, pool: app}
pools:
  app:
    queue: {max: 1, timeout: 50ms}
    servers: [{address: "127.0.0.1:1", max_connections: %(max)d}]
access_log: {enabled: false}
"""

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class FakeTransport:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False
        self.eof = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    abort = close

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True


@dataclass
class Rig:
    proxy: Proxy
    servers: list[tuple[UpstreamConnection, FakeTransport]] = field(default_factory=list)

    async def connect(self, server: UpstreamServer, timeout: float) -> UpstreamConnection:
        conn = UpstreamConnection(server, self.proxy.ticker, self.proxy.parser_kind)
        transport = FakeTransport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        self.servers.append((conn, transport))
        return conn

    def client(self) -> tuple[ClientConnection, FakeTransport]:
        conn = ClientConnection(self.proxy, self.proxy.runtime.listeners["web"])
        transport = FakeTransport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        return conn, transport

    def server(self, i: int = -1) -> tuple[UpstreamConnection, FakeTransport]:
        return self.servers[i]


async def settle() -> None:
    """Let connects (tasks) and callbacks run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def rig(max_connections: int = 10) -> Rig:
    proxy = Proxy(load_config_text(CONFIG % {"max": max_connections}), reuse_port=False)
    r = Rig(proxy)
    proxy.connect = r.connect  # type: ignore[method-assign]
    return r


# Each script step: ("client", bytes) | ("server", bytes) | ("server_close",) |
# ("client_close",) | ("wait", seconds) — a fixed wait only where a timer is the point.
CASES: list[tuple[str, int, list[tuple[Any, ...]], list[bytes], bool, int]] = [
    # name, max_connections, script, what the client received (in order), closed, servers
    (
        "pipelined requests are answered in order",
        10,
        [
            ("client", b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"),
            ("server", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA"),
            ("server", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nB"),
        ],
        [b"200 OK", b"\r\n\r\nA", b"200 OK", b"\r\n\r\nB"],
        False,
        1,
    ),
    (
        "a stale kept-alive connection is retried once on a new one",
        10,
        [
            ("client", b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"),
            ("server", OK),
            ("client", b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"),
            ("server_close",),  # the kept-alive socket was closed by the server
            ("server", OK),  # ... and the new one answers
        ],
        [b"200 OK", b"200 OK"],
        False,
        2,
    ),
    (
        "client gone mid-body: the server connection is dropped",
        10,
        [
            ("client", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc"),
            ("client_close",),
        ],
        [],
        True,
        1,
    ),
    (
        "server gone mid-body: the client connection is closed, nothing made up",
        10,
        [
            ("client", b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"),
            ("server", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
            ("server_close",),
        ],
        [b"200 OK", b"abc"],
        True,
        1,
    ),
    (
        "a 1xx is passed on before the final answer",
        10,
        [
            ("client", b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"),
            ("server", b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n" + OK),
        ],
        [b"103 Early Hints", b"200 OK"],
        False,
        1,
    ),
    (
        "Upgrade: after 101 bytes flow both ways",
        10,
        [
            (
                "client",
                b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            ),
            (
                "server",
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
                b"Upgrade: websocket\r\n\r\nfrom-server",
            ),
            ("client", b"from-client"),
        ],
        [b"101 Switching Protocols", b"from-server"],
        False,
        1,
    ),
    (
        "a body over max_body_size gets 413 and the connection closes",
        10,
        [("client", b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n" + b"x" * 40)],
        [b"413 Content Too Large", b"x-lb-error: body_too_large"],
        True,
        0,
    ),
    (
        "a request that waits past the waiting room's timeout gets 503 queue_timeout",
        1,
        [
            ("client", b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"),  # takes the only slot
            ("client2", b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"),  # waits for it
            ("wait", 0.2),  # the waiting room's timeout (50ms) is the point
        ],
        [b"503 Service Unavailable", b"x-lb-error: queue_timeout"],
        False,
        1,
    ),
]


@pytest.mark.parametrize(
    ("max_connections", "script", "received", "closed", "servers"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_exchange_states(
    max_connections: int,
    script: list[tuple[Any, ...]],
    received: list[bytes],
    closed: bool,
    servers: int,
) -> None:
    r = await rig(max_connections)
    client, client_transport = r.client()
    watched, watched_transport = client, client_transport  # the client the case asserts on
    for step in script:
        kind = step[0]
        if kind == "client":
            client.data_received(step[1])
        elif kind == "client2":  # a second client: the one whose answer is asserted
            watched, watched_transport = r.client()
            watched.data_received(step[1])
        elif kind == "server":
            r.server()[0].data_received(step[1])
        elif kind == "server_close":
            conn, transport = r.server()
            transport.closed = True
            conn.connection_lost(None)
        elif kind == "client_close":
            client_transport.closed = True
            client.connection_lost(None)
        elif kind == "wait":
            await asyncio.sleep(step[1])
        await settle()
    data = bytes(watched_transport.data)
    at = 0
    for expected in received:
        found = data.find(expected, at)
        assert found != -1, f"{expected!r} not in {data!r} after byte {at}"
        at = found + len(expected)
    assert watched_transport.closed == closed
    assert len(r.servers) == servers
    if kind == "client_close":
        assert r.server()[1].closed  # the server connection is not kept half-used
    if "Upgrade" in repr(script):
        assert r.server()[1].data.endswith(b"from-client")


async def test_a_request_filter_may_wait_and_then_answer() -> None:
    """A filter that returns an awaitable holds the request until it resolves; its Answer is
    then sent, and no server is asked."""
    from lb.proxy.http.chain import Chain
    from lb.proxy.http.pipeline import Answer, Filter

    class Gate(Filter):
        name = "gate"

        def __init__(self) -> None:
            self.future: asyncio.Future[Answer | None] = asyncio.get_running_loop().create_future()

        def on_request(self, session: Any) -> Any:
            return self.future

    r = await rig()
    gate = Gate()
    runtime = r.proxy.runtime
    for key, chain in list(runtime.chains.items()):
        runtime.chains[key] = Chain([gate, *chain.filters])
    client, transport = r.client()
    client.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    await settle()
    assert transport.data == b"" and not r.servers  # waiting on the filter
    gate.future.set_result(Answer(204, b"No Content"))
    await settle()
    assert transport.data.startswith(b"HTTP/1.1 204 No Content\r\n")
    assert not r.servers


async def test_a_filter_wait_past_its_timeout_goes_on_to_the_server() -> None:
    from lb.proxy.http.chain import Chain
    from lb.proxy.http.pipeline import Filter

    class Slow(Filter):
        name = "slow"
        wait_timeout = 0.05

        def on_request(self, session: Any) -> Any:
            return asyncio.sleep(10)

    r = await rig()
    runtime = r.proxy.runtime
    for key, chain in list(runtime.chains.items()):
        runtime.chains[key] = Chain([Slow(), *chain.filters])
    client, transport = r.client()
    client.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.2)  # past the filter's wait_timeout: the point of the test
    await settle()
    assert len(r.servers) == 1
    r.server()[0].data_received(OK)
    await settle()
    assert transport.data.startswith(b"HTTP/1.1 200 OK\r\n")
