"""The request body's way through an `Exchange` (lb.proxy.http.exchange), which is built on
`RequestBody`: this class holds the exchange's state, and the body from the client.

While the request filters run there is no call yet: the body is held (`held`), up to
CONNECT_BUFFER bytes before the client stops being read, or whole for a filter that reads it
(`read_body`, up to the filter's limit). Once the call exists, chunks go straight to it. Past
the route's `max_body_size` the exchange answers 413 (or, after its response began, cuts both
sides). When the server cannot take more, the client is not read (`pause_request`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from lb.core.errors import HTTPError, Reason
from lb.core.forwarding import new_request_id, valid_request_id
from lb.core.http import RequestHead
from lb.proxy.http.attempts import CONNECT_BUFFER
from lb.proxy.http.call import UpstreamCall
from lb.proxy.http.chain import Chain
from lb.proxy.http.flow import CONNECTING, PIPELINED, SERVER_FULL
from lb.proxy.http.pipeline import Answer
from lb.proxy.http.session import BodyTooLarge, Session

if TYPE_CHECKING:
    # The concrete class, not a Protocol: compiled code reads its fields and calls its
    # methods directly (a Protocol costs a generic lookup per access). Imported only for
    # types: client.py imports this module.
    from lb.proxy.http.client import ClientConnection

STATUS_CLIENT_CLOSED: Final = 499  # nginx's convention for "the client went away first"

# Final ints, not `range(7)` unpacked: compiled code then reads them as constants.
PENDING: Final = 0
FILTERING: Final = 1
UPSTREAM: Final = 2
RESPONDING: Final = 3
TUNNEL: Final = 4
COMPLETE: Final = 5
DONE: Final = 6
STATES = ("pending", "filtering", "upstream", "responding", "tunnel", "complete", "done")


class RequestBody:
    """An exchange's state, and its request body's way from the client: see the module."""

    """One request and its response, from head to logged."""

    __slots__ = (
        "body_bytes",
        "body_wanted",
        "call",
        "chain",
        "client_close",
        "conn",
        "held",
        "held_bytes",
        "out_chunked",
        "refusal",
        "request_done",
        "runtime",
        "session",
        "state",
        "tunnel_buffer",
        "waiting",
    )

    def __init__(self, conn: ClientConnection, head: RequestHead | None) -> None:
        self.conn = conn
        self.runtime = conn.current.runtime  # the newest: a kept-alive client sees a reload
        request_id = b"-"
        ours = False
        if head is not None:
            rid = head.index.get(b"x-request-id")
            if rid is not None and valid_request_id(rid):
                request_id = rid
            else:
                request_id, ours = new_request_id(), True
        self.session = session = Session(
            head, conn.client_ip, conn.proto, conn.listener.name, request_id, conn.subject
        )
        session.own_request_id = ours
        self.state = PENDING
        self.chain: Chain | None = None
        self.call: UpstreamCall | None = None
        self.refusal: HTTPError | None = None
        self.request_done = False
        self.client_close = head is None or not head.keep_alive
        self.out_chunked = False
        self.body_bytes = 0
        # Request body held until the call exists (filters running); None once handed on.
        self.held: list[bytes] | None = []
        self.held_bytes = 0
        self.tunnel_buffer: list[bytes] | None = None  # client bytes held until the 101
        self.waiting: asyncio.Future[Answer | None] | None = None  # a request filter's wait
        # A filter's read_body: the future it awaits and the limit it gave.
        self.body_wanted: tuple[asyncio.Future[bytes], int] | None = None

    @property
    def status(self) -> int:
        return self.session.status

    @property
    def responded(self) -> bool:
        """A response head (lb's or a server's) went to the client."""
        return self.state >= RESPONDING

    # Request body, from the client ----------------------------------------------------------

    def read_body(self, limit: int) -> asyncio.Future[bytes]:
        """For a request filter (`Session.read_body`): the held body once it is complete.
        While a filter waits for it, the client is read on up to `limit`, not CONNECT_BUFFER."""
        future: asyncio.Future[bytes] = self.conn.proxy.loop.create_future()
        head = self.session.head
        declared = head.content_length if head is not None else None
        if (declared is not None and declared > limit) or self.held_bytes > limit:
            future.set_exception(BodyTooLarge(f"body over {limit} bytes"))
        elif self.request_done or self.held is None:
            future.set_result(b"".join(self.held or ()))
        else:
            self.body_wanted = (future, limit)
            if self.conn.gate.reasons:
                self.conn.gate.resume(CONNECTING)
        return future

    def on_request_body(self, data: bytes) -> None:
        if self.state >= COMPLETE:
            return  # already answered (e.g. 413); the rest of this read is dropped
        self.body_bytes += len(data)
        route = self.session.route
        limit = route.max_body_size if route is not None else None
        if limit is not None and self.body_bytes > limit:
            self.conn.gate.pause(PIPELINED)
            if not self.responded:
                self.fail(Reason.body_too_large, f"body over {limit} bytes")
            else:
                self.abort_request()
            return
        call = self.call
        if call is not None:
            call.send_body(data)
            return
        held = self.held
        if held is not None:
            held.append(data)
            self.held_bytes += len(data)
            wanted = self.body_wanted
            if wanted is None:
                if self.held_bytes > CONNECT_BUFFER:
                    self.conn.gate.pause(CONNECTING)
            elif self.held_bytes > wanted[1]:
                self.body_wanted = None
                self.conn.gate.pause(CONNECTING)  # the filter answers 413 and closes
                if not wanted[0].done():
                    wanted[0].set_exception(BodyTooLarge(f"body over {wanted[1]} bytes"))

    def on_request_end(self) -> None:
        self.request_done = True
        wanted = self.body_wanted
        if wanted is not None:
            self.body_wanted = None
            if not wanted[0].done():
                wanted[0].set_result(b"".join(self.held or ()))
        if self.call is not None:
            self.call.end_body()
        if self.state == COMPLETE:
            self._finish()

    def pause_request(self) -> None:
        self.conn.gate.pause(SERVER_FULL)

    def resume_request(self) -> None:
        gate = self.conn.gate
        if gate.reasons:
            gate.resume(SERVER_FULL)

    # What the exchange does, used here -----------------------------------------------------

    def fail(self, reason: Reason, detail: str) -> None:
        raise NotImplementedError

    def abort_request(self) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError
