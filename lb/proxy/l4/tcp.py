"""Layer 4 forwarding, `mode: tcp`: a byte stream to a server of a pool.

Theory of operation. `TcpServer` accepts; each client socket gets a `TcpConnection`, which
once it knows where to go opens one server socket and from then on relays bytes both ways
unchanged. lb drives both sockets itself, edge-triggered through the worker's `Reactor` (why:
see `lb.proxy.l4.reactor`), each as a `Side` that remembers its own readiness. Its life has three
phases:

    PREAMBLE    only when the listener accepts PROXY or routes by SNI: client bytes are kept
                (bounded by the two parsers' limits) until the PROXY header is read and the TLS
                ClientHello is seen. A bad PROXY header ends the connection here: nothing has
                reached any server. The ClientHello bytes are kept and forwarded as they are.
    CONNECTING  a non-blocking connect to a server the pool's balancer picks; on refusal or
                connect timeout, the next server, excluding those that failed, until none is
                left. The client is not read meanwhile: its bytes wait in the kernel. With the
                pool's `passive` checks, a refusal or timeout counts as a failure of that
                server and a connect as a success (tcp has no answer to judge).
    FORWARDING  each side's bytes are written to the other. Invariants:
                - flow control: what a socket would not take is kept in its Side's `out`, and
                  the other side is not read until `out` is written, so lb holds at most one
                  CHUNK per direction whatever the speeds; the rest waits in the kernel's
                  buffers, where TCP's own flow control slows the sender;
                - half-close: a side's FIN (a read of 0 bytes) is passed on as shutdown(WR)
                  of the other side once its `out` is written, and the connection stays open
                  the other way; when both sides have sent FIN, both are closed;
                - a side that fails (a reset, a broken pipe) resets the other, so its peer
                  learns the stream was cut.

Deadlines use the worker's `Ticker` (one `deadline` per connection): the PROXY/ClientHello wait
(`timeouts.client_header` of the listener), the connect (`timeouts.connect` of the pool), and
while forwarding a check every IDLE_CHECK seconds that closes the connection after
`timeouts.idle` (of the listener) without a byte either way and adds the bytes relayed since the
last check to `lb_tcp_bytes_total` (so the hot path counts in plain ints, not in metrics).

Shared with udp (byte counting, the idle check): `lb.proxy.l4.common`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import struct
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from lb.core.balancer import ServerState
from lb.core.proxy_protocol import ProxyProtocolError, build_v1, build_v2
from lb.core.proxy_protocol import parse as parse_proxy
from lb.core.sni import MAX_HELLO, ClientHelloError, parse_client_hello
from lb.proxy.acceptor import Acceptor
from lb.proxy.l4.common import IDLE_CHECK, Address, flush_bytes, idle_check
from lb.proxy.l4.reactor import FAILED, HUNG_UP, READABLE, WRITABLE
from lb.proxy.pool.resolve import is_ip

if TYPE_CHECKING:
    from lb.proxy.host import Host
    from lb.proxy.http.connection import UpstreamServer
    from lb.proxy.pool.pool import PoolRuntime
from lb.proxy.listeners import ListenerSettings

log = logging.getLogger("lb.l4")  # one logger name for tcp and udp, as before the split

# Bytes one read takes. Also the most lb holds for a side that cannot take more: the other
# side is not read again until that much is written.
CHUNK = 256 * 1024
# Bytes relayed one way per readiness event before other connections get their turn.
READ_BUDGET = 4 * CHUNK
# Bytes the preamble (PROXY header plus ClientHello records) may take before lb gives up on it.
PREAMBLE_MAX = 2 * MAX_HELLO
# SO_LINGER on, zero seconds: close() then sends RST instead of FIN.
LINGER_RESET = struct.pack("ii", 1, 0)

# One buffer for every read of the worker (one thread): a read that is written on at once, the
# usual case, allocates nothing.
_buffer = bytearray(CHUNK)
_view = memoryview(_buffer)
_numeric: dict[str, bool] = {}  # server host -> is it an IP address (else it is resolved)

PREAMBLE, CONNECTING_, FORWARDING, CLOSED = range(4)


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


class Side:
    """One of a relayed connection's two sockets, and what lb holds for it."""

    __slots__ = ("eof", "fd", "fin", "hung_up", "out", "readable", "shut", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.out = b""  # bytes for this socket that it would not take yet
        self.readable = False  # an edge said bytes wait here, and they are not all read yet
        # The peer's FIN (or an error) is queued behind the bytes: a short read no longer
        # means drained, as the edge that announced both has come already.
        self.hung_up = False
        self.eof = False  # this socket's peer sent FIN
        self.fin = False  # FIN is to go to this socket once `out` is written
        self.shut = False  # FIN was sent to this socket

    def close(self, reset: bool) -> None:
        if reset:
            with suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        self.sock.close()


class TcpConnection:
    """One client connection of a tcp listener, and its server's."""

    __slots__ = (
        "back",
        "bytes_in",
        "bytes_out",
        "checked",
        "client",
        "closed",
        "deadline",
        "excluded",
        "front",
        "last_active",
        "listener",
        "local",
        "pending",
        "phase",
        "pool",
        "preamble",
        "proxy",
        "proxy_wanted",
        "reactor",
        "resolving",
        "server",
    )

    def __init__(
        self, proxy: Host, listener: ListenerSettings, sock: socket.socket, peer: Any
    ) -> None:
        self.proxy = proxy
        self.listener = listener
        self.reactor = proxy.reactor
        self.front = Side(sock)  # the client's socket
        self.back: Side | None = None  # the server's, from the connect on
        self.phase = PREAMBLE
        self.closed = False
        self.deadline = 0.0
        # The real client: the peer (from accept: no getpeername), or the PROXY source.
        self.client: Address | None = (peer[0], peer[1]) if peer else None
        self.local: Address | None = None  # where the client connected to, when asked
        self.preamble: bytearray | None = None
        self.proxy_wanted = listener.accept_proxy
        self.pending = b""  # preamble bytes for the server, sent once connected
        self.pool: PoolRuntime | None = None
        self.server: UpstreamServer | None = None
        self.excluded: set[ServerState] = set()
        self.resolving: asyncio.Task[None] | None = None  # a server named by a DNS name
        self.bytes_in = 0  # client -> server, not yet added to the metrics
        self.bytes_out = 0  # server -> client, likewise
        self.checked = 0  # bytes_in + bytes_out at the last idle check
        self.last_active = 0.0

    @property
    def client_ip(self) -> str:
        return self.client[0] if self.client else "-"

    def client_address(self) -> Address | None:
        return self.client

    def local_address(self) -> Address | None:
        # Asked of the socket only when needed (send_proxy): a system call fewer otherwise.
        if self.local is None:
            with suppress(OSError):
                local = self.front.sock.getsockname()
                self.local = (local[0], local[1])
        return self.local

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

    # Relaying -----------------------------------------------------------------------------

    def _pump(self, src: Side, dst: Side) -> None:
        """Move src's bytes to dst until src is drained or dst is full."""
        if dst.out or dst.shut:
            return  # dst is full: src is read again once dst's `out` is written
        read, send = src.sock.recv_into, dst.sock.send
        moved = 0
        while True:
            try:
                n = read(_buffer)
            except BlockingIOError:
                src.readable = False
                break
            except OSError as exc:
                self._count(src, moved)
                self._failed(src, exc)
                return
            if not n:
                src.readable = False
                self._count(src, moved)
                self._eof(src, dst)
                return
            try:
                sent = send(_view[:n])
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._count(src, moved)
                self._failed(dst, exc)
                return
            moved += n
            if sent < n:
                dst.out = _view[sent:n].tobytes()  # written when dst is writable again
                break
            if n < CHUNK and not src.hung_up:
                src.readable = False  # a short read drained it: the next bytes bring an edge
                break
            if moved >= READ_BUDGET:
                self.proxy.loop.call_soon(self._resume, src, dst)
                break
        self._count(src, moved)

    def _count(self, src: Side, n: int) -> None:
        if src is self.front:
            self.bytes_in += n
        else:
            self.bytes_out += n

    def _resume(self, src: Side, dst: Side) -> None:
        if not self.closed and src.readable:
            self._pump(src, dst)

    def _send(self, dst: Side, data: bytes) -> bool:
        """Write `data` to dst, keeping what it would not take; False if dst failed."""
        try:
            sent = dst.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._failed(dst, exc)
            return False
        dst.out = data[sent:] if sent < len(data) else b""
        return True

    def _flush(self, dst: Side, src: Side) -> None:
        """dst is writable again: write what it holds, then read src again."""
        if not self._send(dst, dst.out) or dst.out:
            return
        if dst.fin:
            self._shut(dst)
        if src.readable and not self.closed:
            self._pump(src, dst)

    def _eof(self, src: Side, dst: Side) -> None:
        src.eof = True
        if dst.out:
            dst.fin = True  # after what dst still holds
        elif dst.eof and src.shut:
            self._close_both()  # the last FIN: close() sends it, no shutdown() needed
        else:
            self._shut(dst)

    def _shut(self, side: Side) -> None:
        side.fin = False
        side.shut = True
        with suppress(OSError):  # the peer is gone: its socket's next event says how
            side.sock.shutdown(socket.SHUT_WR)
        back = self.back
        if self.front.shut and back is not None and back.shut:
            self._close_both()  # FIN both ways: done

    def _failed(self, side: Side, exc: OSError) -> None:
        if self.closed:
            return
        cause = "client_reset" if side is self.front else "server_reset"
        log.debug("%s: %s for %s: %s", self.listener.name, cause, self.client_ip, exc)
        self.proxy.count_error(self.listener.name, cause)
        self._close_both(reset=True)

    # Preamble: PROXY header, then the ClientHello --------------------------------------------

    def _read_preamble(self) -> None:
        data, sock = self.preamble, self.front.sock
        assert data is not None
        while len(data) <= PREAMBLE_MAX:
            try:
                chunk = sock.recv(MAX_HELLO)
            except BlockingIOError:
                self.front.readable = False
                break
            except OSError as exc:
                self._failed(self.front, exc)
                return
            if not chunk:
                self.front.readable = False
                self._preamble_eof()
                return
            data += chunk
        self._examine()

    def _preamble_eof(self) -> None:
        self.front.eof = True
        if self.proxy_wanted:
            self._refuse_proxy("the client closed before sending a whole PROXY header")
        else:
            self._route_by_sni(None)  # what we have goes to the default pool

    def _examine(self) -> None:
        data = self.preamble
        assert data is not None
        if self.proxy_wanted:
            try:
                header = parse_proxy(bytes(data))
            except ProxyProtocolError as err:
                self._refuse_proxy(str(err))
                return
            if header is None:
                return
            self.proxy_wanted = False
            self.client = header.src or self.client
            self.local = header.dst or self.local_address()
            del data[: header.length]
            if self.listener.sni is None:
                self._preamble_done()
                return
        if not data:
            return
        try:
            hello = parse_client_hello(bytes(data))
        except ClientHelloError as err:
            log.debug("%s: no server name from %s: %s", self.listener.name, self.client_ip, err)
            self._route_by_sni(None)
            return
        if hello is not None:
            self._route_by_sni(hello.server_name)
        elif len(data) > PREAMBLE_MAX:
            self._route_by_sni(None)

    def _route_by_sni(self, server_name: str | None) -> None:
        sni = self.listener.sni
        name = sni.pool_for(server_name) if sni is not None else self.listener.pool
        self._preamble_done(name)

    def _preamble_done(self, pool_name: str | None = None) -> None:
        data = self.preamble
        self.preamble = None
        self.pending = bytes(data) if data else b""
        self._connect(self._pool(pool_name if pool_name is not None else self.listener.pool))

    def _refuse_proxy(self, why: str) -> None:
        log.warning(
            "%s: refused connection from %s: bad PROXY header: %s",
            self.listener.name,
            self.client_ip,
            why,
        )
        self.proxy.count_error(self.listener.name, "proxy_header")
        self.close()

    # Connecting -------------------------------------------------------------------------------

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

    def _close_both(self, reset: bool = False) -> None:
        self._ended()
        for side in (self.front, self.back):
            if side is not None and side.fd != -1:
                self.reactor.forget(side.fd)
                side.fd = -1
                side.close(reset)

    def close(self) -> None:
        """Close both sides (what the kernel holds is still sent)."""
        self._close_both()

    abort = close  # what the worker calls (over max_connections, after the shutdown grace)

    def __repr__(self) -> str:
        phase = ("preamble", "connecting", "forwarding", "closed")[self.phase]
        server = self.server.address if self.server is not None else "-"
        return f"<TcpConnection {self.client_ip} on {self.listener.name} {phase} -> {server}>"
