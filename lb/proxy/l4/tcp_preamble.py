"""The PREAMBLE phase of a `mode: tcp` connection: the PROXY header, then the TLS ClientHello.

Only when the listener accepts PROXY (`accept_proxy`) or routes by SNI (`routes` of
`{match: {sni}, pool}`): client bytes are kept, bounded by PREAMBLE_MAX (the two parsers'
limits), until the PROXY header is read and the ClientHello is seen. Invariants:

- a bad PROXY header, or none within the listener's `timeouts.client_header`, ends the
  connection here: nothing has reached any server;
- the header's source and destination replace the socket's addresses (for the balancer's
  `client_ip`, the logs and the pool's `send_proxy`); its bytes are not forwarded;
- the ClientHello bytes are kept and forwarded as they are (`pending`): lb reads the server name,
  it does not terminate TLS;
- no server name (not TLS, a ClientHello that does not parse, too many bytes, the client's FIN
  or the deadline first) picks the listener's default pool.
"""

from __future__ import annotations

import logging

from lb.core.proxy_protocol import ProxyProtocolError
from lb.core.proxy_protocol import parse as parse_proxy
from lb.core.sni import MAX_HELLO, ClientHelloError, parse_client_hello
from lb.proxy.l4.tcp_connect import TcpConnect

log = logging.getLogger("lb.l4")

# Bytes the preamble (PROXY header plus ClientHello records) may take before lb gives up on it.
PREAMBLE_MAX = 2 * MAX_HELLO


class TcpPreamble(TcpConnect):
    """Reading the preamble, then routing by it (attributes set by `TcpConnection.__init__`)."""

    __slots__ = ("preamble", "proxy_wanted")

    preamble: bytearray | None  # the bytes so far, while in this phase
    proxy_wanted: bool  # a PROXY header is still to come

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
