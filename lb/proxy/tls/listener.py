"""TLS termination on the socket itself: OpenSSL reads and writes the client's file
descriptor (an `ssl.SSLSocket`), instead of uvloop's SSL protocol feeding it through memory
buffers.

Why. uvloop's SSL layer copies every byte through two memory BIOs and runs its own state
machine of Python-level calls around OpenSSL's; per new connection that cost lb ~10% of a
handshake's CPU beside haproxy, which does what this module does. It also lets a TLS
listener read a PROXY header, which arrives in clear before the ClientHello.

Theory of operation. `TlsServer` accepts on the listening socket. Each accepted socket gets a
`TlsTransport`, which goes through up to three phases before its protocol (a
`ClientConnection`) exists:

    PROXY      only with `accept_proxy`: the header is read in clear, never a byte past its
               end (those belong to the handshake: the bytes are peeked first, and only a
               header's own bytes are consumed). A bad header closes the connection, logged
               and counted as `proxy_header`, before any TLS.
    HANDSHAKE  `do_handshake()` each time the socket is readable (or writable, when OpenSSL
               wants to write); the listener's SNI callback picks the certificate.
    OPEN       the protocol is created and gets decrypted bytes; it writes through `write`.

PROXY and HANDSHAKE together must finish within the listener's `handshake_timeout` (a deadline
swept by the worker's `Ticker`); a client that fails or stalls there is dropped with a log line
and counted (`tls_handshake`, `tls_handshake_timeout`; a client that closes mid-handshake,
`tls_handshake_aborted`, logs at debug level only), without disturbing anyone else.

Writes: `SSLSocket.send` encrypts and writes the whole buffer, or raises SSLWantWriteError
when the socket is full; OpenSSL then must be given the same bytes again, so the buffer stays
first in `_pending` until the socket is writable. The protocol is paused above the high-water
mark. Reads: one TLS record per `recv`; a full record (16 KiB) suggests more are waiting, so
reading goes on up to READ_BUDGET bytes per wake-up. Closing sends close_notify (best effort,
without waiting for the client's) once the pending bytes are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lb.core.proxy_protocol import ProxyHeader, ProxyProtocolError
from lb.core.proxy_protocol import parse as parse_proxy
from lb.proxy.acceptor import Acceptor

if TYPE_CHECKING:
    from lb.proxy.host import Host
    from lb.proxy.tls.contexts import ListenerTls

log = logging.getLogger("lb.tls")

RECORD = 16 * 1024  # the largest TLS record's plaintext (RFC 8446 §5.1)
READ_SIZE = RECORD  # a recv returns one record at most
READ_BUDGET = 256 * 1024  # bytes read per wake-up before giving others their turn
PEEK = 4096  # bytes of a PROXY header looked at in one go (v1 is at most 107)
HIGH_WATER = 64 * 1024

PROXY, HANDSHAKE, OPEN, CLOSED = range(4)


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


class TlsTransport(asyncio.Transport):
    """One client connection of a TLS listener (see the module docstring)."""

    __slots__ = (
        "_at_eof",
        "_closing",
        "_fd",
        "_high",
        "_low",
        "_paused_protocol",
        "_pending",
        "_pending_size",
        "_phase",
        "_protocol",
        "_proxy_buf",
        "_raw",
        "_read_wants_write",
        "_reading",
        "_sock",
        "_tls",
        "_writer",
        "deadline",
        "loop",
        "peer",
        "proxy_header",
        "server",
    )

    def __init__(self, server: TlsServer, raw: socket.socket, peer: Any) -> None:
        self.server = server
        self.loop = server.loop
        self.peer = peer
        self.proxy_header: ProxyHeader | None = None
        self._raw: socket.socket | None = raw  # until wrapped, after any PROXY header
        self._sock: ssl.SSLSocket | None = None
        self._tls: Any = None  # once open: what reads and writes records (see _handshake)
        self._fd = raw.fileno()
        self._protocol: asyncio.Protocol | None = None
        self._pending: deque[bytes] = deque()  # pending[0]: what OpenSSL must be given again
        self._pending_size = 0
        self._high = HIGH_WATER
        self._low = HIGH_WATER // 4
        self._paused_protocol = False
        self._reading = True  # not paused by the protocol
        self._at_eof = False  # the client sent close_notify or FIN
        self._read_wants_write = False  # a read waits for the socket to be writable
        self._writer = False  # add_writer is in effect
        self._closing = False
        self._proxy_buf = b""
        self._phase = PROXY
        server.starting.add(self)
        self.deadline = self.loop.time() + server.tls.handshake_timeout
        server.proxy.ticker.watched.add(self)
        self.loop.add_reader(self._fd, self._on_readable)
        if not server.accept_proxy:
            self._start_handshake()

    # Before the protocol: PROXY header and handshake --------------------------------------

    def _start_handshake(self) -> None:
        raw = self._raw
        assert raw is not None
        try:
            self._sock = self.server.tls.front.wrap_socket(
                raw, server_side=True, do_handshake_on_connect=False
            )
        except OSError as exc:  # (the raw socket is still ours to close)
            self._drop(f"TLS setup failed: {exc}", None)
            return
        self._raw = None
        self._phase = HANDSHAKE
        self._handshake()  # the ClientHello is often here already

    def _read_proxy_header(self) -> None:
        raw = self._raw
        assert raw is not None
        try:
            peeked = raw.recv(PEEK, socket.MSG_PEEK)
            if not peeked:
                self._refuse_proxy("the client closed before sending a whole PROXY header")
                return
            data = self._proxy_buf + peeked
            header = parse_proxy(data)
            if header is None:
                # A strict prefix of a header: every byte so far is the header's.
                raw.recv(len(peeked))
                self._proxy_buf = data
                return
            raw.recv(header.length - len(self._proxy_buf))  # exactly the header's rest
        except ProxyProtocolError as err:
            self._refuse_proxy(str(err))
            return
        except OSError as exc:
            self._drop(f"connection failed before its PROXY header: {exc}", None)
            return
        self.proxy_header = header
        self._proxy_buf = b""
        self._start_handshake()

    def _refuse_proxy(self, why: str) -> None:
        log.warning(
            "refused connection from %s on %s: bad PROXY header: %s",
            self.peer[0],
            self.server.listener,
            why,
        )
        self._drop(None, "proxy_header")

    def _handshake(self) -> None:
        sock = self._sock
        assert sock is not None
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want_writable(False)
            return
        except ssl.SSLWantWriteError:
            self._want_writable(True)
            return
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError):
            # The client went away: a TCP health check, a scanner, a client that gave up.
            # Counted, but not worth a log line each.
            self._drop(
                "closed by the client during the TLS handshake",
                "tls_handshake_aborted",
                logging.DEBUG,
            )
            return
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
            self._drop(f"TLS handshake failed: {reason}", "tls_handshake")
            return
        self._want_writable(False)
        # The SSLSocket's own C object: its read/write/pending are what SSLSocket's methods
        # call after two or three Python frames of checks that hold once the handshake is
        # done (~4 µs of CPU per small proxied request, measured). The SSLSocket itself if it
        # has none.
        self._tls = getattr(sock, "_sslobj", None) or sock
        self._phase = OPEN
        self.loop.add_reader(self._fd, self._read)  # from now on: no phase to dispatch on
        self.deadline = 0.0
        self.server.proxy.ticker.watched.discard(self)
        self.server.starting.discard(self)
        try:
            protocol = self._protocol = self.server.factory()
            protocol.connection_made(self)
        except Exception as exc:
            self._protocol_failed("connection_made", exc)
            return
        if self._phase == OPEN and self._reading and self._tls.pending():
            self._read()

    def on_deadline(self) -> None:
        """The Ticker: PROXY header and handshake not done within handshake_timeout."""
        if self._phase in (PROXY, HANDSHAKE):
            self._drop("TLS handshake not finished in time", "tls_handshake_timeout")

    def _drop(self, why: str | None, cause: str | None, level: int = logging.INFO) -> None:
        """Close a connection that never reached its protocol, logging and counting why."""
        if why is not None:
            log.log(
                level,
                "connection from %s on %s dropped: %s",
                self.peer[0],
                self.server.listener,
                why,
            )
        if cause is not None:
            self.server.proxy.count_error(self.server.listener, cause)
        # Read what the client already sent: closing with unread bytes would reset the
        # connection, and the client could lose the alert OpenSSL just sent.
        with contextlib.suppress(OSError):
            for _ in range(4):
                if len(os.read(self._fd, READ_SIZE)) < READ_SIZE:
                    break
        self._close_socket()

    # Reading ---------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        # Until the handshake is done (then `_read` is the reader itself).
        if self._phase == HANDSHAKE:
            self._handshake()
        elif self._phase == PROXY:
            self._read_proxy_header()

    def _read(self) -> None:
        tls = self._tls
        assert tls is not None and self._protocol is not None
        budget = READ_BUDGET
        while True:
            try:
                data = tls.read(READ_SIZE)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                data = b""  # close_notify, or a FIN without it (as suppress_ragged_eofs)
            except ssl.SSLWantReadError:
                return
            except ssl.SSLWantWriteError:
                # OpenSSL must write before it can read on (an answer to a TLS 1.3 KeyUpdate)
                # and the socket is full: read again once it is writable, not on every wake-up.
                self._read_wants_write = True
                self._stop_reading()
                self._want_writable(True)
                return
            except (ssl.SSLError, OSError) as exc:
                self._fatal(exc)
                return
            if not data:
                self._eof()
                return
            try:
                self._protocol.data_received(data)
            except Exception as exc:
                self._protocol_failed("data_received", exc)
                return
            budget -= len(data)
            if not self._reading or self._closing or self._phase != OPEN:
                return  # paused or closed by the protocol
            # One record per recv: a full one suggests more are waiting (an upload).
            if (len(data) < RECORD or budget <= 0) and not tls.pending():
                return  # (decrypted bytes left inside OpenSSL would never wake the loop)

    def _eof(self) -> None:
        # close_notify or a plain FIN (suppress_ragged_eofs): the client sends nothing more.
        self._at_eof = True
        self._stop_reading()
        assert self._protocol is not None
        try:
            keep_open = self._protocol.eof_received()
        except Exception as exc:
            self._protocol_failed("eof_received", exc)
            return
        if not keep_open:
            self.close()

    def _protocol_failed(self, callback: str, exc: Exception) -> None:
        # As asyncio's transports do: a bug in the protocol ends this connection, reported,
        # rather than leaving it open with nobody reading it.
        self.loop.call_exception_handler(
            {"message": f"{callback} failed", "exception": exc, "transport": self}
        )
        self._close_socket(exc)

    def pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            if self._phase == OPEN:
                self._stop_reading()

    def resume_reading(self) -> None:
        if self._reading:
            return
        self._reading = True
        if self._phase != OPEN or self._closing or self._at_eof:
            return
        self.loop.add_reader(self._fd, self._read)
        if self._tls is not None and self._tls.pending():
            self.loop.call_soon(self._read_if_reading)

    def _read_if_reading(self) -> None:
        # Scheduled by resume_reading: the protocol may have paused or closed since.
        if self.is_reading():
            self._read()

    def is_reading(self) -> bool:
        return self._reading and self._phase == OPEN and not self._closing and not self._at_eof

    def _stop_reading(self) -> None:
        self.loop.remove_reader(self._fd)

    # Writing ---------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._phase != OPEN or self._closing or not data:
            return
        if self._pending:
            self._pending.append(bytes(data))
            self._pending_size += len(data)
            self._maybe_pause_protocol()
            return
        try:
            self._tls.write(data)
        except ssl.SSLWantWriteError:
            self._pending.append(bytes(data))
            self._pending_size += len(data)
            self._want_writable(True)
            self._maybe_pause_protocol()
        except (ssl.SSLError, OSError) as exc:
            # (SSLWantReadError included: a write that must first read is a renegotiation,
            # which is refused; waiting for it could only spin.)
            self._fatal(exc)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def _on_writable(self) -> None:
        if self._phase == HANDSHAKE:
            self._handshake()
            return
        if self._phase != OPEN:
            return
        if self._read_wants_write:
            self._read_wants_write = False
            if self.is_reading():
                self.loop.add_reader(self._fd, self._read)
                self._read()
            if self._phase != OPEN:
                return
        tls = self._tls
        pending = self._pending
        while pending:
            try:
                tls.write(pending[0])
            except ssl.SSLWantWriteError:
                return
            except (ssl.SSLError, OSError) as exc:
                self._fatal(exc)
                return
            self._pending_size -= len(pending.popleft())
            if len(pending) > 1:  # the rest in one go: OpenSSL has not seen any of it
                rest = b"".join(pending)
                pending.clear()
                pending.append(rest)
        self._want_writable(self._read_wants_write)
        if self._paused_protocol and self._protocol is not None:
            self._paused_protocol = False
            self._protocol.resume_writing()
        if self._closing and not self._pending:  # (resume_writing may have written more)
            self._shutdown()

    def _want_writable(self, wanted: bool) -> None:
        if wanted and not self._writer:
            self._writer = True
            self.loop.add_writer(self._fd, self._on_writable)
        elif not wanted and self._writer:
            self._writer = False
            self.loop.remove_writer(self._fd)

    def _maybe_pause_protocol(self) -> None:
        if self._pending_size > self._high and not self._paused_protocol:
            self._paused_protocol = True
            if self._protocol is not None:
                self._protocol.pause_writing()

    def can_write_eof(self) -> bool:
        return False  # TLS has no half-close

    def write_eof(self) -> None:
        raise NotImplementedError("TLS connections cannot half-close")

    def get_write_buffer_size(self) -> int:
        return self._pending_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = HIGH_WATER if high is None else high
        self._low = self._high // 4 if low is None else low

    # Closing -----------------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing or self._phase == CLOSED

    def close(self) -> None:
        if self._closing or self._phase == CLOSED:
            return
        self._closing = True
        self._stop_reading()
        if not self._pending:
            self._shutdown()

    def abort(self) -> None:
        if self._phase == CLOSED:
            return
        self._closing = True
        self._close_socket(None)

    def _shutdown(self) -> None:
        # close_notify, once and best effort: waiting for the client's own would hold the
        # socket for nothing (HTTP framing already says where the response ends).
        sock = self._sock
        if sock is not None and self._phase == OPEN:
            with contextlib.suppress(ssl.SSLError, OSError, ValueError):
                sock.unwrap()
        self._close_socket(None)

    def _fatal(self, exc: Exception) -> None:
        log.debug(
            "TLS connection from %s on %s failed: %s", self.peer[0], self.server.listener, exc
        )
        self._close_socket(exc)

    def _close_socket(self, exc: Exception | None = None) -> None:
        if self._phase == CLOSED:
            return
        was_open = self._phase == OPEN
        self._phase = CLOSED
        self._closing = True
        self.deadline = 0.0
        self.server.proxy.ticker.watched.discard(self)
        self.server.starting.discard(self)
        self.loop.remove_reader(self._fd)  # before close: the fd number is reused at once
        self._want_writable(False)
        self._pending.clear()
        self._pending_size = 0
        sock = self._sock if self._sock is not None else self._raw
        if sock is not None:
            sock.close()
        if was_open and self._protocol is not None:
            self.loop.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: Exception | None) -> None:
        protocol = self._protocol
        self._protocol = None  # no cycle with the protocol once it is told
        if protocol is not None:
            protocol.connection_lost(exc)

    # The rest of asyncio.Transport ---------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        sock = self._sock
        if name == "peername":
            return self.peer
        if name == "proxy_header":
            return self.proxy_header
        if sock is None:
            return default
        if name == "ssl_object":
            return sock
        if name == "sslcontext":
            return sock.context
        if name == "socket":
            return sock
        try:
            if name == "sockname":
                return sock.getsockname()
            if name == "peercert":
                return sock.getpeercert()
            if name == "cipher":
                return sock.cipher()
            if name == "compression":
                return sock.compression()
        except (OSError, ValueError):  # asked after the socket closed
            pass
        return default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol  # type: ignore[return-value]

    def __repr__(self) -> str:
        phase = ("proxy", "handshake", "open", "closed")[self._phase]
        return f"<TlsTransport {self.peer[0]} on {self.server.listener} {phase}>"
