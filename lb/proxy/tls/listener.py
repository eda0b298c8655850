"""TLS termination on the socket itself: OpenSSL reads and writes the client's file
descriptor (an `ssl.SSLSocket`), instead of uvloop's SSL protocol feeding it through memory
buffers.

Why. uvloop's SSL layer copies every byte through two memory BIOs and runs its own state
machine of Python-level calls around OpenSSL's; per new connection that cost lb ~10% of a
handshake's CPU beside haproxy, which does what this module does. It also lets a TLS
listener read a PROXY header, which arrives in clear before the ClientHello.

Theory of operation. `TlsServer` accepts on the listening socket. Each accepted socket gets a
`TlsTransport`, which goes through up to three phases before its protocol (a
`ClientConnection`) exists, each in a module of its own:

    PROXY      (`lb.proxy.tls.handshake`) only with `accept_proxy`: the header is read in
               clear, never a byte past its end. A bad header closes the connection before
               any TLS.
    HANDSHAKE  (`lb.proxy.tls.handshake`) `do_handshake()` each time the socket is readable
               (or writable); the listener's SNI callback picks the certificate.
    OPEN       (`lb.proxy.tls.transport`) the protocol is created and gets decrypted bytes;
               it writes through `write`.

PROXY and HANDSHAKE together must finish within the listener's `handshake_timeout`; the
listener's `max_connections` counts the connections still in them (`TlsServer.starting`).

`TlsTransport` is one object through all three: `TlsStream` <- `TlsHandshake` <-
`TlsTransport`, each class adding its phase's slots and methods, so reading and writing once
open cost what they did as one class.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lb.proxy.acceptor import Acceptor
from lb.proxy.tls.handshake import TlsHandshake
from lb.proxy.tls.transport import HIGH_WATER, PROXY

if TYPE_CHECKING:
    from lb.proxy.host import Host
    from lb.proxy.tls.contexts import ListenerTls


class TlsServer(Acceptor):
    """A TLS listener's listening socket: starts a `TlsTransport` per accepted client."""

    def __init__(
        self,
        proxy: Host,
        sock: socket.socket,
        tls: ListenerTls,
        listener: str,
        accept_proxy: bool,
        factory: Callable[[], asyncio.Protocol],
    ) -> None:
        self.proxy = proxy
        self.tls = tls
        self.accept_proxy = accept_proxy
        self.factory = factory
        self.starting: set[TlsTransport] = set()  # accepted, protocol not yet created
        super().__init__(proxy.loop, sock, listener)

    def accepted(self, conn: socket.socket, peer: Any) -> None:
        if self._full():
            conn.close()
            return
        try:
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            conn.close()  # reset before we got to it
            return
        TlsTransport(self, conn, peer)

    def _full(self) -> bool:
        """The listener's max_connections counts handshakes in progress too, or a flood of
        clients that never finish theirs would get past it."""
        settings = self.proxy.runtime.listeners.get(self.listener)
        limit = settings.max_connections if settings is not None else None
        if limit is None:
            return False
        open_ = len(self.proxy.connections.get(self.listener, ()))
        if open_ + len(self.starting) < limit:
            return False
        self.proxy.count_error(self.listener, "max_connections")
        return True

    def close(self) -> None:
        if self.is_serving():
            super().close()
            for transport in list(self.starting):
                transport.abort()


class TlsTransport(TlsHandshake):
    """One client connection of a TLS listener (see the module docstring)."""

    __slots__ = ()  # each phase's class holds its own

    def __init__(self, server: TlsServer, raw: socket.socket, peer: Any) -> None:
        self.server = server
        self.loop = server.loop
        self.peer = peer
        self.proxy_header = None
        self._raw = raw
        self._sock = None
        self._tls = None
        self._fd = raw.fileno()
        self._protocol = None
        self._pending = deque()
        self._pending_size = 0
        self._high = HIGH_WATER
        self._low = HIGH_WATER // 4
        self._paused_protocol = False
        self._reading = True
        self._at_eof = False
        self._read_wants_write = False
        self._writer = False
        self._closing = False
        self._proxy_buf = b""
        self._phase = PROXY
        server.starting.add(self)
        self.deadline = self.loop.time() + server.tls.handshake_timeout
        server.proxy.ticker.watched.add(self)
        self.loop.add_reader(self._fd, self._on_readable)
        if not server.accept_proxy:
            self._start_handshake()
