"""The CONNECTING phase of a `mode: tcp` connection: a server of the pool, and a socket to it.

A non-blocking connect to a server the pool's balancer picks; on refusal or connect timeout
(`timeouts.connect` of the pool, checked by `TcpConnection.on_deadline`), the next server,
excluding those that failed, until none is left, and then the client is closed. Invariants:

- the client is not read meanwhile: its bytes wait in the kernel (or, after a preamble, in
  `pending`, sent first once connected, after the PROXY header of `send_proxy`);
- a server holds one `in_flight` from its choice until the connect fails or the connection
  ends (`TcpConnection._ended`);
- with the pool's `passive` checks, a refusal or timeout counts as a failure of that server and
  a connect as a success (tcp has no answer to judge).

A server named by a DNS name that discovery could not resolve yet is resolved here first.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from typing import TYPE_CHECKING

from lb.core.balancer import ServerState
from lb.core.proxy_protocol import build_v1, build_v2
from lb.proxy.l4.common import IDLE_CHECK
from lb.proxy.l4.tcp_relay import CONNECTING_, FORWARDING, Side, TcpRelay
from lb.proxy.pool.resolve import is_ip

if TYPE_CHECKING:
    from lb.proxy.http.connection import UpstreamServer
    from lb.proxy.pool.pool import PoolRuntime

log = logging.getLogger("lb.l4")

_numeric: dict[str, bool] = {}  # server host -> is it an IP address (else it is resolved)


class TcpConnect(TcpRelay):
    """Choosing a server and connecting to it (attributes set by `TcpConnection.__init__`)."""

    __slots__ = ("excluded", "pending", "pool", "resolving", "server")

    pending: bytes  # preamble bytes for the server, sent once connected
    pool: PoolRuntime | None
    server: UpstreamServer | None
    excluded: set[ServerState]  # servers that failed to connect, not tried again
    resolving: asyncio.Task[None] | None  # a server named by a DNS name

    def _pool(self, name: str | None) -> PoolRuntime | None:
        return self.proxy.runtime.pools.get(name) if name is not None else None

    def _connect(self, pool: PoolRuntime | None) -> None:
        self.phase = CONNECTING_
        if pool is None:
            self._give_up("no_server", "no pool")
            return
        self.pool = pool
        server = pool.choose_for_client(
            self.client_ip if pool.hashes_client_ip else "", self.excluded
        )
        if server is None:
            self._give_up("no_server", f"no healthy server in pool {pool.name}")
            return
        self.server = server
        server.state.in_flight += 1
        self.deadline = self.proxy.loop.time() + pool.timeouts.connect
        host = server.host
        numeric = _numeric.get(host)
        if numeric is None:
            numeric = _numeric[host] = is_ip(host)
        if numeric:
            self._dial(server, host)
        else:  # a name that discovery could not resolve yet
            self.resolving = self.proxy.loop.create_task(self._resolve(server))

    async def _resolve(self, server: UpstreamServer) -> None:
        try:
            infos = await self.proxy.loop.getaddrinfo(
                server.host, server.port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            if self.server is server and self.phase == CONNECTING_:
                self.resolving = None
                self._connect_failed(server, "error", f"cannot resolve {server.host}: {exc}")
            return
        if self.server is server and self.phase == CONNECTING_:
            self.resolving = None
            self._dial(server, str(infos[0][4][0]))

    def _dial(self, server: UpstreamServer, host: str) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        except OSError as exc:
            self._connect_failed(server, "error", str(exc))
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = sock.connect_ex((host, server.port))
        except OSError as exc:
            sock.close()
            self._connect_failed(server, "error", str(exc))
            return
        self.back = Side(sock)
        if code not in (0, errno.EINPROGRESS):
            self._dial_failed(code)
            return
        # Its first event says how the connect went: writable, or an error.
        self.reactor.register(self.back.fd, self._on_server, self)

    def _on_server(self, events: int) -> None:
        """The server socket's events: `TcpConnection`'s."""
        raise NotImplementedError

    def _dial_failed(self, code: int) -> None:
        server = self.server
        assert server is not None
        cause = "refused" if code == errno.ECONNREFUSED else "error"
        self._connect_failed(server, cause, os.strerror(code))

    def _connect_failed(self, server: UpstreamServer, cause: str, detail: str) -> None:
        assert self.pool is not None
        back = self.back
        if back is not None:
            self.back = None
            self.reactor.forget(back.fd)
            back.close(reset=False)
        self.server = None
        server.state.in_flight -= 1
        self.excluded.add(server.state)
        if self.pool.passive is not None:  # refused or timed out: a failure, for passive checks
            self.pool.passive.observe(server.state, True)
        self.proxy.count_connect_error(self.pool.name, server.address, cause)
        log.info(
            "%s: connect to %s (pool %s) failed: %s",
            self.listener.name,
            server.address,
            self.pool.name,
            detail,
        )
        if self.closed:
            return
        self._connect(self.pool)  # the next server, without those that failed

    def _give_up(self, cause: str, detail: str) -> None:
        name = self.listener.name
        log.warning("%s: closing connection from %s: %s", name, self.client_ip, detail)
        self.proxy.count_error(self.listener.name, cause)
        self.close()

    def _connected(self) -> None:
        """The server socket is writable: send what we hold, then relay."""
        pool, server, back = self.pool, self.server, self.back
        assert pool is not None and server is not None and back is not None
        if pool.passive is not None:
            pool.passive.observe(server.state, False)  # connected: the failure streak ends
        self.phase = FORWARDING
        data = self.pending
        self.pending = b""
        self.bytes_in += len(data)
        if pool.send_proxy is not None:
            build = build_v2 if pool.send_proxy == "v2" else build_v1
            data = build(self.client_address(), self.local_address()) + data
        if data and not self._send(back, data):
            return
        now = self.proxy.loop.time()
        self.last_active = now
        self.deadline = now + min(IDLE_CHECK, self.listener.timeouts.idle)
        front = self.front
        if front.eof:  # the client's FIN came with its preamble
            if back.out:
                back.fin = True
            else:
                self._shut(back)
        elif front.readable:
            self._pump(front, back)
