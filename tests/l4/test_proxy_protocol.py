"""PROXY protocol on the wire: exact v1/v2 headers sent to servers (send_proxy), headers accepted
from clients (accept_proxy) on tcp and http listeners, and bad headers refused."""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest

from lb.core.proxy_protocol import V2_SIGNATURE
from tests.conftest import wait_until
from tests.l4.conftest import config, metric, open_to, read_all


def recorder(got: list[bytes]):  # type: ignore[no-untyped-def]
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append(await reader.read())  # everything up to the client's FIN
        writer.write(b"ok")

    return handler


def expected_v1(client_port: int, lb_port: int) -> bytes:
    return b"PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n" % (client_port, lb_port)


def expected_v2(client_port: int, lb_port: int) -> bytes:
    loopback = bytes([127, 0, 0, 1])
    return (
        V2_SIGNATURE
        + b"\x21\x11\x00\x0c"
        + loopback
        + loopback
        + struct.pack("!HH", client_port, lb_port)
    )


@pytest.mark.parametrize(("version", "expected"), [("v1", expected_v1), ("v2", expected_v2)])
async def test_send_proxy_exact_bytes(tcp_backend, lb, version, expected):
    got: list[bytes] = []
    backend = await tcp_backend(recorder(got))
    worker = await lb(
        config(
            {"tcp": {"bind": "127.0.0.1:0", "mode": "tcp", "pool": "p"}},
            {"p": {"send_proxy": version, "servers": [{"address": backend.address}]}},
        )
    )
    reader, writer = await open_to(worker)
    client_port = writer.get_extra_info("sockname")[1]
    lb_port = worker.addresses["tcp"][1]
    writer.write(b"payload")
    writer.write_eof()
    assert await read_all(reader) == b"ok"
    assert got == [expected(client_port, lb_port) + b"payload"]
    writer.close()


@pytest.mark.parametrize(
    "header",
    [
        b"PROXY TCP4 203.0.113.9 198.51.100.1 4000 6432\r\n",
        V2_SIGNATURE
        + b"\x21\x11\x00\x0c"
        + bytes([203, 0, 113, 9, 198, 51, 100, 1])
        + struct.pack("!HH", 4000, 6432),
    ],
    ids=["v1", "v2"],
)
async def test_accepted_client_address_is_passed_on(tcp_backend, lb, header):
    got: list[bytes] = []
    backend = await tcp_backend(recorder(got))
    worker = await lb(
        config(
            {"tcp": {"bind": "127.0.0.1:0", "mode": "tcp", "pool": "p", "accept_proxy": True}},
            {"p": {"send_proxy": "v1", "servers": [{"address": backend.address}]}},
        )
    )
    reader, writer = await open_to(worker)
    # The header arrives in pieces, the payload right behind its last piece.
    writer.write(header[:7])
    await writer.drain()
    await wait_until(
        lambda: [len(c.preamble or b"") for c in worker.connections["tcp"]] == [7],
        what="lb to have read the header's first piece alone",
    )
    writer.write(header[7:] + b"payload")
    writer.write_eof()
    assert await read_all(reader) == b"ok"
    assert got == [b"PROXY TCP4 203.0.113.9 198.51.100.1 4000 6432\r\npayload"]
    writer.close()


async def test_accepted_addresses_drive_ip_hash(tcp_backend, lb):
    names = (b"a", b"b", b"c")

    def named(name: bytes):  # type: ignore[no-untyped-def]
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(name)
            await reader.read()

        return handler

    backends = [await tcp_backend(named(n)) for n in names]
    worker = await lb(
        config(
            {"tcp": {"bind": "127.0.0.1:0", "mode": "tcp", "pool": "p", "accept_proxy": True}},
            {"p": {"balance": "ip_hash", "servers": [{"address": b.address} for b in backends]}},
        )
    )
    chosen: dict[int, set[bytes]] = {}
    # 30 clients, twice each: all of them on one of 3 servers is a 1-in-3^29 chance, where 6
    # clients on a ring named by random ports landed together about once in a few hundred runs.
    for i in range(60):
        client = i % 30
        reader, writer = await open_to(worker)
        writer.write(b"PROXY TCP4 10.0.0.%d 10.0.0.254 1000 80\r\n" % client)
        chosen.setdefault(client, set()).add(await reader.readexactly(1))
        writer.close()
    assert all(len(servers) == 1 for servers in chosen.values())  # each client: one server
    assert len(set().union(*chosen.values())) > 1  # different clients: spread


@pytest.mark.parametrize(
    ("first", "why"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "no PROXY header"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\nhello", "bad port"),
        (V2_SIGNATURE + b"\x11\x11\x00\x0c" + b"\x00" * 12, "version 1"),
    ],
    ids=["missing", "bad-v1", "bad-v2"],
)
async def test_bad_header_on_a_tcp_listener_is_refused(tcp_backend, lb, caplog, first, why):
    got: list[bytes] = []
    backend = await tcp_backend(recorder(got))
    worker = await lb(
        config(
            {"tcp": {"bind": "127.0.0.1:0", "mode": "tcp", "pool": "p", "accept_proxy": True}},
            {"p": {"servers": [{"address": backend.address}]}},
        )
    )
    before = metric("lb_connection_errors_total", listener="tcp", cause="proxy_header")
    caplog.set_level(logging.WARNING, logger="lb.l4")
    reader, writer = await open_to(worker)
    writer.write(first)
    assert await read_all(reader) == b""
    assert backend.connections == 0  # nothing reached a server
    assert metric("lb_connection_errors_total", listener="tcp", cause="proxy_header") == before + 1
    assert any("bad PROXY header" in r.message and why in r.message for r in caplog.records)
    writer.close()


async def test_no_header_in_time_is_refused(tcp_backend, lb):
    backend = await tcp_backend(recorder([]))
    worker = await lb(
        config(
            {
                "tcp": {
                    "bind": "127.0.0.1:0",
                    "mode": "tcp",
                    "pool": "p",
                    "accept_proxy": True,
                    "timeouts": {"client_header": "200ms"},
                }
            },
            {"p": {"servers": [{"address": backend.address}]}},
        )
    )
    reader, writer = await open_to(worker)
    writer.write(b"PROXY TCP4")  # and then nothing
    assert await read_all(reader, 3) == b""
    assert backend.connections == 0
    writer.close()


# -- accept_proxy on http listeners -------------------------------------------------------------


async def http_origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers each request with its X-Forwarded-For header as the body."""
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        xff = b""
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"x-forwarded-for:"):
                xff = line.split(b":", 1)[1].strip()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(xff), xff))
        await writer.drain()


def http_config(origin: str) -> str:
    return config(
        {"web": {"bind": "127.0.0.1:0", "mode": "http", "accept_proxy": True}},
        {"app": {"servers": [{"address": origin}]}},
        routes=[{"match": {}, "pool": "app"}],
    )


async def test_http_listener_uses_the_proxied_client_address(tcp_backend, lb):
    origin = await tcp_backend(http_origin)
    worker = await lb(http_config(origin.address))
    header = (
        V2_SIGNATURE
        + b"\x21\x11\x00\x0c"
        + bytes([203, 0, 113, 9, 10, 0, 0, 1])
        + struct.pack("!HH", 4000, 80)
    )
    reader, writer = await open_to(worker, "web")
    writer.write(header + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    assert await reader.readexactly(11) == b"203.0.113.9"
    # A second request on the same connection needs no header.
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert await reader.readexactly(20) == b"1.1.1.1, 203.0.113.9"
    writer.close()


async def test_http_listener_refuses_a_request_without_header(tcp_backend, lb, caplog):
    origin = await tcp_backend(http_origin)
    worker = await lb(http_config(origin.address))
    caplog.set_level(logging.WARNING, logger="lb.proxy")
    reader, writer = await open_to(worker, "web")
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await read_all(reader) == b""
    assert origin.connections == 0
    assert any("no PROXY header" in r.message for r in caplog.records)
    await wait_until(lambda: not worker.connections["web"])
    writer.close()
