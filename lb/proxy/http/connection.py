"""Connections to servers: one `asyncio.Protocol` per connection, kept alive in a per-server
idle list and reused LIFO (the most recently used socket is the least likely to have been
closed by the server).

An `UpstreamConnection` carries one `UpstreamCall` (lb.proxy.http.call) at a time; it forwards
parser events and transport flow-control signals to that call and knows nothing of routing or
clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

from lb.core.balancer import ServerState
from lb.core.errors import HTTPError
from lb.core.http import ResponseHead
from lb.protocols import ResponseDelegate, ResponseParser, response_parser

if TYPE_CHECKING:
    from lb.proxy.timers import Ticker

log = logging.getLogger("lb.upstream")

MAX_RESPONSE_HEAD: Final = 64 * 1024
MAX_IDLE_PER_SERVER: Final = 128


class UpstreamServer:
    """A configured server at run time: its balancing state plus its idle connections."""

    __slots__ = (
        "address",
        "host",
        "idle",
        "idle_timeout",
        "max_connections",
        "pool",
        "port",
        "server_hostname",
        "ssl",
        "state",
    )

    def __init__(self, pool: str, state: ServerState, host: str, port: int) -> None:
        self.pool = pool
        self.state = state
        self.address = state.address
        self.host = host
        self.port = port
        self.idle: list[UpstreamConnection] = []
        self.idle_timeout = 60.0  # the pool's `timeouts.idle`: kept-alive sockets close after it
        # Set by the pool when it speaks TLS to its servers (pool `tls`).
        self.ssl: ssl.SSLContext | None = None
        self.server_hostname: str | None = None  # SNI and the name verified
        # Requests at once (`in_flight`) before new ones wait in the pool's waiting room
        # (lb.proxy.pool.waiting).
        self.max_connections: int | None = None

    def take_idle(self) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.usable():
                return conn
        return None

    def close_idle(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()

    def __repr__(self) -> str:
        return f"<UpstreamServer {self.pool}/{self.address} idle={len(self.idle)}>"


class Caller(ResponseDelegate, Protocol):
    """What a connection tells the request it carries (an `UpstreamCall`)."""

    def upstream_failed(self, upstream: UpstreamConnection, detail: str, timeout: bool) -> None: ...
    def upstream_pause_writing(self) -> None: ...
    def upstream_resume_writing(self) -> None: ...

    @property
    def client(self) -> Corkable: ...


class Corkable(Protocol):
    def cork(self) -> None: ...
    def uncork(self) -> None: ...


def _closing() -> bool:
    return True


def _dropped(data: bytes) -> None:
    pass


def _nothing() -> None:
    pass


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "_feed",
        "_is_closing",
        "_resume_reading",
        "_write",
        "call",
        "deadline",
        "parser",
        "reused",
        "server",
        "ticker",
        "transport",
    )

    def __init__(self, server: UpstreamServer, ticker: Ticker, parser_kind: str) -> None:
        self.server = server
        self.ticker = ticker
        self.transport: asyncio.Transport | None = None
        self._unbind()
        self.call: Caller | None = None
        self.parser: ResponseParser = response_parser(self, MAX_RESPONSE_HEAD, parser_kind)
        # Bound once: `parser` is typed by its protocol, so a call by name is a lookup each read.
        self._feed: Callable[[bytes], None] = self.parser.feed
        self.deadline = 0.0
        self.reused = False  # True once it has carried a request: a failure may be a stale socket

    def _unbind(self) -> None:
        """Stand-ins for the bound methods while there is no transport (and none to keep
        alive in a cycle after it is lost): never called then, as `transport` is None."""
        self._write: Callable[[bytes], object] = _dropped
        self._is_closing: Callable[[], bool] = _closing
        self._resume_reading: Callable[[], object] = _nothing

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        # The transport's methods each request calls, bound once: called by name, each is
        # looked up on uvloop's type every time (~400 instructions once compiled).
        self._write = transport.write  # type: ignore[attr-defined]
        self._is_closing = transport.is_closing
        self._resume_reading = transport.resume_reading  # type: ignore[attr-defined]
        self.ticker.watched.add(self)  # (TCP_NODELAY: set by asyncio and uvloop themselves)

    def data_received(self, data: bytes) -> None:
        call = self.call
        if call is None:
            # A server must not speak while idle (RFC 9112 §9.3); its state is unknown now.
            self.close()
            return
        client = call.client
        client.cork()  # what this read gives the client leaves in one write
        try:
            self._feed(data)
        except HTTPError as err:
            # The call that fed may be done already (bytes after its complete response):
            # the error is then this connection's, and whoever holds it now is told.
            current = self.call
            if current is not None:
                current.upstream_failed(self, err.detail, timeout=False)
            else:
                log.info("%s: %s after a complete response, closing", self, err.detail)
                self.abort()  # its parser is broken: never reuse it
        finally:
            client.uncork()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.ticker.watched.discard(self)
        call = self.call
        if call is not None:
            # A clean close may end a close-delimited body; a reset never does (the body
            # is cut short, and must not be taken, or cached, as whole).
            if exc is not None or not self.parser.feed_eof():
                why = "server reset the connection" if exc is not None else "server closed it"
                call.upstream_failed(self, why, timeout=False)
        else:
            with contextlib.suppress(ValueError):
                self.server.idle.remove(self)
        # Cycles through uvloop's transport and the parser: freed now, not by the GC.
        self.parser.release()
        self.transport = None
        self._unbind()

    def pause_writing(self) -> None:
        if self.call is not None:
            self.call.upstream_pause_writing()

    def resume_writing(self) -> None:
        if self.call is not None:
            self.call.upstream_resume_writing()

    # Response parser delegate while no call is attached: events then have no one to go
    # to (a server speaking out of turn), and the connection is not reused.

    def on_response_head(self, head: ResponseHead) -> None:
        self.close()  # a response nobody asked for: the connection cannot be trusted

    def on_response_body(self, data: bytes) -> None:
        pass

    def on_response_end(self) -> None:
        pass

    def on_upgrade_data(self, data: bytes) -> None:
        pass

    # Deadlines: the call sets one while it waits; an idle connection gets the idle one.

    def on_deadline(self) -> None:
        if self.call is not None:
            self.call.upstream_failed(self, "timed out waiting for the server", timeout=True)
        else:
            self.close()

    # Used by the call.

    def usable(self) -> bool:
        return self.transport is not None and not self._is_closing()

    def send(
        self, call: Caller, data: bytes, method: str, timeout: float, upgrade: bool = False
    ) -> None:
        self.call = call
        # The parser reports straight to the call while it is being answered (one call less
        # per event on the hot path); `_detach` points it back here afterwards.
        self.parser.delegate = call
        self.parser.expect(method, upgrade)
        self.deadline = self.ticker.now() + timeout
        assert self.transport is not None
        self._write(data)

    def expire_in(self, seconds: float) -> None:
        """The call now waits on the server (again): its deadline is `seconds` from now."""
        self.deadline = self.ticker.now() + seconds

    def _detach(self) -> None:
        self.call = None
        self.parser.delegate = self  # stray events now meet the guards below

    def release(self) -> None:
        """The call is done and the connection is clean: keep it for the next request."""
        self.call = None
        self.parser.delegate = self  # (as _detach, inlined: this runs once per request)
        self.reused = True
        server = self.server
        transport = self.transport
        if transport is None or self._is_closing() or len(server.idle) >= MAX_IDLE_PER_SERVER:
            self.close()
            return
        self._resume_reading()
        self.deadline = self.ticker.now() + server.idle_timeout
        server.idle.append(self)

    def close(self) -> None:
        self._detach()
        self.deadline = 0.0
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self._detach()
        self.deadline = 0.0
        if self.transport is not None:
            self.transport.abort()

    def __repr__(self) -> str:
        state = "busy" if self.call is not None else "idle"
        return f"<UpstreamConnection {self.server.pool}/{self.server.address} {state}>"


async def open_connection(
    server: UpstreamServer, ticker: Ticker, parser_kind: str, timeout: float
) -> UpstreamConnection:
    """Connect with a timeout; raises OSError or TimeoutError."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, protocol = await loop.create_connection(
            lambda: UpstreamConnection(server, ticker, parser_kind),
            server.host,
            server.port,
            ssl=server.ssl,
            server_hostname=server.server_hostname if server.ssl is not None else None,
        )
    return protocol
