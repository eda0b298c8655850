"""The fast path: llhttp (through httptools) parses; this adapter only translates events.

llhttp in its default (strict) mode already refuses what request smuggling relies on:
Content-Length with Transfer-Encoding, repeated or non-numeric Content-Length, codings other
than a final chunked, bad chunk sizes, obs-fold, bare CR or LF, NUL and other control bytes,
whitespace before the colon. `check_request_framing` adds what it allows (a missing or repeated
Host, Transfer-Encoding in HTTP/1.0).
"""

from __future__ import annotations

import httptools

from lb.core.errors import HTTPError, Reason
from lb.core.http import RequestHead, ResponseHead, check_request_framing
from lb.protocols.base import RequestDelegate, ResponseDelegate


class _StopParsing(Exception):
    """Raised from a callback to end a HEAD response at its head (llhttp cannot be told)."""


class HttptoolsRequestParser:
    __slots__ = (
        "_fields_size",
        "_head_size",
        "_headers",
        "_max_header_size",
        "_parser",
        "_tunnel",
        "_url",
        "delegate",
        "in_head",
    )

    def __init__(self, delegate: RequestDelegate, max_header_size: int) -> None:
        self.delegate = delegate
        self._max_header_size = max_header_size
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._fields_size = 0
        self._tunnel = False
        self.in_head = False

    def release(self) -> None:
        """Drop the references that tie this adapter, llhttp's callbacks and the delegate in
        a cycle, so a closed connection is freed by refcounting at once rather than by the
        cyclic GC later (~10% of a short connection's CPU). Never fed again after this."""
        del self._parser, self.delegate

    def feed(self, data: bytes) -> None:
        if self._tunnel:
            self.delegate.on_upgrade_data(data)
            return
        if self.in_head or not self._headers:
            # Bound the head before llhttp buffers it: a client streaming one endless header
            # line must not grow our memory.
            self._head_size += len(data)
        try:
            self._parser.feed_data(data)
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
        if self.in_head and self._head_size > self._max_header_size:
            raise HTTPError(Reason.headers_too_large, "request head too large")

    # llhttp callbacks, in message order.

    def on_message_begin(self) -> None:
        self.in_head = True
        self._url = b""
        self._headers = []
        self._fields_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._fields_size += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser = self._parser
        size = len(self._url) + self._fields_size
        self._head_size = 0
        if size > self._max_header_size:
            raise HTTPError(Reason.headers_too_large, "request head too large")
        method = parser.get_method().decode("ascii")
        if method == "CONNECT":
            raise HTTPError(Reason.bad_request, "CONNECT is not supported")
        head = RequestHead(method, self._url, parser.get_http_version(), self._headers)
        check_request_framing(head)
        self.delegate.on_request_head(head)

    def on_body(self, body: bytes) -> None:
        self.delegate.on_request_body(body)

    def on_message_complete(self) -> None:
        self._headers = []
        self.delegate.on_request_end()


class HttptoolsResponseParser:
    __slots__ = (
        "_chunked",
        "_content_length",
        "_fields_size",
        "_head",
        "_headers",
        "_max_header_size",
        "_method",
        "_parser",
        "_reason",
        "_tunnel",
        "delegate",
    )

    def __init__(self, delegate: ResponseDelegate, max_header_size: int) -> None:
        self.delegate = delegate
        self._max_header_size = max_header_size
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[bytes, bytes]] = []
        self._method = "GET"
        self._head: ResponseHead | None = None
        self._tunnel = False
        self._reason = b""
        self._fields_size = 0
        self._content_length: int | None = None
        self._chunked = False

    def release(self) -> None:
        """Drop the references that tie this adapter, llhttp's callbacks and the delegate in
        a cycle, so a closed connection is freed by refcounting at once rather than by the
        cyclic GC later (~10% of a short connection's CPU). Never fed again after this."""
        del self._parser, self.delegate

    def expect(self, method: str, upgrade: bool = False) -> None:
        self._method = method

    def feed(self, data: bytes) -> None:
        if self._tunnel:
            self.delegate.on_upgrade_data(data)
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._tunnel = True
            rest = data[exc.args[0] :]
            if rest:
                self.delegate.on_upgrade_data(rest)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _StopParsing):
                # A HEAD response ended at its head; anything after it would be a protocol
                # violation by the server, and a fresh parser starts the next exchange.
                self._parser = httptools.HttpResponseParser(self)
                return
            if isinstance(cause, HTTPError):
                raise cause from None
            raise
        except httptools.HttpParserError as exc:
            raise HTTPError(Reason.backend_failed, f"malformed response: {exc}") from None

    def feed_eof(self) -> bool:
        head = self._head
        if head is not None and head.content_length is None and not head.chunked:
            self._head = None
            self.delegate.on_response_end()
            return True
        return False

    def on_message_begin(self) -> None:
        self._headers = []
        self._reason = b""
        self._fields_size = 0
        self._content_length = None
        self._chunked = False

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._fields_size += len(name) + len(value)
        # Framing fields found as they arrive; the length test spares a lower() per field.
        if len(name) == 14 and name.lower() == b"content-length":
            self._content_length = int(value)
        elif len(name) == 17 and name.lower() == b"transfer-encoding":
            self._chunked = value.strip().lower().endswith(b"chunked")

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        headers = self._headers
        if self._fields_size > self._max_header_size:
            raise HTTPError(Reason.backend_failed, "response head too large")
        content_length = self._content_length
        chunked = self._chunked
        head = ResponseHead(
            status,
            self._reason or b"-",
            parser.get_http_version(),
            headers,
            parser.should_keep_alive(),
            content_length,
            chunked,
        )
        if status >= 200 and status != 101:
            self._head = head
        self.delegate.on_response_head(head)
        if status >= 200 and (self._method == "HEAD" or status in (204, 304)):
            self._head = None
            self.delegate.on_response_end()
            if self._method == "HEAD":
                raise _StopParsing

    def on_body(self, body: bytes) -> None:
        self.delegate.on_response_body(body)

    def on_message_complete(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self.delegate.on_response_end()
