"""The fast path: llhttp (through httptools) parses; this adapter only translates events.

llhttp in its default (strict) mode already refuses what request smuggling relies on:
Content-Length with Transfer-Encoding, repeated or non-numeric Content-Length, codings other
than a final chunked, bad chunk sizes, obs-fold, bare CR or LF, NUL and other control bytes,
whitespace before the colon. `check_request_framing` adds what it allows (a missing or repeated
Host, Transfer-Encoding in HTTP/1.0).
"""

from __future__ import annotations

from typing import Final

import httptools

from lb.core.errors import HTTPError, Reason
from lb.core.forwarding import scan_response_fields
from lb.core.framing import check_request_framing
from lb.core.http import RequestHead, ResponseHead
from lb.protocols.base import RequestDelegate, ResponseDelegate

_VERSIONS: Final = {b"1.1": "1.1", b"1.0": "1.0"}
_REQUEST_VERSIONS: Final = {b" HTTP/1.1\r": "1.1", b" HTTP/1.0\r": "1.0"}
_HEAD_GUESS: Final = 1024  # bytes: a response head is usually shorter


class _StopParsing(Exception):
    """Raised from a callback to end a HEAD response at its head (llhttp cannot be told)."""


class HttptoolsRequestParser:
    """One Python callback per header field is unavoidable here (llhttp reports where a
    request body ends only by events, so the head's bytes cannot be found after one), but
    the callback only appends: the head's size is summed only when it may be too large (a
    head begun in this read is no larger than the read: `_read`, `_begun`).

    The version, and a GET, are read off the request line where that line begins the read
    (`_first`), as it usually does: llhttp's get_http_version formats a string each time,
    and get_method is a call and a decode."""

    __deletable__ = (
        "_feed_data",
        "_parser",
        "delegate",
    )  # release(); mypyc refuses `del` otherwise

    __slots__ = (
        "_begun",
        "_feed_data",
        "_first",
        "_head_size",
        "_headers",
        "_max_header_size",
        "_parser",
        "_quiet",
        "_read",
        "_tunnel",
        "_url",
        "delegate",
        "in_head",
    )

    def __init__(self, delegate: RequestDelegate, max_header_size: int) -> None:
        self.delegate = delegate
        self._max_header_size = max_header_size
        self._parser = httptools.HttpRequestParser(self)
        # Bound once: a method called by name on llhttp's parser is looked up on its type
        # each time (~400 instructions once compiled, as much as the rest of the call).
        self._feed_data = self._parser.feed_data
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._read = b""  # the read being parsed
        self._begun = False  # the message under way began in this read
        self._first = False  # ... and at its first byte
        self._quiet = False  # no message has begun or ended in this read yet
        self._tunnel = False
        self.in_head = False

    def release(self) -> None:
        """Drop the references that tie this adapter, llhttp's callbacks and the delegate in
        a cycle, so a closed connection is freed by refcounting at once rather than by the
        cyclic GC later (~10% of a short connection's CPU). Never fed again after this."""
        del self._parser, self._feed_data, self.delegate

    def feed(self, data: bytes) -> None:
        if self._tunnel:
            self.delegate.on_upgrade_data(data)
            return
        self._read = data
        self._begun = self._first = False
        self._quiet = True
        if self.in_head or not self._headers:
            # Bound the head before llhttp buffers it: a client streaming one endless header
            # line must not grow our memory.
            self._head_size += len(data)
        try:
            self._feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._tunnel = True
            rest = data[exc.args[0] :]
            if rest:
                self.delegate.on_upgrade_data(rest)
            return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, HTTPError):
                raise cause from None
            raise
        except httptools.HttpParserInvalidMethodError:
            raise HTTPError(Reason.bad_request, "invalid method") from None
        except httptools.HttpParserError as exc:
            raise HTTPError(Reason.bad_request, f"malformed request: {exc}") from None
        self._read = b""
        if self.in_head and self._head_size > self._max_header_size:
            raise HTTPError(Reason.headers_too_large, "request head too large")

    # llhttp callbacks, in message order.

    def on_message_begin(self) -> None:
        self.in_head = True
        self._begun = True
        self._first = self._quiet
        self._quiet = False
        self._url = b""
        self._headers = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser = self._parser
        url = self._url
        read = self._read
        limit = self._max_header_size
        headers = self._headers
        # Summed only when it may be over: a head begun in this read is no longer than the
        # read, and the sum counts at most one byte per field more than the head's bytes.
        if not self._begun or len(read) + len(headers) > limit:
            size = len(url) + sum([len(name) + len(value) + 4 for name, value in headers])
            if size > limit:
                raise HTTPError(Reason.headers_too_large, "request head too large")
        self._head_size = 0
        first = self._first
        # A GET is read off the line, as the version below: no call into llhttp.
        get = first and read[:4] == b"GET "
        method = "GET" if get else parser.get_method().decode("ascii")
        if method == "CONNECT":
            raise HTTPError(Reason.bad_request, "CONNECT is not supported")
        version = _line_version(read, len(method), len(url)) if first else None
        head = RequestHead(method, url, version or parser.get_http_version(), headers)
        check_request_framing(head)
        self.delegate.on_request_head(head)

    def on_body(self, body: bytes) -> None:
        self.delegate.on_request_body(body)

    def on_message_complete(self) -> None:
        self._headers = []
        self._quiet = False
        self.delegate.on_request_end()


def _line_version(read: bytes, method: int, url: int) -> str | None:
    """The version of a request line at the start of `read`, given its method's and target's
    lengths, or None where it is not laid out as "METHOD SP target SP HTTP/1.x CR" from the
    first byte. llhttp accepted the line, so a match at these places is its version: empty
    lines before it (which llhttp skips) would put a method byte or CR/LF where the first
    space is looked for, and more spaces would move the version off the place looked at."""
    at = method + 1 + url
    if len(read) < at + 10 or read[method] != 32:
        return None
    version = read[at : at + 10]
    # Compared before the lookup: a new bytes object's hash is a whole SipHash run.
    return "1.1" if version == b" HTTP/1.1\r" else _REQUEST_VERSIONS.get(version)


class HttptoolsResponseParser:
    """No callback per header field: the head's bytes are kept as they arrive (`_buf`) and,
    once llhttp has validated the whole head, handed on in one piece (`ResponseHead.raw`).
    That spares a Python call per field, and the fields go on to the client without being
    rebuilt (lb.core.forwarding.scan_response_fields).

    `_buf` holds the bytes from a message boundary on (the head begins at `_start`, after any
    empty lines llhttp skips), or is None while a body is read: llhttp does not say where a
    body ends within a read, so a read that ends a body leaves the next message's start
    unknown until the next read. A server sends nothing after its response (lb does not
    pipeline to servers), so a head found there is refused."""

    __deletable__ = (  # release(); mypyc refuses `del` otherwise
        "_feed_data",
        "_keep_alive",
        "_parser",
        "_status_code",
        "delegate",
    )

    __slots__ = (
        "_buf",
        "_feed_data",
        "_head",
        "_keep_alive",
        "_max_header_size",
        "_method",
        "_parser",
        "_start",
        "_status_code",
        "_tunnel",
        "delegate",
    )

    def __init__(self, delegate: ResponseDelegate, max_header_size: int) -> None:
        self.delegate = delegate
        self._max_header_size = max_header_size
        self._new_parser()
        self._method = "GET"
        self._head: ResponseHead | None = None
        self._tunnel = False
        self._buf: bytes | None = b""
        self._start = 0

    def release(self) -> None:
        """Drop the references that tie this adapter, llhttp's callbacks and the delegate in
        a cycle, so a closed connection is freed by refcounting at once rather than by the
        cyclic GC later (~10% of a short connection's CPU). Never fed again after this."""
        del self._parser, self._feed_data, self._status_code, self._keep_alive, self.delegate

    def _new_parser(self) -> None:
        parser = self._parser = httptools.HttpResponseParser(self)
        # Bound once per parser: see HttptoolsRequestParser.__init__.
        self._feed_data = parser.feed_data
        self._status_code = parser.get_status_code
        self._keep_alive = parser.should_keep_alive

    def expect(self, method: str, upgrade: bool = False) -> None:
        self._method = method

    def feed(self, data: bytes) -> None:
        if self._tunnel:
            self.delegate.on_upgrade_data(data)
            return
        buf = self._buf
        if buf is not None:
            self._buf = buf + data if buf else data
        try:
            self._feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._tunnel = True
            rest = data[exc.args[0] :]
            if rest:
                self.delegate.on_upgrade_data(rest)
            return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _StopParsing):
                # A HEAD response ended at its head; anything after it would be a protocol
                # violation by the server, and a fresh parser starts the next exchange.
                self._new_parser()
                self._buf, self._start = b"", 0
                return
            if isinstance(cause, HTTPError):
                raise cause from None
            raise
        except httptools.HttpParserError as exc:
            raise HTTPError(Reason.backend_failed, f"malformed response: {exc}") from None
        buf = self._buf
        if buf is None:
            if self._head is None:  # a body ended in this read: the next read starts afresh
                self._buf = b""
        elif buf:
            # What a head without a body (1xx, 204, 304, Content-Length: 0) left over, or a
            # head still incomplete, bounded before it grows further.
            self._buf, self._start = buf[self._start :], 0
            if len(self._buf) > self._max_header_size:
                raise HTTPError(Reason.backend_failed, "response head too large")

    def feed_eof(self) -> bool:
        head = self._head
        if head is not None and head.content_length is None and not head.chunked:
            self._head = None
            self.delegate.on_response_end()
            return True
        return False

    def on_headers_complete(self) -> None:
        buf = self._buf
        start = self._start
        if buf is None or buf[start : start + 5] != b"HTTP/":
            buf, start = self._head_start()
        # The head is searched as text (str's find is a direct call once compiled, bytes' a
        # method lookup and argument parsing): most heads are within the first bytes read.
        text = buf[start : start + _HEAD_GUESS].decode("latin-1")
        end = text.find("\r\n\r\n")
        if end < 0:  # a long head: searched up to the limit
            text = buf[start : start + self._max_header_size + 4].decode("latin-1")
            end = text.find("\r\n\r\n")
        if end < 0 or end > self._max_header_size:
            raise HTTPError(Reason.backend_failed, "response head too large")
        line_end = text.find("\r\n")
        raw = buf[start + line_end : start + end]
        fields = text[line_end:end]
        forward, content_length, chunked = scan_response_fields(raw, fields)
        status = self._status_code()
        # llhttp checked "HTTP/d.d ddd[ reason]": the version and reason are at fixed places
        # (the version read here spares get_http_version's string formatting).
        spelled = buf[start + 5 : start + 8]  # (compared first: see _line_version)
        version = (
            "1.1"
            if spelled == b"1.1"
            else _VERSIONS.get(spelled) or self._parser.get_http_version()
        )
        # (No slice that would be empty: mypyc's bytes slice fails on stop < start.)
        reason = buf[start + 13 : start + line_end] if line_end > 13 else b"-"
        head = ResponseHead(
            status,
            reason or b"-",
            version,
            None,
            self._keep_alive(),
            content_length,
            chunked,
            raw,
            forward,
            # (A field's value holds no CRLF: llhttp's strict mode refuses obs-fold.)
            "\r\nDate:" in fields or "\r\ndate:" in fields,
        )
        method = self._method
        final = status >= 200
        no_body = not final or status == 204 or status == 304 or method == "HEAD"
        if no_body or content_length == 0:
            # The next message (a final one after a 1xx) starts here.
            self._start = start + end + 4
        else:
            self._buf = None
        if final and status != 101:
            self._head = head
        self.delegate.on_response_head(head)
        if final and no_body:
            self._head = None
            self.delegate.on_response_end()
            if method == "HEAD":
                raise _StopParsing

    def _head_start(self) -> tuple[bytes, int]:
        """Where the head llhttp just parsed begins, past the empty lines it skips; refused
        when it came after a body in the same read (see the class docstring)."""
        buf = self._buf
        if buf is not None:
            start = len(buf) - len(buf[self._start :].lstrip(b"\r\n"))
            if buf.startswith(b"HTTP/", start):
                return buf, start
        raise HTTPError(Reason.backend_failed, "response bytes after a complete response")

    def on_body(self, body: bytes) -> None:
        self.delegate.on_response_body(body)

    def on_message_complete(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self.delegate.on_response_end()
