"""`mode: tcp` end to end over real sockets: bytes both ways, flow control, half-close, resets,
balancing, connect failures and timeouts, idle timeout, max_connections, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import struct
import time

import pytest

from lb.proxy.l4.tcp import TcpConnection
from lb.proxy.l4.tcp_relay import CHUNK
from tests.conftest import beyond_socket_buffers, hanging_address, wait_until
from tests.integration.helpers import free_port
from tests.l4.conftest import config, metric, open_to, read_all

MiB = 1024 * 1024


def tcp_listener(pool: str = "p", **keys: object) -> dict[str, object]:
    return {"tcp": {"bind": "127.0.0.1:0", "mode": "tcp", "pool": pool, **keys}}


def pool(*addresses: str, **keys: object) -> dict[str, object]:
    return {"p": {"servers": [{"address": a} for a in addresses], **keys}}


async def say_name(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"?")  # overwritten per backend below
    await writer.drain()


def named(name: bytes):  # type: ignore[no-untyped-def]
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(name)
        await writer.drain()
        await reader.read()  # until the client closes

    return handler


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


async def test_100_mib_both_ways_at_once_arrive_byte_identical(tcp_backend, lb):
    up = os.urandom(100 * MiB)
    down = os.urandom(100 * MiB)
    received: dict[str, str] = {}

    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def send() -> None:
            view = memoryview(down)
            for i in range(0, len(down), MiB):
                writer.write(view[i : i + MiB])
                await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        h = hashlib.sha256()
        while data := await reader.read(MiB):
            h.update(data)
        received["up"] = h.hexdigest()
        await sender

    backend = await tcp_backend(exchange)
    worker = await lb(config(tcp_listener(), pool(backend.address)))
    reader, writer = await open_to(worker)

    async def client_send() -> None:
        view = memoryview(up)
        for i in range(0, len(up), MiB):
            writer.write(view[i : i + MiB])
            await writer.drain()
        writer.write_eof()

    started = time.monotonic()
    sender = asyncio.create_task(client_send())
    h = hashlib.sha256()
    total = 0
    while data := await asyncio.wait_for(reader.read(MiB), 10):
        h.update(data)
        total += len(data)
    await sender
    writer.close()
    assert total == len(down)
    assert h.hexdigest() == hashlib.sha256(down).hexdigest()
    await wait_until(lambda: "up" in received)
    assert received["up"] == hashlib.sha256(up).hexdigest()
    assert time.monotonic() - started < 20
    await wait_until(lambda: not worker.connections["tcp"])
    # Published at the worker's next metrics flush (every 0.25 s).
    await wait_until(
        lambda: metric("lb_tcp_bytes_total", listener="tcp", direction="in") >= len(up)
    )
    assert metric("lb_tcp_bytes_total", listener="tcp", direction="out") >= len(down)


async def test_a_slow_client_stops_lb_reading_the_server(tcp_backend, lb):
    """Flow control: the server's bytes wait in the server's socket, not in lb's memory."""
    payload = os.urandom(beyond_socket_buffers())
    sent = asyncio.Event()

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(payload)
        await writer.drain()
        sent.set()
        writer.write_eof()
        await reader.read()

    backend = await tcp_backend(flood)
    worker = await lb(config(tcp_listener(), pool(backend.address)))
    reader, writer = await open_to(worker)
    await wait_until(lambda: bool(worker.connections["tcp"]))
    (conn,) = worker.connections["tcp"]
    assert isinstance(conn, TcpConnection)
    # Fixed on purpose: the server must stay blocked while the client reads nothing for
    # 0.5 s, far longer than lb takes to read the payload if it did not stop.
    await asyncio.sleep(0.5)
    assert not sent.is_set()  # the server is blocked: lb stopped reading it
    assert conn.buffered() <= CHUNK, conn.buffered()
    data = await read_all(reader, 10)
    assert hashlib.sha256(data).digest() == hashlib.sha256(payload).digest()
    writer.close()


async def test_client_half_close_reaches_the_server_and_the_answer_still_flows_back(
    tcp_backend, lb
):
    async def answer_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        question = await reader.read()  # to EOF: the client's FIN must arrive
        for _ in range(3):
            # A slow server: the answer comes in pieces, well after the client's FIN.
            await asyncio.sleep(0.05)
            writer.write(b"answer to " + question + b"\n")
        await writer.drain()

    backend = await tcp_backend(answer_after_eof)
    worker = await lb(config(tcp_listener(), pool(backend.address)))
    reader, writer = await open_to(worker)
    writer.write(b"question")
    writer.write_eof()
    assert await read_all(reader) == b"answer to question\n" * 3
    writer.close()
    await wait_until(lambda: not worker.connections["tcp"])


async def test_server_half_close_and_the_client_keeps_sending(tcp_backend, lb):
    got: list[bytes] = []

    async def banner_then_listen(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(b"banner")
        writer.write_eof()  # the server is done talking, still listening
        got.append(await reader.read())

    backend = await tcp_backend(banner_then_listen)
    worker = await lb(config(tcp_listener(), pool(backend.address)))
    reader, writer = await open_to(worker)
    assert await read_all(reader) == b"banner"
    writer.write(b"after the server's FIN")
    writer.write_eof()
    await wait_until(lambda: bool(got))
    assert got == [b"after the server's FIN"]
    await wait_until(lambda: not worker.connections["tcp"])


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def test_server_reset_closes_the_client(tcp_backend, lb):
    delivered = asyncio.Event()  # the client has the bytes sent before the reset

    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"partial")
        await writer.drain()
        await delivered.wait()
        _reset(writer)

    backend = await tcp_backend(reset)
    worker = await lb(config(tcp_listener(), pool(backend.address)))
    before = metric("lb_connection_errors_total", listener="tcp", cause="server_reset")
    reader, writer = await open_to(worker)
    assert await asyncio.wait_for(reader.readexactly(7), 5) == b"partial"
    delivered.set()
    with pytest.raises(ConnectionResetError):  # passed on as a reset, not as a clean end
        while await asyncio.wait_for(reader.read(100), 5):
            pass
    await wait_until(lambda: not worker.connections["tcp"])
    assert metric("lb_connection_errors_total", listener="tcp", cause="server_reset") == before + 1
    writer.close()


async def test_client_reset_closes_the_server_side(tcp_backend, lb):
    ended = asyncio.Event()
    seen: list[BaseException] = []

    async def wait_end(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()
        except ConnectionResetError as exc:
            seen.append(exc)
        finally:
            ended.set()

    backend = await tcp_backend(wait_end)
    worker = await lb(config(tcp_listener(), pool(backend.address)))
    _reader, writer = await open_to(worker)
    writer.write(b"x")
    await wait_until(lambda: backend.connections == 1)
    _reset(writer)
    await asyncio.wait_for(ended.wait(), 5)
    assert seen, "the server saw a clean end, not the client's reset"
    await wait_until(lambda: not worker.connections["tcp"])
    server = worker.runtime.pools["p"].servers[0]
    assert server.state.in_flight == 0


async def test_round_robin_spreads_connections_in_order(tcp_backend, lb):
    backends = [await tcp_backend(named(n)) for n in (b"a", b"b", b"c")]
    worker = await lb(config(tcp_listener(), pool(*(b.address for b in backends))))
    seen = []
    for _ in range(9):
        reader, writer = await open_to(worker)
        seen.append(await reader.readexactly(1))
        writer.close()
    assert b"".join(seen) == b"abcabcabc"


async def test_least_conn_sends_new_connections_to_the_least_busy(tcp_backend, lb):
    backends = [await tcp_backend(named(n)) for n in (b"a", b"b")]
    worker = await lb(
        config(tcp_listener(), pool(*(b.address for b in backends), balance="least_conn"))
    )
    held = []
    for _ in range(2):  # one on each
        reader, writer = await open_to(worker)
        held.append((await reader.readexactly(1), writer))
    assert sorted(name for name, _ in held) == [b"a", b"b"]
    # Close the one on b: the next two both go to b, then they alternate again.
    for name, writer in held:
        if name == b"b":
            writer.close()
    await wait_until(lambda: worker.runtime.pools["p"].servers[1].state.in_flight == 0)
    reader, writer = await open_to(worker)
    assert await reader.readexactly(1) == b"b"
    for _, w in held:
        w.close()
    writer.close()


async def test_ip_hash_keeps_a_client_on_one_server(tcp_backend, lb):
    backends = [await tcp_backend(named(n)) for n in (b"a", b"b", b"c")]
    worker = await lb(
        config(tcp_listener(), pool(*(b.address for b in backends), balance="ip_hash"))
    )
    seen = set()
    for _ in range(6):
        reader, writer = await open_to(worker)
        seen.add(await reader.readexactly(1))
        writer.close()
    assert len(seen) == 1


async def test_refused_server_is_skipped(tcp_backend, lb):
    live = await tcp_backend(named(b"L"))
    dead = f"127.0.0.1:{free_port()}"
    worker = await lb(config(tcp_listener(), pool(dead, live.address)))
    before = metric("lb_upstream_connect_errors_total", pool="p", server=dead, cause="refused")
    for _ in range(4):
        reader, writer = await open_to(worker)
        assert await reader.readexactly(1) == b"L"
        writer.close()
    assert live.connections == 4
    after = metric("lb_upstream_connect_errors_total", pool="p", server=dead, cause="refused")
    assert after - before == 2  # round robin tried the dead one every other connection


async def test_unhealthy_server_is_never_chosen(tcp_backend, lb):
    a, b = await tcp_backend(named(b"a")), await tcp_backend(named(b"b"))
    worker = await lb(config(tcp_listener(), pool(a.address, b.address)))
    worker.runtime.pools["p"].servers[0].state.healthy = False
    for _ in range(4):
        reader, writer = await open_to(worker)
        assert await reader.readexactly(1) == b"b"
        writer.close()
    assert a.connections == 0


async def test_no_server_left_closes_the_client(lb):
    worker = await lb(config(tcp_listener(), pool(f"127.0.0.1:{free_port()}")))
    before = metric("lb_connection_errors_total", listener="tcp", cause="no_server")
    reader, writer = await open_to(worker)
    assert await read_all(reader) == b""
    assert metric("lb_connection_errors_total", listener="tcp", cause="no_server") == before + 1
    writer.close()


async def test_connect_timeout_then_the_next_server(tcp_backend, lb):
    live = await tcp_backend(named(b"L"))
    with hanging_address() as stuck_address:
        pools = pool(stuck_address, live.address, timeouts={"connect": "200ms"})
        worker = await lb(config(tcp_listener(), pools))
        started = time.monotonic()
        reader, writer = await open_to(worker)
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"L"
        elapsed = time.monotonic() - started
        assert 0.15 < elapsed < 2.0, elapsed
        assert (
            metric(
                "lb_upstream_connect_errors_total", pool="p", server=stuck_address, cause="timeout"
            )
            >= 1
        )
        writer.close()


async def test_idle_timeout_closes_a_quiet_connection(tcp_backend, lb):
    backend = await tcp_backend(echo)
    worker = await lb(config(tcp_listener(timeouts={"idle": "300ms"}), pool(backend.address)))
    reader, writer = await open_to(worker)
    started = time.monotonic()
    # Traffic keeps it open past the timeout...
    for _ in range(4):
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        await asyncio.sleep(0.15)  # fixed on purpose: traffic spaced below the idle timeout
    assert time.monotonic() - started > 0.5
    # ...silence closes it.
    quiet = time.monotonic()
    assert await read_all(reader) == b""
    assert 0.25 < time.monotonic() - quiet < 1.5
    assert metric("lb_connection_errors_total", listener="tcp", cause="idle_timeout") >= 1
    writer.close()


async def test_max_connections_accepts_and_closes_at_once(tcp_backend, lb):
    backend = await tcp_backend(named(b"s"))
    worker = await lb(config(tcp_listener(max_connections=2), pool(backend.address)))
    before = metric("lb_connection_errors_total", listener="tcp", cause="max_connections")
    held = []
    for _ in range(2):
        reader, writer = await open_to(worker)
        assert await reader.readexactly(1) == b"s"
        held.append(writer)
    # Published at the worker's next metrics flush (every 0.25 s).
    await wait_until(lambda: metric("lb_active_connections", listener="tcp") == 2)
    reader, writer = await open_to(worker)
    with contextlib.suppress(ConnectionResetError):
        assert await read_all(reader) == b""
    assert metric("lb_connection_errors_total", listener="tcp", cause="max_connections") == (
        before + 1
    )
    assert backend.connections == 2
    held.pop().close()
    await wait_until(lambda: len(worker.connections["tcp"]) == 1)
    reader, writer = await open_to(worker)
    assert await reader.readexactly(1) == b"s"
    for w in [*held, writer]:
        w.close()


async def test_an_answer_and_the_servers_fin_in_one_go_reach_the_client(tcp_backend, lb):
    """The server answers and closes at once (HTTP with Connection: close): one readiness
    edge announces both, and lb must still pass on the FIN after the bytes."""

    async def answer_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(4)
        writer.write(b"answer")
        writer.close()

    backend = await tcp_backend(answer_and_close)
    worker = await lb(config(tcp_listener(), pool(backend.address)))
    for _ in range(20):
        reader, writer = await open_to(worker)
        writer.write(b"ask?")
        assert await read_all(reader, 2) == b"answer"  # EOF after it, not a hang
        writer.close()
    await wait_until(lambda: not worker.connections["tcp"])
    assert worker.runtime.pools["p"].servers[0].state.in_flight == 0


async def test_a_server_name_discovery_could_not_resolve_is_looked_up_at_connect(tcp_backend):
    from lb.config import load_config_text
    from lb.proxy.proxy import Proxy

    backend = await tcp_backend(named(b"n"))
    text = config(tcp_listener(), pool(f"localhost:{backend.port}"))
    worker = Proxy(load_config_text(text), reuse_port=False)

    async def unresolvable(host: str, port: int) -> list[str]:
        raise OSError("no answer")

    worker.discovery.resolve = unresolvable  # type: ignore[method-assign]
    await worker.start()
    try:
        assert worker.runtime.pools["p"].servers[0].host == "localhost"
        reader, writer = await open_to(worker)
        assert await reader.readexactly(1) == b"n"
        writer.close()
    finally:
        await worker.shutdown(0.2)
