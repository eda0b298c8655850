"""Layer 4 forwarding, `mode: tcp`: a byte stream to a server of a pool.

Theory of operation. `TcpServer` accepts; each client socket gets a `TcpConnection`, which
once it knows where to go opens one server socket and from then on relays bytes both ways
unchanged. lb drives both sockets itself, edge-triggered through the worker's `Reactor` (why:
see `lb.proxy.l4.reactor`), each as a `Side` that remembers its own readiness. Its life has three
phases, each in a module of its own; this one holds what spans them (the state, which phase
handles which socket event and deadline, the end):

    PREAMBLE    (`lb.proxy.l4.tcp_preamble`) only when the listener accepts PROXY or routes by
                SNI: client bytes are kept until the PROXY header is read and the TLS
                ClientHello is seen. A bad PROXY header ends the connection here.
    CONNECTING  (`lb.proxy.l4.tcp_connect`) a non-blocking connect to a server the pool's
                balancer picks, then the next one on refusal or timeout. The client is not
                read meanwhile: its bytes wait in the kernel.
    FORWARDING  (`lb.proxy.l4.tcp_relay`) each side's bytes are written to the other, with
                flow control (at most one CHUNK held per direction), half-close passed on, and
                a failed side resetting the other.

`TcpConnection` is one object through all three: `TcpRelay` <- `TcpConnect` <- `TcpPreamble`
<- `TcpConnection`, each class adding its phase's slots and methods, so the relay's hot path
costs what it did as one class (no delegation, no extra call per chunk).

Deadlines use the worker's `Ticker` (one `deadline` per connection): the PROXY/ClientHello wait
(`timeouts.client_header` of the listener), the connect (`timeouts.connect` of the pool), and
while forwarding a check every IDLE_CHECK seconds that closes the connection after
`timeouts.idle` (of the listener) without a byte either way and adds the bytes relayed since the
last check to `lb_tcp_bytes_total` (so the hot path counts in plain ints, not in metrics).

Shared with udp (byte counting, the idle check): `lb.proxy.l4.common`.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any

from lb.proxy.acceptor import Acceptor
from lb.proxy.l4.common import flush_bytes, idle_check
from lb.proxy.l4.reactor import FAILED, HUNG_UP, READABLE, WRITABLE
from lb.proxy.l4.tcp_preamble import TcpPreamble
from lb.proxy.l4.tcp_relay import CLOSED, CONNECTING_, FORWARDING, PREAMBLE, Side
from lb.proxy.listeners import ListenerSettings

if TYPE_CHECKING:
    from lb.proxy.host import Host

log = logging.getLogger("lb.l4")


class TcpServer(Acceptor):
    """A tcp listener's listening socket: a `TcpConnection` per accepted client."""

    def __init__(self, proxy: Host, sock: socket.socket, listener: str) -> None:
        self.proxy = proxy
        super().__init__(proxy.loop, sock, listener)

    def accepted(self, conn: socket.socket, peer: Any) -> None:
        settings = self.proxy.runtime.listeners.get(self.listener)
        try:
            if settings is None:  # removed by a reload that is closing this socket
                raise ConnectionAbortedError
            conn.setblocking(False)
            # Relayed writes go out as they come: no Nagle delay on a small answer.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            conn.close()
            return
        TcpConnection(self.proxy, settings, conn, peer).start()


class TcpConnection(TcpPreamble):
    """One client connection of a tcp listener, and its server's."""

    __slots__ = ()  # each phase's class holds its own

    def __init__(
        self, proxy: Host, listener: ListenerSettings, sock: socket.socket, peer: Any
    ) -> None:
        self.proxy = proxy
        self.listener = listener
        self.reactor = proxy.reactor
        self.front = Side(sock)
        self.back = None
        self.phase = PREAMBLE
        self.closed = False
        self.deadline = 0.0
        # The peer, from accept (no getpeername); the PROXY header's source may replace it.
        self.client = (peer[0], peer[1]) if peer else None
        self.local = None
        self.preamble = None
        self.proxy_wanted = listener.accept_proxy
        self.pending = b""
        self.pool = None
        self.server = None
        self.excluded = set()
        self.resolving = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.checked = 0
        self.last_active = 0.0

    def buffered(self) -> int:
        """Bytes lb holds for this connection (flow control keeps it to about 2 x CHUNK)."""
        back = self.back.out if self.back is not None else b""
        return len(self.front.out) + len(back) + len(self.pending)

    def start(self) -> None:
        self.proxy.connection_opened(self)
        if self.closed:
            return  # over max_connections, or the worker is stopping: counted there
        self.reactor.register(self.front.fd, self._on_client, self)
        if self.proxy_wanted or self.listener.sni is not None:
            self.preamble = bytearray()
            self.deadline = self.proxy.loop.time() + self.listener.timeouts.client_header
            return
        self._connect(self._pool(self.listener.pool))

    # Events -------------------------------------------------------------------------------

    def _on_client(self, events: int) -> None:
        front = self.front
        if self.phase == FORWARDING:
            back = self.back
            assert back is not None
            if events & WRITABLE and front.out:
                self._flush(front, back)
            if events & READABLE and not self.closed:
                front.readable = True
                if events & HUNG_UP:
                    front.hung_up = True
                self._pump(front, back)
        elif events & READABLE:
            front.readable = True  # while connecting, read once connected
            if events & HUNG_UP:
                front.hung_up = True
            if self.phase == PREAMBLE:
                self._read_preamble()

    def _on_server(self, events: int) -> None:
        back = self.back
        assert back is not None
        if self.phase == CONNECTING_:
            if events & FAILED:
                code = back.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                self._dial_failed(code)
                return
            self._connected()
            if self.closed:
                return
        elif self.phase != FORWARDING:
            return
        elif events & WRITABLE and back.out:
            self._flush(back, self.front)
        if events & READABLE and not self.closed:
            back.readable = True
            if events & HUNG_UP:
                back.hung_up = True
            self._pump(back, self.front)

    # Deadlines --------------------------------------------------------------------------------

    def on_deadline(self) -> None:
        now = self.proxy.loop.time()
        phase = self.phase
        if phase == FORWARDING:
            if not idle_check(self, now):
                idle = self.listener.timeouts.idle
                log.info("%s: idle for %gs, closing %s", self.listener.name, idle, self.client_ip)
                self.proxy.count_error(self.listener.name, "idle_timeout")
                self._close_both()
        elif phase == PREAMBLE:
            if self.proxy_wanted:
                self.proxy.count_error(self.listener.name, "proxy_header_timeout")
                log.warning(
                    "%s: refused connection from %s: no PROXY header within %gs",
                    self.listener.name,
                    self.client_ip,
                    self.listener.timeouts.client_header,
                )
                self.close()
            else:
                self._route_by_sni(None)  # no ClientHello in time: the default pool
        elif phase == CONNECTING_ and self.server is not None:
            if self.resolving is not None:
                self.resolving.cancel()
                self.resolving = None
            self._connect_failed(self.server, "timeout", "connect timed out")

    # Closing ----------------------------------------------------------------------------------

    def _ended(self) -> None:
        """Bookkeeping that runs once, whichever side ends first."""
        if self.phase == CLOSED:
            return
        self.phase = CLOSED
        self.closed = True
        self.deadline = 0.0
        flush_bytes(self)
        if self.resolving is not None:
            self.resolving.cancel()
            self.resolving = None
        if self.server is not None:
            self.server.state.in_flight -= 1
            self.server = None
        self.proxy.connection_closed(self)

    def __repr__(self) -> str:
        phase = ("preamble", "connecting", "forwarding", "closed")[self.phase]
        server = self.server.address if self.server is not None else "-"
        return f"<TcpConnection {self.client_ip} on {self.listener.name} {phase} -> {server}>"
