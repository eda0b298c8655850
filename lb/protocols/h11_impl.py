"""The fallback path: h11 parses, for machines without httptools (or `LB_PARSER=h11`).

h11 is more lenient than llhttp (it unfolds obs-fold, accepts bare LF, and lets
Transfer-Encoding override Content-Length), so the request adapter frames each head itself
first and runs `check_raw_head` and `check_request_framing` on it before h11 sees it. One
h11 connection is used per message: h11 would otherwise want to see lb's responses too.
"""

from __future__ import annotations

import h11

from lb.core.errors import HTTPError, Reason
from lb.core.framing import check_raw_head, check_request_framing, check_transfer_coding
from lb.core.http import RequestHead, ResponseHead
from lb.protocols.base import RequestDelegate, ResponseDelegate


class H11RequestParser:
    def __init__(self, delegate: RequestDelegate, max_header_size: int) -> None:
        self.delegate = delegate
        self._max_header_size = max_header_size
        self._pending = b""  # bytes of a head not yet complete
        self._conn: h11.Connection | None = None  # h11 for the message whose body is arriving
        self._tunnel = False
        self.in_head = False

    def release(self) -> None:
        """Drop the delegate (a cycle with it otherwise); never fed again after this."""
        del self.delegate

    def feed(self, data: bytes) -> None:
        if self._tunnel:
            self.delegate.on_upgrade_data(data)
            return
        while data:
            if self._conn is None:
                data = self._start_message(data)
                if self._conn is None:
                    return
            else:
                self._conn.receive_data(data)
                data = b""
            data = self._drain()

    def _start_message(self, data: bytes) -> bytes:
        buf = self._pending + data
        if not buf.strip(b"\r\n"):
            # RFC 9112 §2.2: a server SHOULD ignore at least one empty line before a request.
            self._pending = b""
            return b""
        end = buf.find(b"\r\n\r\n")
        if end == -1:
            if b"\n\n" in buf or b"\n\r\n" in buf:
                raise HTTPError(Reason.bad_request, "bare CR or LF in request head")
            if len(buf) > self._max_header_size:
                raise HTTPError(Reason.headers_too_large, "request head too large")
            self._pending = buf
            self.in_head = True
            return b""
        if end + 4 > self._max_header_size:
            raise HTTPError(Reason.headers_too_large, "request head too large")
        check_raw_head(buf[: end + 4])
        _check_raw_content_length(buf[:end])
        _check_raw_transfer_coding(buf[:end])
        self._pending = b""
        self.in_head = False
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_header_size)
        self._conn.receive_data(buf)
        return b""

    def _drain(self) -> bytes:
        """Deliver h11's events; returns bytes that belong to the next message."""
        conn = self._conn
        assert conn is not None
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise HTTPError(Reason.bad_request, f"malformed request: {exc}") from None
            if _chunk_too_large(conn):
                raise HTTPError(Reason.bad_request, "chunk size too large")
            if event is h11.NEED_DATA:
                return b""
            if isinstance(event, h11.Request):
                self._on_request(event)
            elif isinstance(event, h11.Data):
                self.delegate.on_request_body(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                # The message is over. Its h11 connection is dropped here rather than at
                # PAUSED: after an HTTP/1.0 request h11 expects only EOF and would refuse the
                # next request of a keep-alive 1.0 client.
                if isinstance(event, h11.EndOfMessage):
                    self.delegate.on_request_end()
                rest, _closed = conn.trailing_data
                self._conn = None
                if conn.their_state is h11.MIGHT_SWITCH_PROTOCOL:
                    self._tunnel = True
                    if rest:
                        self.delegate.on_upgrade_data(bytes(rest))
                    return b""
                return bytes(rest)
            else:  # ConnectionClosed
                return b""

    def _on_request(self, event: h11.Request) -> None:
        method = event.method.decode("ascii")
        if method == "CONNECT":
            raise HTTPError(Reason.bad_request, "CONNECT is not supported")
        headers = [(bytes(n), bytes(v)) for n, v in event.headers.raw_items()]
        head = RequestHead(method, bytes(event.target), event.http_version.decode(), headers)
        check_request_framing(head)
        self.delegate.on_request_head(head)


def _check_raw_content_length(head: bytes) -> None:
    """h11 folds repeated and comma-listed equal values ("3, 3") into one before lb sees the
    headers; RFC 9112 §6.3 lets lb refuse both, and a server behind it may read them
    differently, so they are checked on the raw lines."""
    seen = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            if seen:
                raise HTTPError(Reason.bad_request, "duplicate Content-Length")
            if not value.strip(b" \t").isdigit():
                raise HTTPError(Reason.bad_request, "invalid Content-Length")
            seen = True


def _check_raw_transfer_coding(head: bytes) -> None:
    """h11 refuses any Transfer-Encoding but chunked as a malformed request (400); RFC 9112
    §6.1 asks 501 for a coding lb does not know, as the httptools path answers. Only the case
    `check_request_framing` would reach (one field, no Content-Length, HTTP/1.1) is judged
    here; the others stay 400 as they are (h11, then check_request_framing)."""
    lines = head.split(b"\r\n")
    if not lines[0].endswith(b" HTTP/1.1"):
        return
    codings: list[bytes] = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        lname = name.lower()
        if lname == b"content-length":
            return
        if lname == b"transfer-encoding":
            codings.append(value)
    if len(codings) == 1:
        check_transfer_coding(codings[0])


# llhttp refuses a chunk size past 64 bits; h11 takes up to 20 hex digits. A size no real body
# has is refused as llhttp would, rather than waited on.
_MAX_CHUNK = 2**63 - 1


def _chunk_too_large(conn: h11.Connection) -> bool:
    # h11 has no public view of the chunk being read; its reader keeps the declared size.
    return getattr(getattr(conn, "_reader", None), "_bytes_in_chunk", 0) > _MAX_CHUNK


class H11ResponseParser:
    def __init__(self, delegate: ResponseDelegate, max_header_size: int) -> None:
        self.delegate = delegate
        self._max_header_size = max_header_size
        self._conn: h11.Connection | None = None
        self._method = "GET"
        self._close_delimited = False
        self._tunnel = False

    def release(self) -> None:
        """Drop the delegate (a cycle with it otherwise); never fed again after this."""
        del self.delegate

    def expect(self, method: str, upgrade: bool = False) -> None:
        # h11 learns the method, and so whether a body can follow, from the request itself;
        # likewise it accepts a 101 only after a request that proposed an Upgrade.
        self._method = method
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=self._max_header_size)
        headers = [("host", "lb")]
        if upgrade:
            headers += [("connection", "upgrade"), ("upgrade", "lb")]
        self._conn.send(h11.Request(method=method, target="/", headers=headers))
        self._close_delimited = False

    def feed(self, data: bytes) -> None:
        if self._tunnel:
            self.delegate.on_upgrade_data(data)
            return
        if self._conn is None:
            raise HTTPError(Reason.backend_failed, "response without a request")
        self._conn.receive_data(data)
        self._drain()

    def feed_eof(self) -> bool:
        if self._conn is None or not self._close_delimited:
            return False
        self._conn.receive_data(b"")
        self._drain()
        return True

    def _drain(self) -> None:
        conn = self._conn
        assert conn is not None
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise HTTPError(Reason.backend_failed, f"malformed response: {exc}") from None
            if event is h11.NEED_DATA or event is h11.PAUSED:
                if event is h11.PAUSED and conn.their_state is h11.SWITCHED_PROTOCOL:
                    self._tunnel = True
                    rest = conn.trailing_data[0]
                    if rest:
                        self.delegate.on_upgrade_data(bytes(rest))
                return
            if isinstance(event, h11.InformationalResponse | h11.Response):
                self._on_head(event)
            elif isinstance(event, h11.Data):
                self.delegate.on_response_body(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                self._conn = None
                self.delegate.on_response_end()
                return
            else:  # ConnectionClosed
                return

    def _on_head(self, event: h11.InformationalResponse | h11.Response) -> None:
        headers = [(bytes(n), bytes(v)) for n, v in event.headers.raw_items()]
        content_length: int | None = None
        chunked = False
        for name, value in headers:
            lname = name.lower()
            if lname == b"content-length":
                content_length = int(value)
            elif lname == b"transfer-encoding":
                chunked = True
        connection = b",".join(v for n, v in headers if n.lower() == b"connection").lower()
        version = event.http_version.decode()
        keep_alive = b"close" not in connection and (
            version == "1.1" or b"keep-alive" in connection
        )
        self._close_delimited = (
            isinstance(event, h11.Response) and content_length is None and not chunked
        )
        if self._close_delimited and self._method != "HEAD" and event.status_code not in (204, 304):
            keep_alive = False
        head = ResponseHead(
            event.status_code,
            bytes(event.reason) or b"-",
            version,
            headers,
            keep_alive,
            content_length,
            chunked,
        )
        self.delegate.on_response_head(head)
