"""lb.proxy.tls.listener's TlsTransport keeps the contract of asyncio's transports: a client's
half-close still gets its answer, an exception in the protocol ends the connection, and close()
writes everything written before it, even from resume_writing()."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from typing import Any

import pytest

from tests.conftest import handlers, wait_until
from tests.tls.conftest import get
from tests.tls.conftest import one_listener_config as config

pytestmark = pytest.mark.timeout(30)


class BioClient:
    """A blocking TLS client over a plain socket (OpenSSL through memory BIOs), so the test
    controls the TCP socket itself: e.g. half-close it (FIN) with the TLS session intact."""

    def __init__(self, address: tuple[str, int], ctx: ssl.SSLContext) -> None:
        self.sock = socket.create_connection(address, timeout=5)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname="a.test")
        self._io(self.obj.do_handshake)

    def _flush(self) -> None:
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def _io(self, fn: Any, *args: Any) -> Any:
        while True:
            try:
                result = fn(*args)
            except ssl.SSLWantReadError:
                self._flush()
                data = self.sock.recv(65536)
                if data:
                    self.inc.write(data)
                else:
                    self.inc.write_eof()
            else:
                self._flush()
                return result

    def send(self, data: bytes) -> None:
        self._io(self.obj.write, data)

    def read_all(self) -> bytes:
        """Decrypted bytes until the server closes (close_notify or FIN)."""
        out = b""
        while True:
            try:
                chunk = self._io(self.obj.read, 65536)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return out
            if not chunk:
                return out
            out += chunk

    def close(self) -> None:
        self.sock.close()


def half_closed_get(address: tuple[str, int], ctx: ssl.SSLContext) -> bytes:
    client = BioClient(address, ctx)
    try:
        client.send(get("a.test"))
        client.sock.shutdown(socket.SHUT_WR)  # TCP FIN, no close_notify (a ragged EOF)
        return client.read_all()
    finally:
        client.close()


async def test_half_closed_client_still_gets_its_answer(pki, origin, lb) -> None:
    """eof_received() returning True keeps the connection writable. The client sent a whole
    request then a FIN without close_notify: ClientConnection keeps the connection open to
    answer (as on a plain listener, tests/proxy/test_l7_errors.py). OpenSSL 3 treats such a
    FIN as a fatal protocol error unless OP_IGNORE_UNEXPECTED_EOF is set, and the answer's
    SSL_write would fail."""
    app = await origin(handlers.fixed(b"answer"))
    worker = await lb(config(pki, app.address))
    reply = await asyncio.to_thread(half_closed_get, worker.addresses["web"], pki.client_context())
    assert reply.startswith(b"HTTP/1.1 200")
    assert reply.endswith(b"answer")


# A protocol of the test's own, plugged into the TLS listener in place of ClientConnection.


class Probe(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: Any = None
        self.lost: list[Exception | None] = []
        self.received = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


async def probe_server(pki, origin, lb, make) -> tuple[Any, list[Any]]:
    app = await origin(handlers.fixed())
    worker = await lb(config(pki, app.address))
    made: list[Any] = []

    def factory() -> Any:
        protocol = make()
        made.append(protocol)
        return protocol

    worker.servers["web"].factory = factory  # type: ignore[attr-defined]
    return worker, made


async def test_an_exception_in_data_received_closes_the_connection(pki, origin, lb) -> None:
    """As asyncio's transports do, an exception from data_received (or eof_received) ends the
    connection: closed, and connection_lost(exc) called. Otherwise the connection would stay
    open forever with nobody reading it."""

    class Raising(Probe):
        def data_received(self, data: bytes) -> None:
            raise RuntimeError("a bug in the protocol")

    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda loop, context: None)  # the escaped error, if any
    worker, made = await probe_server(pki, origin, lb, Raising)
    reader, writer = await asyncio.open_connection(
        *worker.addresses["web"], ssl=pki.client_context(), server_hostname="a.test"
    )
    writer.write(b"hello")
    await wait_until(lambda: made and made[0].transport is not None)
    try:
        await wait_until(lambda: made[0].lost, timeout=2)
        async with asyncio.timeout(2):
            assert await reader.read() == b""
    finally:
        writer.transport.abort()
        loop.set_exception_handler(None)


def read_until_closed(address: tuple[str, int], ctx: ssl.SSLContext) -> int:
    """Connects, then reads everything (slowly at first, so lb's writes back up)."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        with ctx.wrap_socket(sock, server_hostname="a.test") as tls:
            time.sleep(0.3)  # fixed on purpose: a slow reader, so lb's writes back up
            total = 0
            try:
                while chunk := tls.recv(1 << 20):
                    total += len(chunk)
            except (ssl.SSLError, ConnectionError):
                pass
            return total


async def test_close_in_resume_writing_keeps_what_was_written(pki, origin, lb) -> None:
    """close() with bytes pending waits for them to be written (asyncio does the same), also
    when the protocol writes more than the socket takes and closes from resume_writing()."""
    first, second = 8 << 20, 8 << 20

    class Writer(Probe):
        resumed = False

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            transport.write(b"a" * first)  # more than the socket takes: pause_writing

        def pause_writing(self) -> None:
            pass

        def resume_writing(self) -> None:
            if not self.resumed:
                self.resumed = True
                self.transport.write(b"b" * second)
                self.transport.close()

    worker, made = await probe_server(pki, origin, lb, Writer)
    total = await asyncio.to_thread(
        read_until_closed, worker.addresses["web"], pki.client_context()
    )
    assert made[0].resumed
    assert total == first + second
