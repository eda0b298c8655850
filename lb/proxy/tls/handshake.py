"""A TLS listener's connection before its protocol exists: the PROXY header, then the handshake.

`TlsHandshake` is the middle class of `lb.proxy.tls.listener.TlsTransport` (the OPEN phase is
`lb.proxy.tls.transport.TlsStream`). Its phases:

    PROXY      only with `accept_proxy`: the header is read in clear, never a byte past its
               end (those belong to the handshake: the bytes are peeked first, and only a
               header's own bytes are consumed). A bad header closes the connection, logged
               and counted as `proxy_header`, before any TLS.
    HANDSHAKE  `do_handshake()` each time the socket is readable (or writable, when OpenSSL
               wants to write); the listener's SNI callback picks the certificate.

Invariants: PROXY and HANDSHAKE together must finish within the listener's `handshake_timeout`
(a deadline swept by the worker's `Ticker`); a client that fails or stalls there is dropped with
a log line and counted (`tls_handshake`, `tls_handshake_timeout`; a client that closes
mid-handshake, `tls_handshake_aborted`, logs at debug level only), without disturbing anyone
else. Until OPEN the connection is in its listener's `starting` set (its `max_connections`
counts handshakes in progress) and no protocol exists.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl

from lb.core.proxy_protocol import ProxyProtocolError
from lb.core.proxy_protocol import parse as parse_proxy
from lb.proxy.tls.transport import HANDSHAKE, OPEN, PROXY, READ_SIZE, TlsStream

log = logging.getLogger("lb.tls")

PEEK = 4096  # bytes of a PROXY header looked at in one go (v1 is at most 107)


class TlsHandshake(TlsStream):
    """The PROXY header and the handshake (attributes set by `TlsTransport.__init__`)."""

    __slots__ = ("_proxy_buf",)

    _proxy_buf: bytes  # a PROXY header's bytes so far, consumed from the socket

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

    def _on_readable(self) -> None:
        # Until the handshake is done (then `_read` is the reader itself).
        if self._phase == HANDSHAKE:
            self._handshake()
        elif self._phase == PROXY:
            self._read_proxy_header()
