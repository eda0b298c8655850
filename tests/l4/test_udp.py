"""`mode: udp` end to end: sessions per client address, answers relayed back, datagrams kept
whole, balancing per new session, idle expiry."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from lb.proxy.l4.udp import UdpListener
from tests.conftest import wait_until
from tests.l4.conftest import config, metric

Address = tuple[str, int]


class EchoServer(asyncio.DatagramProtocol):
    """Answers each datagram with `name:` + the datagram; records the source addresses."""

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.transport: asyncio.DatagramTransport | None = None
        self.sources: list[Address] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.sources.append(addr)
        assert self.transport is not None
        self.transport.sendto(self.name + b":" + data, addr)


class Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.received.put_nowait(data)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data)

    async def recv(self) -> bytes:
        return await asyncio.wait_for(self.received.get(), 5)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])


async def udp_servers(*names: bytes) -> tuple[list[EchoServer], list[Any]]:
    loop = asyncio.get_running_loop()
    servers, transports = [], []
    for name in names:
        t, p = await loop.create_datagram_endpoint(
            lambda n=name: EchoServer(n), local_addr=("127.0.0.1", 0)
        )
        servers.append(p)
        transports.append(t)
    return servers, transports


async def client(worker: Any) -> Client:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(Client, remote_addr=worker.addresses["dns"])
    return protocol


def udp_config(transports: list[Any], **listener: Any) -> str:
    servers = [{"address": f"127.0.0.1:{t.get_extra_info('sockname')[1]}"} for t in transports]
    return config(
        {"dns": {"bind": "127.0.0.1:0", "mode": "udp", "pool": "p", **listener}},
        {"p": {"servers": servers}},
    )


async def test_echo_for_several_clients_with_sessions_spread_and_expiring(lb):
    servers, transports = await udp_servers(b"a", b"b")
    worker = await lb(udp_config(transports, timeouts={"idle": "300ms"}))
    try:
        clients = [await client(worker) for _ in range(4)]
        for round_ in range(3):
            for i, c in enumerate(clients):
                c.send(b"q%d-%d" % (i, round_))
            answers = [await c.recv() for c in clients]
            # Round robin per new session: clients 0, 2 on a; 1, 3 on b; every round the same.
            assert answers == [
                b"a:q0-%d" % round_,
                b"b:q1-%d" % round_,
                b"a:q2-%d" % round_,
                b"b:q3-%d" % round_,
            ]
        # One upstream socket per client: each server saw two distinct source ports.
        assert len(set(servers[0].sources)) == 2
        assert len(set(servers[1].sources)) == 2
        assert len(worker.connections["dns"]) == 4
        await wait_until(lambda: metric("lb_active_connections", listener="dns") == 4)
        # Idle sessions expire...
        await wait_until(lambda: not worker.connections["dns"], timeout=3)
        (listener,) = [s for s in [_listener(worker)] if s is not None]
        assert not listener.sessions
        # ...and the client's next datagram opens a new session, from a new source port.
        clients[0].send(b"again")
        assert (await clients[0].recv()).endswith(b":again")
        assert len(worker.connections["dns"]) == 1
        assert len(set(servers[0].sources + servers[1].sources)) == 5
        for c in clients:
            assert c.transport is not None
            c.transport.close()
    finally:
        for t in transports:
            t.close()


def _listener(worker: Any) -> UdpListener | None:
    server = worker.servers["dns"]
    return server._transport.get_protocol()  # type: ignore[no-any-return]


async def test_datagrams_are_never_merged_or_split(lb):
    _, transports = await udp_servers(b"s")
    worker = await lb(udp_config(transports))
    try:
        c = await client(worker)
        sizes = [1, 1400, 9000, 30000, 7, 512]
        payloads = [os.urandom(n) for n in sizes]
        for p in payloads:  # in a burst, before the session's socket is even open
            c.send(p)
        got = [await c.recv() for _ in payloads]
        assert sorted(got, key=len) == sorted((b"s:" + p for p in payloads), key=len)
        assert c.transport is not None
        c.transport.close()
    finally:
        for t in transports:
            t.close()


async def test_ip_hash_keeps_clients_on_one_server(lb):
    _servers, transports = await udp_servers(b"a", b"b", b"c")
    text = udp_config(transports).replace("servers:", "balance: ip_hash\n    servers:")
    worker = await lb(text)
    try:
        names = set()
        for _ in range(5):
            c = await client(worker)
            c.send(b"x")
            names.add((await c.recv())[:1])
            assert c.transport is not None
            c.transport.close()
        assert len(names) == 1
    finally:
        for t in transports:
            t.close()
