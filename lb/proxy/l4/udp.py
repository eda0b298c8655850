"""Layer 4 forwarding, `mode: udp`: datagrams, one upstream socket per client address.

Theory of operation: see `UdpListener`. A `UdpSession` is checked for idleness and counts its
bytes like a tcp connection (`lb.proxy.l4.common`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING

from lb.proxy.l4.common import IDLE_CHECK, Address, flush_bytes, idle_check

if TYPE_CHECKING:
    from lb.proxy.host import Host
    from lb.proxy.http.connection import UpstreamServer
    from lb.proxy.listeners import ListenerSettings

log = logging.getLogger("lb.l4")  # one logger name for tcp and udp, as before the split


async def start_udp(proxy: Host, settings: ListenerSettings) -> Address:
    """Bind a udp listener; returns the bound address."""
    from lb.proxy.sockets import listening_socket

    sock = listening_socket(settings.bind, proxy.reuse_port, socket.SOCK_DGRAM)
    proxy.connections.setdefault(settings.name, set())
    transport, _ = await proxy.loop.create_datagram_endpoint(
        lambda: UdpListener(proxy, settings.name), sock=sock
    )
    proxy.servers[settings.name] = UdpServer(proxy.loop, transport)
    host, port = sock.getsockname()[:2]
    log.info("listening on %s (%s, udp)", settings.bind, settings.name)
    return host, port


class UdpServer(asyncio.AbstractServer):
    """What the worker closes on shutdown for a udp listener: its socket."""

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: asyncio.BaseTransport) -> None:
        self._loop = loop
        self._transport = transport

    def close(self) -> None:
        self._transport.close()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return not self._transport.is_closing()

    async def wait_closed(self) -> None:
        return None

    async def start_serving(self) -> None:
        return None  # serving since it was bound

    async def serve_forever(self) -> None:
        raise NotImplementedError("the worker runs the loop")


class UdpListener(asyncio.DatagramProtocol):
    """A udp listener's socket. Theory of operation: every client address has a `UdpSession`,
    created by its first datagram: the balancer picks a server, and the session opens its own
    connected socket to it, so the server's answers arrive on that socket and go back to that
    client from the listener's address. Datagrams are relayed one by one, never merged or
    split. A session ends after `timeouts.idle` without a datagram either way; the client's
    next datagram starts a new one (and may get another server)."""

    def __init__(self, proxy: Host, name: str) -> None:
        self.proxy = proxy
        self.name = name
        self.transport: asyncio.DatagramTransport | None = None
        self.sessions: dict[Address, UdpSession] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        session = self.sessions.get(addr)
        if session is None:
            if self.proxy.stopping:
                return
            settings = self.proxy.runtime.listeners.get(self.name)
            if settings is None:
                return
            session = UdpSession(self, settings, (addr[0], addr[1]))
            self.sessions[addr] = session
            session.start()
        session.from_client(data)

    def error_received(self, exc: Exception) -> None:
        log.debug("%s: socket error: %s", self.name, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        for session in list(self.sessions.values()):
            session.close()


# Datagrams held per session while its socket to the server is being opened.
UDP_PENDING = 64


class UdpSession(asyncio.DatagramProtocol):
    __slots__ = (
        "bytes_in",
        "bytes_out",
        "checked",
        "client",
        "closed",
        "deadline",
        "last_active",
        "listener",
        "owner",
        "pending",
        "proxy",
        "server",
        "transport",
    )

    # Nothing is ever in flight in a way worth waiting for: shutdown closes sessions at once.
    idle = True

    def __init__(self, owner: UdpListener, listener: ListenerSettings, client: Address) -> None:
        self.owner = owner
        self.proxy = owner.proxy
        self.listener = listener
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] | None = []
        self.server: UpstreamServer | None = None
        self.closed = False
        self.deadline = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        self.checked = 0
        self.last_active = 0.0

    def start(self) -> None:
        pool = self.proxy.runtime.pools.get(self.listener.pool or "")
        server = pool.choose_for_client(self.client[0]) if pool is not None else None
        if server is None:
            self.proxy.count_error(self.listener.name, "no_server")
            self._forget()
            self.closed = True
            return
        self.server = server
        server.state.in_flight += 1
        self.proxy.loop.create_task(self._open(server))

    async def _open(self, server: UpstreamServer) -> None:
        try:
            await self.proxy.loop.create_datagram_endpoint(
                lambda: self, remote_addr=(server.host, server.port)
            )
        except OSError as exc:
            log.info("%s: udp socket to %s failed: %s", self.listener.name, server.address, exc)
            self.proxy.count_connect_error(server.pool, server.address, "error")
            self.close()
            self._ended()

    def from_client(self, data: bytes) -> None:
        if self.closed:
            return
        transport = self.transport
        if transport is not None:
            transport.sendto(data)
            self.bytes_in += len(data)
        elif self.pending is not None and len(self.pending) < UDP_PENDING:
            self.pending.append(data)

    # asyncio.DatagramProtocol (the session's socket to its server)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.closed:
            transport.close()
            return
        self.proxy.connection_opened(self)  # accounting, max_connections (sessions)
        if self.closed:
            self._forget()
            return
        pending, self.pending = self.pending or [], None
        for data in pending:
            self.transport.sendto(data)  # type: ignore[union-attr]
            self.bytes_in += len(data)
        now = self.proxy.loop.time()
        self.last_active = now
        self.deadline = now + min(IDLE_CHECK, self.listener.timeouts.idle)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        owner = self.owner.transport
        if owner is not None and not self.closed:
            owner.sendto(data, self.client)
            self.bytes_out += len(data)

    def error_received(self, exc: Exception) -> None:
        # A refused datagram (ICMP port unreachable): end the session, so the client's next
        # datagram is balanced again.
        self.proxy.count_error(self.listener.name, "server_refused")
        log.info("%s: udp server of %s: %s", self.listener.name, self.client[0], exc)
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended()
        self.proxy.connection_closed(self)

    # Deadlines: an idle check, as for tcp

    def on_deadline(self) -> None:
        if not idle_check(self, self.proxy.loop.time()):
            self.close()

    def _forget(self) -> None:
        if self.owner.sessions.get(self.client) is self:
            del self.owner.sessions[self.client]

    def _ended(self) -> None:
        self.closed = True
        self.deadline = 0.0
        self._forget()
        flush_bytes(self)
        if self.server is not None:
            self.server.state.in_flight -= 1
            self.server = None

    def close(self) -> None:
        self.closed = True
        self._forget()  # the client's next datagram starts a new session at once
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def __repr__(self) -> str:
        server = self.server.address if self.server is not None else "-"
        return f"<UdpSession {self.client[0]}:{self.client[1]} on {self.listener.name} -> {server}>"
