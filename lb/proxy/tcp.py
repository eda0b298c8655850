"""Layer 4 forwarding, `mode: tcp`: a byte stream to a server of a pool.

Theory of operation. A `TcpConnection` owns a client socket; once it knows where to go it
opens one `ServerSide` connection and from then on relays bytes both ways unchanged. Its life
has three phases:

    PREAMBLE    only when the listener accepts PROXY or routes by SNI: client bytes are kept
                (bounded by the two parsers' limits) until the PROXY header is read and the TLS
                ClientHello is seen. A bad PROXY header ends the connection here: nothing has
                reached any server. The ClientHello bytes are kept and forwarded as they are.
    CONNECTING  connect to a server the pool's balancer picks; on refusal or connect timeout,
                the next server, excluding those that failed, until none is left. Client bytes
                that arrive meanwhile are kept, up to CONNECT_BUFFER, then the client is paused.
                With the pool's `passive` checks, a refusal or timeout counts as a failure of
                that server and a connect as a success (tcp has no answer to judge).
    FORWARDING  each side's bytes are written to the other. Invariants:
                - flow control: when a side's write buffer passes its high-water mark
                  (`pause_writing`), the *other* side stops being read until it drains, so a
                  connection holds at most about two write buffers whatever the speeds;
                - half-close: a side's FIN (`eof_received`) becomes `write_eof()` on the other
                  side and the connection stays open the other way; when both sides have sent
                  FIN, both are closed;
                - a side that goes away with an error (a reset) aborts the other side, so the
                  peer learns the stream was cut; a side that goes away cleanly closes the
                  other after its buffered bytes are written.

Deadlines use the worker's `Ticker` (one `deadline` per connection): the PROXY/ClientHello wait
(`timeouts.client_header` of the listener), the connect (`timeouts.connect` of the pool), and
while forwarding a check every IDLE_CHECK seconds that closes the connection after
`timeouts.idle` (of the listener) without a byte either way and adds the bytes relayed since the
last check to `lb_tcp_bytes_total` (so the hot path counts in plain ints, not in metrics).

Shared with udp (byte counting, the idle check): `lb.proxy.l4_common`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from lb.core.balancer import ServerState
from lb.core.proxy_protocol import ProxyProtocolError, build_v1, build_v2
from lb.core.proxy_protocol import parse as parse_proxy
from lb.core.sni import MAX_HELLO, ClientHelloError, parse_client_hello
from lb.proxy.flow import CONNECTING, SERVER_FULL, ReadGate
from lb.proxy.l4_common import IDLE_CHECK, Address, flush_bytes, idle_check

if TYPE_CHECKING:
    from lb.proxy.runtime import ListenerSettings, PoolRuntime
    from lb.proxy.server import Worker
    from lb.proxy.upstream import UpstreamServer

log = logging.getLogger("lb.l4")  # one logger name for tcp and udp, as before the split

# Client bytes held while the server connection opens, before the client is paused.
CONNECT_BUFFER = 256 * 1024
# Write buffer high-water mark of both sides. Larger than asyncio's 64 KiB default so bulk
# transfers pause and resume less often; memory per connection stays about 2 x this.
WRITE_HIGH = 256 * 1024
# Bytes the preamble (PROXY header plus ClientHello records) may take before lb gives up on it.
PREAMBLE_MAX = 2 * MAX_HELLO

PREAMBLE, CONNECTING_, FORWARDING, CLOSED = range(4)


class TcpConnection(asyncio.Protocol):
    """One client connection of a tcp listener, and (through `ServerSide`) its server's."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "checked",
        "client",
        "client_eof",
        "closed",
        "connect_task",
        "deadline",
        "excluded",
        "gate",
        "last_active",
        "listener",
        "local",
        "pending",
        "pending_size",
        "phase",
        "pool",
        "preamble",
        "proxy_wanted",
        "server",
        "server_eof",
        "transport",
        "upstream",
        "worker",
    )

    def __init__(self, worker: Worker, listener: ListenerSettings) -> None:
        self.worker = worker
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None  # set once connected: the fast path
        self.gate = ReadGate()
        self.phase = PREAMBLE
        self.closed = False
        self.deadline = 0.0
        self.client: Address | None = None  # the real client: the peer, or the PROXY source
        self.local: Address | None = None  # where the client connected to
        self.preamble: bytearray | None = None
        self.proxy_wanted = listener.accept_proxy
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.pool: PoolRuntime | None = None
        self.server: UpstreamServer | None = None
        self.excluded: set[ServerState] = set()
        self.connect_task: asyncio.Task[None] | None = None
        self.client_eof = False
        self.server_eof = False
        self.bytes_in = 0  # client -> server, not yet added to the metrics
        self.bytes_out = 0  # server -> client, likewise
        self.checked = 0  # bytes_in + bytes_out at the last idle check
        self.last_active = 0.0

    # The addresses are asked of the socket only when needed (ip_hash, send_proxy, a log
    # line): two system calls fewer per connection otherwise.

    @property
    def client_ip(self) -> str:
        client = self.client_address()
        return client[0] if client else "-"

    def client_address(self) -> Address | None:
        if self.client is None and self.transport is not None:
            peer = self.transport.get_extra_info("peername")
            self.client = (peer[0], peer[1]) if peer else None
        return self.client

    def local_address(self) -> Address | None:
        if self.local is None and self.transport is not None:
            local = self.transport.get_extra_info("sockname")
            self.local = (local[0], local[1]) if local else None
        return self.local

    # Client side: asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self.gate.transport = transport
        # TCP_NODELAY: both uvloop and asyncio set it on every TCP transport already.
        self.worker.connection_opened(self)
        if self.closed:
            return  # over max_connections, or the worker is stopping: counted there
        self.transport.set_write_buffer_limits(high=WRITE_HIGH)  # type: ignore[union-attr]
        if self.proxy_wanted or self.listener.sni is not None:
            self.preamble = bytearray()
            self.deadline = self.worker.loop.time() + self.listener.timeouts.client_header
            return
        self._connect(self._pool(self.listener.pool))

    def data_received(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is not None:  # the hot path
            upstream.write(data)
            self.bytes_in += len(data)
            return
        if self.phase == PREAMBLE and self.preamble is not None:
            self.preamble += data
            self._examine()
        elif self.phase == CONNECTING_:
            self.pending.append(data)
            self.pending_size += len(data)
            if self.pending_size > CONNECT_BUFFER:
                self.gate.pause(CONNECTING)

    def eof_received(self) -> bool | None:
        self.client_eof = True
        if self.phase == PREAMBLE:
            if self.proxy_wanted:
                self._refuse_proxy("the client closed before sending a whole PROXY header")
                return None
            self._route_by_sni(None)  # what we have goes to the default pool
            return True
        if self.upstream is None:
            return True  # connecting: write_eof() once connected
        if self.server_eof:
            self._close_both()
            return None
        if self.upstream.can_write_eof():
            self.upstream.write_eof()
        return True  # keep sending the server's answer to the client

    def connection_lost(self, exc: Exception | None) -> None:
        if self.phase != CLOSED and exc is not None:
            self.worker.count_error(self.listener.name, "client_reset")
        self._ended()
        upstream = self.upstream
        if upstream is not None and not upstream.is_closing():
            if exc is not None:
                upstream.abort()
            else:
                upstream.close()
        self.worker.connection_closed(self)

    def pause_writing(self) -> None:
        # The client cannot keep up: stop reading the server until its buffer drains.
        upstream = self.upstream
        if upstream is not None and not upstream.is_closing():
            upstream.pause_reading()

    def resume_writing(self) -> None:
        upstream = self.upstream
        if upstream is not None and not upstream.is_closing():
            upstream.resume_reading()

    # Preamble: PROXY header, then the ClientHello --------------------------------------------

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
            self.client = header.src or self.client_address()
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
        if data:
            self.pending.append(bytes(data))
            self.pending_size += len(data)
        self._connect(self._pool(pool_name if pool_name is not None else self.listener.pool))

    def _refuse_proxy(self, why: str) -> None:
        log.warning(
            "%s: refused connection from %s: bad PROXY header: %s",
            self.listener.name,
            self.client_ip,
            why,
        )
        self.worker.count_error(self.listener.name, "proxy_header")
        self.close()

    # Connecting -------------------------------------------------------------------------------

    def _pool(self, name: str | None) -> PoolRuntime | None:
        return self.worker.runtime.pools.get(name) if name is not None else None

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
        self.deadline = self.worker.loop.time() + pool.timeouts.connect
        self.connect_task = self.worker.loop.create_task(self._open(server))

    async def _open(self, server: UpstreamServer) -> None:
        try:
            await self.worker.loop.create_connection(
                lambda: ServerSide(self), server.host, server.port
            )
        except OSError as exc:
            if self.server is server and self.phase == CONNECTING_:
                cause = "refused" if isinstance(exc, ConnectionRefusedError) else "error"
                self._connect_failed(server, cause, str(exc) or type(exc).__name__)

    def _connect_failed(self, server: UpstreamServer, cause: str, detail: str) -> None:
        assert self.pool is not None
        self.connect_task = None
        self.server = None
        server.state.in_flight -= 1
        self.excluded.add(server.state)
        if self.pool.passive is not None:  # refused or timed out: a failure, for passive checks
            self.pool.passive.observe(server.state, True)
        self.worker.count_connect_error(self.pool.name, server.address, cause)
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
        self.worker.count_error(self.listener.name, cause)
        self.close()

    def on_server_connected(self, transport: asyncio.Transport) -> None:
        """ServerSide.connection_made: send what we hold, then relay."""
        self.connect_task = None
        pool, server = self.pool, self.server
        if pool is not None and pool.passive is not None and server is not None:
            pool.passive.observe(server.state, False)  # connected: the failure streak ends
        if self.closed:
            transport.abort()
            return
        assert pool is not None and self.transport is not None
        transport.set_write_buffer_limits(high=WRITE_HIGH)
        self.phase = FORWARDING
        if pool.send_proxy is not None:
            build = build_v2 if pool.send_proxy == "v2" else build_v1
            transport.write(build(self.client_address(), self.local_address()))
        if self.pending:
            data = b"".join(self.pending)
            self.pending = []
            self.bytes_in += len(data)
            transport.write(data)
        self.upstream = transport
        if self.client_eof and transport.can_write_eof():
            transport.write_eof()
        self.gate.resume(CONNECTING)
        now = self.worker.loop.time()
        self.last_active = now
        self.deadline = now + min(IDLE_CHECK, self.listener.timeouts.idle)

    # Server side events (from ServerSide) ---------------------------------------------------

    def on_server_eof(self) -> bool | None:
        self.server_eof = True
        transport = self.transport
        if transport is None or self.closed:
            return None
        if self.client_eof:
            self._close_both()
            return None
        if transport.can_write_eof():
            transport.write_eof()
        return True  # keep sending the client's bytes to the server

    def on_server_lost(self, exc: Exception | None) -> None:
        if self.phase == CLOSED:
            return
        if exc is not None:
            self.worker.count_error(self.listener.name, "server_reset")
        self._ended()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if exc is not None:
                transport.abort()
            else:
                transport.close()

    # Deadlines --------------------------------------------------------------------------------

    def on_deadline(self) -> None:
        now = self.worker.loop.time()
        phase = self.phase
        if phase == FORWARDING:
            if not idle_check(self, now):
                idle = self.listener.timeouts.idle
                log.info("%s: idle for %gs, closing %s", self.listener.name, idle, self.client_ip)
                self.worker.count_error(self.listener.name, "idle_timeout")
                self._close_both()
        elif phase == PREAMBLE:
            if self.proxy_wanted:
                self.worker.count_error(self.listener.name, "proxy_header_timeout")
                log.warning(
                    "%s: refused connection from %s: no PROXY header within %gs",
                    self.listener.name,
                    self.client_ip,
                    self.listener.timeouts.client_header,
                )
                self.close()
            else:
                self._route_by_sni(None)  # no ClientHello in time: the default pool
        elif phase == CONNECTING_:
            server, task = self.server, self.connect_task
            if server is not None and task is not None:
                task.cancel()
                self._connect_failed(server, "timeout", "connect timed out")

    # Closing ----------------------------------------------------------------------------------

    def _ended(self) -> None:
        """Bookkeeping that runs once, whichever side ends first."""
        if self.phase == CLOSED:
            return
        self.phase = CLOSED
        self.closed = True
        self.deadline = 0.0
        flush_bytes(self)
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        if self.server is not None:
            self.server.state.in_flight -= 1
            self.server = None

    def _close_both(self) -> None:
        self._ended()
        if self.upstream is not None:
            self.upstream.close()
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        """Close the client side (flushing what is buffered), and so the server side."""
        if self.transport is not None and not self.transport.is_closing():
            self._close_both()
        else:
            self._ended()

    def __repr__(self) -> str:
        phase = ("preamble", "connecting", "forwarding", "closed")[self.phase]
        server = self.server.address if self.server is not None else "-"
        return f"<TcpConnection {self.client_ip} on {self.listener.name} {phase} -> {server}>"


class ServerSide(asyncio.Protocol):
    """The server socket of a `TcpConnection`: relays to the client transport and reports
    flow control and endings to the connection."""

    __slots__ = ("client", "conn")

    def __init__(self, conn: TcpConnection) -> None:
        self.conn = conn
        self.client = conn.transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.conn.on_server_connected(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is not None:
            client.write(data)
            self.conn.bytes_out += len(data)

    def eof_received(self) -> bool | None:
        return self.conn.on_server_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.on_server_lost(exc)

    def pause_writing(self) -> None:
        # The server cannot keep up: stop reading the client until its buffer drains.
        self.conn.gate.pause(SERVER_FULL)

    def resume_writing(self) -> None:
        self.conn.gate.resume(SERVER_FULL)
