"""The TLS listener's own transport (lb.proxy.tls.listener): a PROXY header read in clear before
the handshake, failed and stalled handshakes logged and counted, and large bodies both ways
with flow control."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import socket
import ssl
import struct
import termios
from collections.abc import Callable

import pytest

from lb.core.proxy_protocol import V2_SIGNATURE
from tests.conftest import beyond_socket_buffers, handlers, pattern, wait_until
from tests.l4.conftest import metric
from tests.tls.conftest import get, tls_connect
from tests.tls.conftest import one_listener_config as config

pytestmark = pytest.mark.timeout(30)

V1 = b"PROXY TCP4 198.51.100.7 10.0.0.1 4000 443\r\n"
V2 = (
    V2_SIGNATURE
    + b"\x21\x11\x00\x0c"
    + bytes([203, 0, 113, 9, 10, 0, 0, 1])
    + struct.pack("!HH", 4000, 443)
)


def proxied_get(
    address: tuple[str, int],
    ctx: ssl.SSLContext,
    parts: list[bytes],
    read: Callable[[bytes], None] = lambda sent: None,
) -> bytes:
    """Blocking: sends `parts` of a PROXY header in clear (after each but the last, `read(all
    sent so far)` returns once lb has read that much), then shakes hands and GETs / over TLS on
    the same connection; returns the whole response. With one part, the header is corked so
    it leaves in the same segment as the ClientHello."""
    with socket.create_connection(address, timeout=5) as sock:
        if len(parts) == 1:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        for i, part in enumerate(parts):
            sock.sendall(part)
            if i < len(parts) - 1:
                read(b"".join(parts[: i + 1]))
        with ctx.wrap_socket(sock, server_hostname="a.test") as tls:
            tls.sendall(get("a.test", extra="Connection: close\r\n"))
            out = b""
            while chunk := tls.recv(65536):
                out += chunk
            return out


@pytest.mark.parametrize(
    ("parts", "client"),
    [
        ([V1], "198.51.100.7"),
        ([V2], "203.0.113.9"),
        ([V1[:9], V1[9:30], V1[30:]], "198.51.100.7"),
        ([V2[:5], V2[5:17], V2[17:]], "203.0.113.9"),
    ],
    ids=["v1-with-hello", "v2-with-hello", "v1-split", "v2-split"],
)
async def test_proxy_header_before_the_handshake(pki, origin, lb, parts, client) -> None:
    app = await origin(handlers.echo())
    worker = await lb(config(pki, app.address, listener_extra="    accept_proxy: true\n"))
    loop = asyncio.get_running_loop()

    def read(sent: bytes) -> None:  # in the client's thread: waits on the loop's
        def lb_has_it() -> bool:
            return [t._proxy_buf for t in worker.servers["web"].starting] == [sent]

        waited = wait_until(lb_has_it, what=f"lb to have read {sent!r} alone")
        asyncio.run_coroutine_threadsafe(waited, loop).result()

    reply = await asyncio.to_thread(
        proxied_get, worker.addresses["web"], pki.client_context(), parts, read
    )
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    headers = dict((k.lower(), v) for k, v in json.loads(body)["headers"])
    assert headers["x-forwarded-for"] == client
    assert headers["x-forwarded-proto"] == "https"


async def test_bad_proxy_header_is_refused_before_the_handshake(pki, origin, lb, caplog) -> None:
    app = await origin(handlers.echo())
    worker = await lb(config(pki, app.address, listener_extra="    accept_proxy: true\n"))
    caplog.set_level(logging.WARNING, logger="lb.tls")
    before = metric("lb_connection_errors_total", listener="web", cause="proxy_header")
    # A client that skipped the header: its ClientHello is not a PROXY header.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await tls_connect(worker.addresses["web"], pki.client_context(), "a.test")
    assert any("bad PROXY header" in r.message for r in caplog.records)
    assert metric("lb_connection_errors_total", listener="web", cause="proxy_header") == before + 1
    assert not app.requests


async def test_failed_and_stalled_handshakes_are_logged_and_counted(
    pki, origin, lb, caplog
) -> None:
    app = await origin(handlers.fixed())
    worker = await lb(config(pki, app.address, tls_extra="      handshake_timeout: 200ms\n"))
    host, port = worker.addresses["web"]
    caplog.set_level(logging.INFO, logger="lb.tls")

    def count(cause: str) -> float:
        return metric("lb_connection_errors_total", listener="web", cause=cause)

    failed, stalled = count("tls_handshake"), count("tls_handshake_timeout")
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")  # plain HTTP to the TLS port
    async with asyncio.timeout(5):
        assert not (await reader.read()).startswith(b"HTTP")
    writer.close()
    assert count("tls_handshake") == failed + 1
    assert any("TLS handshake failed" in r.message for r in caplog.records)

    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"\x16\x03\x01")  # a record header, then nothing
    async with asyncio.timeout(5):
        assert await reader.read() == b""
    writer.close()
    assert count("tls_handshake_timeout") == stalled + 1
    assert any("not finished in time" in r.message for r in caplog.records)

    # Connecting and closing (a TCP health check) is counted but logs nothing at INFO.
    aborted, logged = count("tls_handshake_aborted"), len(caplog.records)
    reader, writer = await asyncio.open_connection(host, port)
    writer.close()
    await wait_until(lambda: count("tls_handshake_aborted") == aborted + 1)
    assert len(caplog.records) == logged
    assert not app.requests


async def test_large_bodies_both_ways(pki, origin, lb) -> None:
    app = await origin(handlers.sha256())
    worker = await lb(config(pki, app.address))
    client = await tls_connect(worker.addresses["web"], pki.client_context(), "a.test")
    body = pattern(6 * 1024 * 1024 + 17)
    reply = await client.request(
        b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
        timeout=20,
    )
    assert reply.status == 200
    assert reply.header("x-sha256") == hashlib.sha256(body).hexdigest()
    assert hashlib.sha256(reply.body).digest() == hashlib.sha256(body).digest()
    client.close()


async def test_a_slow_reader_holds_the_server_back(pki, origin, lb) -> None:
    size = beyond_socket_buffers()
    app = await origin(handlers.large(size))
    worker = await lb(config(pki, app.address))
    client = await tls_connect(worker.addresses["web"], pki.client_context(), "a.test")
    await client.send(get("a.test"))

    def origin_blocked() -> bool:
        """lb stopped reading the server, and the origin's socket is full: its writes wait
        above the high-water mark, so its drain() blocks until lb reads again."""
        exchanges = [e for conn in worker.connections["web"] for e in conn.exchanges]
        upstreams = [
            e.call.upstream.transport for e in exchanges if e.call and e.call.upstream is not None
        ]
        if len(app.writers) != 1 or len(upstreams) != 1 or upstreams[0] is None:
            return False
        origin_side = app.writers[0].transport
        full = origin_side.get_write_buffer_size() > origin_side.get_write_buffer_limits()[1]
        return full and not upstreams[0].is_reading()

    # The client reads nothing meanwhile: lb holds the server back once the sockets' buffers
    # are full, and lb itself holds little of it.
    await wait_until(origin_blocked, what="lb to stop reading the server")
    assert app.sent < size
    [conn] = worker.connections["web"]
    assert conn.transport.get_write_buffer_size() < 1024 * 1024
    reply = await client.response(timeout=20)
    assert reply.status == 200 and reply.body == pattern(size)
    client.close()


async def test_closing_the_listener_drops_handshakes_in_progress(pki, origin, lb) -> None:
    app = await origin(handlers.fixed())
    worker = await lb(config(pki, app.address))
    reader, writer = await asyncio.open_connection(*worker.addresses["web"])
    writer.write(b"\x16\x03\x01")

    def handshake_begun() -> bool:
        """lb has read the start of the ClientHello: its socket holds no unread byte."""
        starting = list(worker.servers["web"].starting)
        if len(starting) != 1:
            return False
        unread = fcntl.ioctl(starting[0]._fd, termios.FIONREAD, b"\0\0\0\0")
        return struct.unpack("i", unread)[0] == 0

    await wait_until(handshake_begun, what="a handshake in progress")
    worker.servers["web"].close()
    async with asyncio.timeout(2):
        assert await reader.read() == b""
    writer.close()


async def test_max_connections_counts_handshakes_in_progress(pki, origin, lb) -> None:
    app = await origin(handlers.fixed())
    worker = await lb(config(pki, app.address, listener_extra="    max_connections: 2\n"))
    host, port = worker.addresses["web"]
    before = metric("lb_connection_errors_total", listener="web", cause="max_connections")
    # Two clients that begin a handshake and never finish it take both places.
    stalled = []
    for _ in range(2):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"\x16\x03\x01\x02")
        stalled.append((reader, writer))
    await wait_until(lambda: len(worker.servers["web"].starting) == 2)
    reader, writer = await asyncio.open_connection(host, port)
    async with asyncio.timeout(2):  # refused at once, not after the handshake timeout
        assert await reader.read() == b""
    writer.close()
    count = metric("lb_connection_errors_total", listener="web", cause="max_connections")
    assert count == before + 1

    # Once they give up, their places are free again.
    for _, w in stalled:
        w.close()
    await wait_until(lambda: not worker.servers["web"].starting)
    client = await tls_connect((host, port), pki.client_context(), "a.test")
    assert (await client.request(get())).status == 200
    client.close()
