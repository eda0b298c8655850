"""The HTTP/1.1 reverse proxy's client side: one `ClientConnection` per client socket.

Theory of operation. A `ClientConnection` owns one client socket and its request parser (it is
the parser's delegate). Every request head it parses becomes an `Exchange`
(lb.proxy.http.exchange), appended to `exchanges`; only `exchanges[0]` talks to a server and
writes to the client, so pipelined requests are answered in order (RFC 9112 §9.3.2). Requests
behind it wait with their bodies buffered, and the client socket is paused meanwhile
(`PIPELINED`), which bounds that buffer to one socket read. When `exchanges[0]` finishes
(`exchange_done`), the next one starts, or the connection closes, or it waits for another
request under the `idle` deadline.

Also here: the PROXY protocol header (`accept_proxy`), read before any request; the
`client_header` deadline, set once per request head so a slow client cannot push it out; the
cork that lets a small response's head and body leave in one write; and refusing a byte stream
the parser rejects, answered in its turn and then closed.
"""

from __future__ import annotations

import _socket
import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from lb.core.errors import HTTPError, Reason, error_response
from lb.core.http import RequestHead
from lb.core.proxy_protocol import ProxyProtocolError
from lb.core.proxy_protocol import parse as parse_proxy
from lb.protocols import HttptoolsRequestParser, RequestParser, request_parser
from lb.proxy.http.exchange import Exchange
from lb.proxy.http.flow import PIPELINED, ReadGate
from lb.proxy.http.request_body import PENDING, RequestBody
from lb.proxy.tls.contexts import client_subject

if TYPE_CHECKING:
    from lb.proxy.host import Host
    from lb.proxy.listeners import ListenerSettings
    from lb.proxy.runtime import Current
    from lb.proxy.timers import Ticker

log = logging.getLogger("lb.proxy")

# Corked writes are joined into one buffer up to this size of their last piece; larger ones
# (a body chunk of a big response) go to writev as they are.
COPY_LIMIT: Final = 16 * 1024
# Final: compiled code holds them in C statics (a module attribute is a lookup per read).
_TCP_CORK: Final = _socket.TCP_CORK
_IPPROTO_TCP: Final = _socket.IPPROTO_TCP
_AF_INET: Final = _socket.AF_INET
_SOCK_STREAM: Final = _socket.SOCK_STREAM
_Socket: Final = _socket.socket


def _cork_socket(transport: asyncio.BaseTransport) -> None:
    """The last response of a connection that closes after it: held in the kernel (TCP_CORK)
    so that its last bytes and the FIN leave in one segment. One segment less per connection
    for the client and the loopback to carry, and one wakeup less for the client. The close
    flushes it (and Linux never holds corked bytes more than 200 ms).

    Set through a socket object of its own on the transport's fd, detached at once: the
    transport's (uvloop's PseudoSocket) builds a Python-level socket.socket per call, a cost
    paid once per connection. (A family given with an fd is taken as it is, and TCP options
    do not depend on it.)"""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    fd = sock.fileno()
    if fd < 0:
        return
    own = _Socket(_AF_INET, _SOCK_STREAM, 0, fd)
    try:
        own.setsockopt(_IPPROTO_TCP, _TCP_CORK, 1)
    except OSError:  # the peer may be gone already: closing anyway
        pass
    finally:
        own.detach()


def _dropped(data: bytes) -> None:
    pass


class ClientConnection(asyncio.Protocol):
    __slots__ = (
        "_feed",
        "_write",
        "client_ip",
        "closed",
        "corked",
        "current",
        "deadline",
        "exchanges",
        "gate",
        "header_timeout",
        "idle_timeout",
        "listener",
        "next_pending",
        "parser",
        "proto",
        "proxy",
        "proxy_buf",
        "received",
        "receiving",
        "starting",
        "subject",
        "ticker",
        "transport",
        "write_paused",
    )

    def __init__(self, proxy: Host, listener: ListenerSettings) -> None:
        self.proxy = proxy
        self.listener = listener
        # Read per request: kept here, where compiled code reads them directly.
        self.ticker: Ticker = proxy.ticker
        self.current: Current = proxy.current
        self.header_timeout: float = listener.timeouts.client_header
        self.idle_timeout: float = listener.timeouts.idle
        self.transport: asyncio.Transport | None = None
        # The transport's write, bound once (by name, each call looks it up on uvloop's type:
        # ~400 instructions once compiled); a stand-in while there is no transport.
        self._write: Callable[[bytes], object] = _dropped
        self.gate = ReadGate()
        kind = proxy.parser_kind
        self.parser: RequestParser = (
            # The usual parser made here, a compiled class from compiled code ("httptools"
            # only when it imported: lb.protocols.parser_kind).
            HttptoolsRequestParser(self, listener.max_header_size)
            if kind == "httptools"
            else request_parser(self, listener.max_header_size, kind)
        )
        # Bound once: `parser` is typed by its protocol, so a call by name is a lookup each read.
        self._feed: Callable[[bytes], None] = self.parser.feed
        self.exchanges: deque[Exchange] = deque()
        self.receiving: Exchange | None = None  # the exchange the parser is delivering to
        self.client_ip = "-"
        self.proto = b"https" if listener.tls is not None else b"http"  # X-Forwarded-Proto
        # (header name, verified client certificate subject), set once the handshake is done.
        self.subject: tuple[bytes, bytes | None] | None = None
        self.deadline = 0.0
        self.received = False  # a request head has come on this connection
        self.closed = False
        self.write_paused = False
        self.corked: list[bytes] | None = None
        self.starting: Exchange | None = None  # a head parsed in this read, started after it
        self.next_pending = False  # the next pipelined exchange is due to start (_start_next)
        # accept_proxy: the PROXY header's bytes so far; None once read (or not expected).
        # (On TLS listeners the transport reads it, in clear, before the handshake.)
        self.proxy_buf: bytes | None = (
            b"" if listener.accept_proxy and listener.tls is None else None
        )

    # asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self._write = transport.write  # type: ignore[attr-defined]
        self.gate.transport = transport
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else "-"
        if self.listener.accept_proxy and self.listener.tls is not None:
            header = transport.get_extra_info("proxy_header")  # read by lb.proxy.tls.listener
            if header is not None and header.src is not None:
                self.client_ip = header.src[0]
        # No TCP_NODELAY here: asyncio and uvloop set it on every TCP transport already.
        if self.listener.subject_header is not None:
            self.subject = (self.listener.subject_header, client_subject(transport))
        self.proxy.connection_opened(self)
        self.deadline = self.ticker.now() + self.header_timeout

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self.proxy_buf is not None:
            data = self._proxy_header(data)
            if not data:
                return
        if not self.exchanges and not self.parser.in_head:
            # A new request is arriving: the client now has `client_header` to finish its head.
            # Set once per head, not per read: a client trickling a byte at a time must not
            # keep pushing the deadline out (slowloris).
            self.deadline = self.ticker.now() + self.header_timeout
        try:
            self._feed(data)
        except HTTPError as err:
            self._refuse(err)
        starting = self.starting
        if starting is not None:
            self.starting = None
            self._start(starting)

    def eof_received(self) -> bool | None:
        # The client half-closed. Requests already received still get their answers; the
        # connection closes after them (keep_alive is off from here).
        if not self.exchanges:
            return None
        for exchange in self.exchanges:
            exchange.client_close = True
        if self.exchanges[-1].status == 101:
            # A tunnel: the half-close is the client's message to the server, pass it on;
            # the server's own close then ends the tunnel.
            self.exchanges[-1].tunnel_eof_from_client()
            return True
        if self.receiving is not None or self.parser.in_head:
            # It stopped in the middle of a request, which can never be completed now:
            # closing ends every exchange (connection_lost) and frees their servers.
            return None
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.deadline = 0.0
        # Copied first: a finishing exchange removes itself from the queue.
        pending = list(self.exchanges)
        self.exchanges.clear()
        for exchange in pending:
            exchange.client_lost()
        self.proxy.connection_closed(self)
        # Break the cycles through the transport (uvloop keeps our data_received) and the
        # parser, so this connection is freed now by refcounting, not later by the GC.
        self.parser.release()
        self.transport = self.gate.transport = None
        self._write = _dropped

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.exchanges:
            self.exchanges[0].client_pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.exchanges:
            first = self.exchanges[0]
            if first.state == PENDING:  # it waited for the client to read: its turn now
                if not self.next_pending:
                    self.next_pending = True
                    self.proxy.loop.call_soon(self._start_next)
            else:
                first.client_resume_writing()

    # Request parser delegate ---------------------------------------------------------------

    def on_request_head(self, head: RequestHead) -> None:
        self.received = True
        underscored = head.underscored()
        if underscored:
            self._underscored(head, underscored)  # (may raise HTTPError: refused, as a parse)
        exchange = Exchange(self, head)
        self.receiving = exchange
        self.exchanges.append(exchange)
        self.deadline = 0.0
        if len(self.exchanges) == 1:
            # Started once the parser is through this read (data_received), not now: a
            # request whose later bytes in the same read are malformed (a bad chunk, say) is
            # then refused before its head goes out on a kept-alive server connection.
            self.starting = exchange
        else:
            self.gate.pause(PIPELINED)

    def _underscored(self, head: RequestHead, names: list[bytes]) -> None:
        """`underscores_in_headers`: a server (or a CGI-style framework) may read
        `Transfer_Encoding` as Transfer-Encoding, which lb did not frame by: such fields are
        dropped before routing and forwarding (nginx's default), kept, or refused with 400."""
        policy = self.listener.underscores_in_headers
        if policy == "pass":
            return
        shown = ", ".join(n.decode("latin-1") for n in names)
        if policy == "refuse":
            raise HTTPError(Reason.bad_request, f"header name with an underscore: {shown}")
        log.debug("dropped header(s) from %s on %s: %s", self.client_ip, self.listener.name, shown)
        head.drop_fields(names)

    def on_request_body(self, data: bytes) -> None:
        if self.receiving is not None:
            self.receiving.on_request_body(data)

    def on_request_end(self) -> None:
        exchange = self.receiving
        self.receiving = None
        if exchange is not None:
            exchange.on_request_end()

    def on_upgrade_data(self, data: bytes) -> None:
        if self.exchanges:
            self.exchanges[-1].on_tunnel_data_from_client(data)

    def _start(self, exchange: Exchange) -> None:
        try:
            exchange.start()
        except Exception:
            # A bug here must drop this client's connection, not leave it waiting forever.
            log.exception("exchange %r failed to start", exchange)
            if self.transport is not None:
                self.transport.abort()

    @property
    def local_authority(self) -> bytes:
        """HOST:PORT the client connected to (lb's own address; IPv6 in brackets)."""
        sockname = self.transport.get_extra_info("sockname") if self.transport else None
        if not sockname:
            return self.listener.bind.encode()
        host, port = sockname[0], sockname[1]
        return (f"[{host}]:{port}" if ":" in host else f"{host}:{port}").encode()

    @property
    def idle(self) -> bool:
        """Between requests: nothing to wait for when the listener stops or lb drains."""
        return not self.exchanges

    # Timeouts -------------------------------------------------------------------------------

    def on_deadline(self) -> None:
        if self.proxy_buf is not None:
            self._refuse_proxy("no PROXY header in time")
            return
        if self.exchanges:
            return  # a request is being answered: the server side's deadline governs
        if self.parser.in_head:
            self.proxy.count_error(self.listener.name, "client_header_timeout")
            self._respond_and_close(Reason.request_timeout, "request head not received in time")
        elif not self.received:
            # Connected and sent nothing within `client_header` (a port scan, a preconnect, a
            # slowloris opening): the same timeout, counted too; closed without an answer, as
            # there is no request to answer (nginx does the same).
            self.proxy.count_error(self.listener.name, "client_header_timeout")
            self.close()
        else:
            self.close()  # idle keep-alive connection

    # Used by exchanges ----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.corked is not None:
            self.corked.append(data)
        elif self.transport is not None and not self.closed:
            self._write(data)

    def cork(self) -> None:
        """Collect writes until `uncork`: a small response's head and body then leave in one
        system call, which on this path costs as much as the rest of the request's Python."""
        if self.corked is None:
            self.corked = []

    def uncork(self) -> None:
        corked = self.corked
        self.corked = None
        if corked and self.transport is not None and not self.closed:
            if len(corked) == 1:
                self._write(corked[0])
            elif len(corked[-1]) < COPY_LIMIT:
                self._write(b"".join(corked))
            else:
                # A large body chunk is not copied again to join a head to it: the loop hands
                # the pieces to one writev.
                self.transport.writelines(corked)

    def exchange_done(self, exchange: RequestBody) -> None:
        if self.exchanges and self.exchanges[0] is exchange:
            self.exchanges.popleft()
        if self.closed:
            return
        if exchange.client_close or not exchange.request_done or self.current.stopping:
            self.close()
            return
        if self.exchanges:
            # The next pipelined request starts on the loop's next turn, and only once the
            # client takes what was written: answers lb makes itself (cache hits, errors) would
            # otherwise pile up in memory for a client that does not read, and a long pipeline
            # of them would recurse here.
            if not self.write_paused and not self.next_pending:
                self.next_pending = True
                self.proxy.loop.call_soon(self._start_next)
        else:
            if self.gate.reasons:
                self.gate.resume(PIPELINED)
            self.deadline = self.ticker.now() + self.idle_timeout

    def _start_next(self) -> None:
        self.next_pending = False
        if self.closed or not self.exchanges or self.write_paused:
            return
        self._start(self.exchanges[0])
        if len(self.exchanges) == 1:
            self.gate.resume(PIPELINED)

    def close(self) -> None:
        transport = self.transport
        if transport is not None and not self.closed:
            if self.corked and self.listener.tls is None:
                _cork_socket(transport)
            self.uncork()
            self.closed = True
            transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _refuse(self, err: HTTPError) -> None:
        """The parser refused the byte stream: answer the error in turn, then close."""
        log.info(
            "refused request from %s on %s: %s", self.client_ip, self.listener.name, err.detail
        )
        self.gate.pause(PIPELINED)  # nothing more is read from this connection
        receiving = self.receiving
        if receiving is not None and receiving is self.exchanges[0] and not receiving.responded:
            receiving.fail(err.reason, err.detail)  # answered now; closes after it
            return
        if receiving is not None and receiving is not self.exchanges[0]:
            # A pipelined request not started yet: nothing of it went anywhere, so it is
            # refused in its turn, after the answers to the requests before it.
            receiving.refusal = err
            self.receiving = None
            return
        if receiving is not None:
            receiving.abort_request()  # its response is under way: close both sides
            return
        failed = Exchange(self, None)
        failed.refusal = err
        self.exchanges.append(failed)
        if len(self.exchanges) == 1:
            failed.start()

    def _proxy_header(self, data: bytes) -> bytes:
        """accept_proxy: consume the PROXY header; the bytes after it, b"" while incomplete."""
        assert self.proxy_buf is not None
        data = self.proxy_buf + data
        try:
            header = parse_proxy(data)
        except ProxyProtocolError as err:
            self._refuse_proxy(str(err))
            return b""
        if header is None:
            self.proxy_buf = data
            return b""
        self.proxy_buf = None
        if header.src is not None:
            self.client_ip = header.src[0]  # balancing, logs and X-Forwarded-For use it
        return data[header.length :]

    def _refuse_proxy(self, why: str) -> None:
        # Nothing was parsed, so there is no request to answer: log why and close.
        log.warning(
            "refused connection from %s on %s: bad PROXY header: %s",
            self.client_ip,
            self.listener.name,
            why,
        )
        self.proxy.count_error(self.listener.name, "proxy_header")
        self.close()

    def _respond_and_close(self, reason: Reason, detail: str) -> None:
        self.write(error_response(reason, detail, hsts=self.listener.hsts))
        self.proxy.log_refusal(self, reason, detail)
        self.close()

    def __repr__(self) -> str:
        return (
            f"<ClientConnection {self.client_ip} on {self.listener.name} "
            f"exchanges={len(self.exchanges)}>"
        )
