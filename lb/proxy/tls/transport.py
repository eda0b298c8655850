"""A TLS listener's connection once open, as an asyncio transport: OpenSSL reads and writes the
client's socket itself (an `ssl.SSLSocket`), and the protocol (a `ClientConnection`) sees
decrypted bytes.

`TlsStream` is the base of `lb.proxy.tls.listener.TlsTransport` (the phases before OPEN, the
PROXY header and the handshake, are in `lb.proxy.tls.handshake`). It owns the state every phase
uses, the OPEN phase's reading and writing, closing, and the rest of `asyncio.Transport`.

Writes: `SSLSocket.send` encrypts and writes the whole buffer, or raises SSLWantWriteError
when the socket is full; OpenSSL then must be given the same bytes again, so the buffer stays
first in `_pending` until the socket is writable. The protocol is paused above the high-water
mark. Reads: one TLS record per `recv`; a full record (16 KiB) suggests more are waiting, so
reading goes on up to READ_BUDGET bytes per wake-up. Closing sends close_notify (best effort,
without waiting for the client's) once the pending bytes are written.

`_read` and `write` are the hot path of every proxied request over TLS: they call OpenSSL's own
object (`_tls`) directly, with no phase to dispatch on once open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from lb.core.proxy_protocol import ProxyHeader

if TYPE_CHECKING:
    from lb.proxy.host import Host
    from lb.proxy.tls.contexts import ListenerTls

log = logging.getLogger("lb.tls")

RECORD = 16 * 1024  # the largest TLS record's plaintext (RFC 8446 §5.1)
READ_SIZE = RECORD  # a recv returns one record at most
READ_BUDGET = 256 * 1024  # bytes read per wake-up before giving others their turn
HIGH_WATER = 64 * 1024

PROXY, HANDSHAKE, OPEN, CLOSED = range(4)


class TlsListening(Protocol):
    """What a connection needs of the listener that accepted it (`TlsServer`), as a protocol,
    so that this module does not import the listener that imports it."""

    loop: asyncio.AbstractEventLoop
    listener: str
    proxy: Host
    tls: ListenerTls
    accept_proxy: bool
    factory: Callable[[], asyncio.Protocol]
    starting: set[Any]  # accepted, protocol not yet created


class TlsStream(asyncio.Transport):
    """A TLS client connection as an asyncio transport (attributes set by
    `TlsTransport.__init__`, in one place)."""

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

    server: TlsListening
    loop: asyncio.AbstractEventLoop
    peer: Any
    proxy_header: ProxyHeader | None
    _raw: socket.socket | None  # until wrapped, after any PROXY header
    _sock: ssl.SSLSocket | None
    _tls: Any  # once open: what reads and writes records (see TlsHandshake._handshake)
    _fd: int
    _protocol: asyncio.Protocol | None
    _pending: deque[bytes]  # pending[0]: what OpenSSL must be given again
    _pending_size: int
    _high: int
    _low: int
    _paused_protocol: bool
    _reading: bool  # not paused by the protocol
    _at_eof: bool  # the client sent close_notify or FIN
    _read_wants_write: bool  # a read waits for the socket to be writable
    _writer: bool  # add_writer is in effect
    _closing: bool
    _phase: int
    deadline: float

    def _handshake(self) -> None:
        """The HANDSHAKE phase's step, on a writable socket too: `TlsHandshake`'s."""
        raise NotImplementedError

    # Reading ---------------------------------------------------------------------------------

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
