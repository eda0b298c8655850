"""What a filter sees of one request: a `Session`, not the exchange that carries it.

A session holds the facts of one request and what became of it: the head and the client, the
route and pool chosen, the server that answered, the status and bytes sent, and fields a
filter wants on the response. Filters read and set these; sockets, parsers and timers stay in
the exchange, so a filter cannot reach them. An upstream call made without a client (a cache
revalidation, an offload job) has a session too, built from a stored request.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any, Final, Protocol

from lb.core.balancer import ServerState
from lb.core.http import RequestHead

if TYPE_CHECKING:
    from lb.core.router import CompiledRoute
    from lb.proxy.http.connection import UpstreamServer
    from lb.proxy.pool.pool import PoolRuntime

# A server chooser: (pool, session, servers to skip) -> a server, or None when none can take it.
Chooser = Callable[["PoolRuntime", "Session", Collection[ServerState]], "UpstreamServer | None"]


# A Final alias: compiled code holds it in a C static, not a module-attribute lookup per call.
perf_counter: Final = time.perf_counter


class BodyTooLarge(Exception):
    """The request body is over the limit a filter reads it with."""


class BodyReader(Protocol):
    """Whoever receives the request's body (the exchange), for a filter that needs all of it."""

    def read_body(self, limit: int) -> Awaitable[bytes]: ...


class Session:
    __slots__ = (
        "bytes_out",
        "choose",
        "client_ip",
        "detail",
        "ended",
        "head",
        "listener",
        "own_request_id",
        "pool",
        "proto",
        "reader",
        "request_id",
        "response_fields",
        "route",
        "server",
        "started",
        "status",
        "subject",
        "vars",
    )

    def __init__(
        self,
        head: RequestHead | None,
        client_ip: str,
        proto: bytes,
        listener: str,
        request_id: bytes,
        subject: tuple[bytes, bytes | None] | None = None,
    ) -> None:
        self.head = head  # None: a byte stream the parser refused before any head
        self.client_ip = client_ip
        self.proto = proto  # b"http" | b"https": X-Forwarded-Proto, and cookies' Secure flag
        self.listener = listener
        self.request_id = request_id
        self.own_request_id = False  # made by lb (hex, a dash, digits), not the client's
        self.subject = subject  # (header name, verified client certificate subject) on mTLS
        self.started = perf_counter()
        self.ended = 0.0  # perf_counter() when the exchange ended: set before its log phase
        self.route: CompiledRoute | None = None
        self.pool: str | None = None  # the pool name: the route's, or a split's arm
        # How the pool's server is chosen; None: the pool's balancer (a sticky filter sets it).
        self.choose: Chooser | None = None
        self.server = ""  # the address of the server that answered (or was last tried)
        self.status = 0
        self.bytes_out = 0
        self.detail = ""  # why lb answered itself, or what failed: logged
        # Fields added to the response head (Set-Cookie, Strict-Transport-Security...).
        self.response_fields: list[tuple[bytes, bytes]] | None = None
        self.vars: dict[str, Any] | None = None  # filters' own per-request data, by filter
        # Set by the exchange for a chain with a filter that `reads_body` (see read_body).
        self.reader: BodyReader | None = None

    @property
    def secure(self) -> bool:
        return self.proto == b"https"

    def read_body(self, limit: int) -> Awaitable[bytes]:
        """The whole request body, once it has arrived; raises BodyTooLarge past `limit`
        bytes. For filters with `reads_body` set (the body stays held for the server, should
        the filter let the request go on)."""
        if self.reader is None:
            raise RuntimeError("read_body: this filter does not declare reads_body")
        return self.reader.read_body(limit)

    def add_response_field(self, name: bytes, value: bytes) -> None:
        fields = self.response_fields
        if fields is None:
            self.response_fields = [(name, value)]
        else:
            fields.append((name, value))

    def __repr__(self) -> str:
        head = self.head
        what = f"{head.method} {head.path}" if head is not None else "refused"
        return f"<Session {what} route={getattr(self.route, 'name', None)} status={self.status}>"
