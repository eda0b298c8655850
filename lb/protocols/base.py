"""What a parser adapter promises the proxy shell: bytes in, our events out.

An adapter never writes to a socket and never decides anything about routing or forwarding.
It calls its delegate, in order, for each message: one head, body pieces (already de-chunked),
one end. On a framing problem it raises `HTTPError` from `feed`, before the offending
message's head has been delivered whenever the problem is in the head, so nothing of a bad
request reaches a server. After an Upgrade (or a 101 response) every further byte is passed to
`on_upgrade_data` untouched.
"""

from __future__ import annotations

from typing import Protocol

from lb.core.http import RequestHead, ResponseHead


class RequestDelegate(Protocol):
    def on_request_head(self, head: RequestHead) -> None: ...
    def on_request_body(self, data: bytes) -> None: ...
    def on_request_end(self) -> None: ...
    def on_upgrade_data(self, data: bytes) -> None: ...


class ResponseDelegate(Protocol):
    def on_response_head(self, head: ResponseHead) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_end(self) -> None: ...
    def on_upgrade_data(self, data: bytes) -> None: ...


class RequestParser(Protocol):
    def feed(self, data: bytes) -> None:
        """Parse what arrived; raises HTTPError (400 or 431)."""
        ...

    @property
    def in_head(self) -> bool:
        """True while bytes of a request head have arrived but the head is not complete:
        the client-header timeout applies then."""
        ...

    def release(self) -> None:
        """The connection is gone: drop references that would keep it in a cycle."""
        ...


class ResponseParser(Protocol):
    delegate: ResponseDelegate  # may be re-pointed between messages

    def expect(self, method: str, upgrade: bool = False) -> None:
        """Before each request is sent: the response to a HEAD request has no body, and
        only a request that asked for an Upgrade may be answered 101."""
        ...

    def feed(self, data: bytes) -> None:
        """Parse what arrived; raises HTTPError(backend_failed) on a malformed response."""
        ...

    def feed_eof(self) -> bool:
        """The server closed: True if that ended a close-delimited body (RFC 9112 §6.3 (8))."""
        ...

    def release(self) -> None:
        """The connection is gone: drop references that would keep it in a cycle."""
        ...
