"""The HTTP/1.1 reverse proxy's `Exchange`: one request and its response, from head to logged.

Theory of operation. An exchange runs the phases of DESIGN.md: route → choose a server (split,
balance) → forward, streaming both bodies with flow control → respond → log and count, which
always runs exactly once (`_finish`). A server that is full queues the exchange (`WaitingRoom`);
a failed attempt may re-enter server choice (retries), while the request body is still held
for replay (`REPLAY_BUFFER`) and nothing reached the client yet. A 101 response turns the
exchange into a tunnel. Failures before any response byte reached the client become lb's own
error response; after that the only honest signal left is closing the connection.

An exchange writes to the client only through its `ClientConnection` (lb.proxy.http.client), and only
while it is that connection's `queue[0]`.

Flow control: when a server's socket cannot take more request body, the client socket stops
being read (`ReadGate`); when the client cannot take more response body, the server socket
stops being read. Neither side is ever buffered without bound.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import TYPE_CHECKING

from lb.core.balancer import ServerState
from lb.core.errors import HTTPError, Reason, closes_connection, error_response
from lb.core.http import (
    IDEMPOTENT,
    LAST_CHUNK,
    RequestHead,
    ResponseHead,
    encode_chunk,
    informational_to_client,
    new_request_id,
    request_to_server,
    response_has_body,
    response_to_client,
    valid_request_id,
)
from lb.core.redirect import https_location, redirect_response
from lb.core.router import CompiledRoute
from lb.metrics import RETRIES
from lb.proxy.http.connection import UpstreamConnection, UpstreamServer, open_connection
from lb.proxy.http.flow import CONNECTING, PIPELINED, SERVER_FULL, UPGRADING
from lb.proxy.pool.waiting import WaitingRoom, full_servers

if TYPE_CHECKING:
    from lb.proxy.http.client import ClientConnection
    from lb.proxy.runtime import PoolRuntime

log = logging.getLogger("lb.proxy")

# Request body bytes held while the server connection opens, before the client is paused.
CONNECT_BUFFER = 256 * 1024
# A request body up to this size is kept so the request can be sent again on a new
# connection when a kept-alive one turns out to be stale.
REPLAY_BUFFER = 64 * 1024
STATUS_CLIENT_CLOSED = 499  # nginx's convention for "the client went away first"
_NONE_EXCLUDED: frozenset[ServerState] = frozenset()


class Exchange:
    """One request and its response, from head to logged."""

    __slots__ = (
        "attempts",
        "body",
        "body_buffered",
        "body_bytes",
        "bytes_out",
        "client_close",
        "conn",
        "connecting",
        "cookies",
        "detail",
        "excluded",
        "finished",
        "head",
        "informed",
        "out_chunked",
        "pool",
        "queued",
        "refusal",
        "request_done",
        "request_id",
        "responded",
        "response_done",
        "route",
        "runtime",
        "server",
        "server_keep_alive",
        "started",
        "status",
        "tunnel",
        "tunnel_buffer",
        "upstream",
    )

    def __init__(self, conn: ClientConnection, head: RequestHead | None) -> None:
        self.conn = conn
        self.runtime = conn.proxy.runtime  # the newest: a kept-alive client sees a reload
        self.head = head
        self.started = time.perf_counter()
        self.refusal: HTTPError | None = None
        self.route: CompiledRoute | None = None
        self.pool: PoolRuntime | None = None
        self.server: UpstreamServer | None = None
        self.upstream: UpstreamConnection | None = None
        self.connecting = False
        self.cookies: dict[str, bytes] | None = None  # Set-Cookie values to send, by role
        self.body: list[bytes] | None = []  # request body held until a server is attached
        self.body_buffered = 0
        self.body_bytes = 0
        self.request_done = False
        self.responded = False  # a response head went to the client
        self.response_done = False
        self.finished = False
        self.client_close = head is None or not head.keep_alive
        self.out_chunked = False
        self.server_keep_alive = False
        self.status = 0
        self.bytes_out = 0
        self.detail = ""
        self.attempts = 0
        # Servers that failed this request; immutable, replaced on the rare failure, so the
        # common request allocates no set.
        self.excluded: frozenset[ServerState] = _NONE_EXCLUDED
        self.queued: asyncio.TimerHandle | None = None  # waiting for a server slot: its timeout
        self.informed = False  # a 1xx response went to the client: no more retries
        self.tunnel = False
        self.tunnel_buffer: list[bytes] | None = None  # client bytes held until the 101
        self.request_id = b"-"
        if head is not None:
            rid = head.index.get(b"x-request-id")
            self.request_id = rid if rid is not None and valid_request_id(rid) else new_request_id()

    # Phases --------------------------------------------------------------------------------

    def start(self) -> None:
        """Runs when this exchange reaches the front of its connection's queue."""
        if self.finished:
            return  # refused, or the client left, before it could start
        if self.refusal is not None:  # the parser refused its bytes (ClientConnection._refuse)
            self.fail(self.refusal.reason, self.refusal.detail)
            return
        head = self.head
        assert head is not None
        if self.conn.listener.redirect_https:
            self._redirect_https(head)
            return
        route = self.runtime.router.match(self.conn.listener.name, head)
        if route is None:
            self.fail(Reason.no_route, f"no route for {head.host or '-'}{head.path}")
            return
        self.route = route
        limit = route.max_body_size
        if limit is not None and head.content_length is not None and head.content_length > limit:
            self.fail(Reason.body_too_large, f"body of {head.content_length} bytes over {limit}")
            return
        if limit is not None and self.body_bytes > limit:  # chunks that came with the head
            self.fail(Reason.body_too_large, f"body over {limit} bytes")
            return
        if route.pool is not None:
            pool_name = route.pool
        else:  # a canary split: forced, sticky or weighted arm (lb.filters.canary)
            split = self.runtime.splits[route.name]
            pool_name, cookie = split.pick(head, self.conn.proto == b"https")
            if cookie is not None:
                self.cookies = {"arm": cookie}
        self.pool = pool = self.runtime.pools[pool_name]
        pool.budget.record(self.started)  # the share retries may take (lb.core.retry)
        self._connect()

    def _connect(self, fresh: bool = False) -> None:
        """Choose a server (again without those that failed) and get a connection to it;
        `fresh` skips kept-alive sockets, after one of them turned out to be stale."""
        pool = self.pool
        assert pool is not None and self.head is not None
        exclude = self.excluded
        queue = pool.waiting
        if queue is not None:  # servers with max_connections (lb.proxy.pool.waiting)
            if queue.waiters and self.queued is None:
                self._wait(queue)  # others wait already: behind them, first come first served
                return
            full = full_servers(pool.servers)
            if full:
                exclude = exclude | full  # a full server is skipped like a failed one
        sticky = self.runtime.sticky.get(pool.name) if self.runtime.sticky else None
        if sticky is None:
            server = pool.choose(self.head, self.conn.client_ip, exclude)
        else:  # cookie-insert affinity (lb.filters.sticky)
            server, cookie = sticky.choose(
                pool, self.head, self.conn.client_ip, exclude, self.conn.proto == b"https"
            )
            if cookie is not None:
                self.cookies = {**(self.cookies or {}), "server": cookie}
        if server is None:
            if queue is not None and exclude is not self.excluded and full - self.excluded:
                self._wait(queue)
            elif self.attempts:
                self.fail(Reason.backend_failed, self.detail or "every server failed")
            else:
                self.fail(Reason.no_healthy_server, f"no server available in pool {pool.name}")
            return
        if self.queued is not None:  # was waiting: it has its slot
            self.queued.cancel()
            self.queued = None
        self.attempts += 1
        self.server = server
        server.state.in_flight += 1
        if fresh:
            server.close_idle()  # its other kept-alive sockets are suspect too
        else:
            idle = server.take_idle()
            if idle is not None:
                self._attach(idle)
                return
        self.connecting = True
        task = asyncio.ensure_future(
            open_connection(
                server, self.conn.proxy.ticker, self.conn.proxy.parser_kind, pool.timeouts.connect
            )
        )
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Future[UpstreamConnection]) -> None:
        self.connecting = False
        server = self.server
        assert server is not None and self.pool is not None
        if self.finished:
            if not task.cancelled() and task.exception() is None:
                task.result().release()  # the client left meanwhile: keep the connection
            return
        exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
        if exc is None:
            self._attach(task.result())
            return
        if isinstance(exc, TimeoutError):
            cause = "timeout"
        elif isinstance(exc, ssl.SSLError | ssl.CertificateError):
            cause = "tls"  # e.g. the server's certificate did not verify
        else:
            cause = "refused"
        self.conn.proxy.count_connect_error(self.pool.name, server.address, cause)
        log.warning(
            "connect to %s (pool %s) failed: %s",
            server.address,
            self.pool.name,
            "timed out" if cause == "timeout" else exc,
        )
        self.detail = f"connect to {server.address} failed ({cause})"
        if self.pool.passive is not None:
            self.pool.passive.observe(server.state, True)  # passive health checks
        self.excluded |= {server.state}
        self._free_slot()
        assert self.route is not None
        if self._may_retry(self.route.retry.connect_failure):
            self._connect()  # a refused connect sent nothing: another server is safe
        elif cause == "timeout":
            self.fail(Reason.backend_timeout, self.detail)
        else:
            self.fail(Reason.backend_failed, self.detail)

    # Retries (lb.core.retry) and waiting for a server slot (lb.proxy.pool.waiting) ------------------

    def _may_retry(self, on: bool) -> bool:
        """The server last added to `excluded` failed this request: may it go to another?
        `on`: the route's `retries` name this kind of failure. Also needed: attempts left, an
        untried server, the whole request still replayable, nothing sent to the client yet
        (the caller checks `responded`), and the pool's retry budget."""
        pool = self.pool
        route = self.route
        assert pool is not None and route is not None
        tried = len(self.excluded)
        if (
            not on
            or self.body is None
            or self.informed
            or not route.retry.allows(tried)
            or tried >= len(pool.servers)
        ):
            return False
        if not pool.budget.acquire(time.perf_counter(), route.retry.budget):
            log.info("pool %s: retry budget spent, not retrying %r", pool.name, self)
            return False
        RETRIES.labels(pool.name).inc()
        return True

    def _retry_status(self, status: int) -> bool:
        """The server answered a status the route retries on: unless the retry is refused,
        its answer is discarded (never sent to the client) and another server asked."""
        server = self.server
        assert server is not None and self.pool is not None
        self.excluded |= {server.state}
        if not self._may_retry(True):
            return False
        log.info("server %s answered %d to %r: retrying elsewhere", server.address, status, self)
        if self.pool.passive is not None:
            self.pool.passive.observe(server.state, True)
        self.detail = f"server {server.address} answered {status}"
        self._drop_upstream()  # its response is not read: the socket cannot be reused
        self._free_slot()
        self._connect()
        return True

    def _wait(self, queue: WaitingRoom) -> None:
        """Every server this request could use is at its max_connections: wait for a slot."""
        if self.queued is not None:
            queue.requeue(self)  # woken, but the slot went elsewhere: first in line again
        elif not queue.put(self):
            self.fail(
                Reason.queue_full,
                f"every server of pool {queue.name} is at max_connections "
                f"and {queue.max} requests wait already",
            )

    def dequeued(self) -> None:
        """A slot freed up (WaitingRoom.wake)."""
        if not self.finished:
            self._connect()

    def queue_timeout(self) -> None:
        if not self.finished:
            assert self.pool is not None and self.pool.waiting is not None
            self.fail(
                Reason.queue_timeout,
                f"waited {self.pool.waiting.timeout:g}s for a server of pool {self.pool.name} "
                "under its max_connections",
            )

    def _attach(self, upstream: UpstreamConnection) -> None:
        head = self.head
        route = self.route
        assert head is not None and route is not None
        self.upstream = upstream
        conn = self.conn
        # Body bytes held while waiting for a server (connecting, or queued for a slot) may
        # have paused the client; they go out now, so it is read again. An idle connection
        # taken straight from the pool never passes through `_connected`.
        if conn.gate.reasons:
            conn.gate.resume(CONNECTING)
        self.tunnel = tunnel = head.upgrade is not None
        data = request_to_server(
            head, conn.client_ip, conn.proto, self.request_id, tunnel, conn.subject
        )
        body = self.body
        if body:
            chunks = [encode_chunk(c) for c in body] if head.chunked else body
            data += b"".join(chunks)
        if self.request_done and head.chunked:
            data += LAST_CHUNK
        if body is not None and self.body_buffered > REPLAY_BUFFER:
            self.body = None  # too large to send twice: no more retries
        upstream.send(self, data, head.method, route.timeouts.request, tunnel)
        if conn.write_paused:
            upstream.transport.pause_reading()  # type: ignore[union-attr]

    # Request body, from the client ----------------------------------------------------------

    def on_request_body(self, data: bytes) -> None:
        if self.finished:
            return  # already answered (e.g. 413); the rest of this read is dropped
        self.body_bytes += len(data)
        route = self.route
        if (
            route is not None
            and route.max_body_size is not None
            and self.body_bytes > route.max_body_size
        ):
            self.conn.gate.pause(PIPELINED)
            if not self.responded:
                self._drop_upstream()
                self.fail(Reason.body_too_large, f"body over {route.max_body_size} bytes")
            else:
                self.abort_request()
            return
        upstream = self.upstream
        if upstream is not None and self.body is None:
            if upstream.transport is not None:
                upstream.transport.write(encode_chunk(data) if self.head.chunked else data)  # type: ignore[union-attr]
            upstream.deadline = self.conn.proxy.loop.time() + route.timeouts.request  # type: ignore[union-attr]
            return
        if self.body is not None:
            self.body.append(data)
            self.body_buffered += len(data)
            if upstream is not None and upstream.transport is not None:
                # Attached and still keeping a replay copy.
                upstream.transport.write(encode_chunk(data) if self.head.chunked else data)  # type: ignore[union-attr]
                if self.body_buffered > REPLAY_BUFFER:
                    self.body = None
            elif self.body_buffered > CONNECT_BUFFER:
                self.conn.gate.pause(CONNECTING)

    def on_request_end(self) -> None:
        self.request_done = True
        head = self.head
        upstream = self.upstream
        chunked = head is not None and head.chunked
        if chunked and upstream is not None and upstream.transport is not None:
            upstream.transport.write(LAST_CHUNK)
        if self.response_done:
            self._finish()

    # Response, from the server --------------------------------------------------------------

    def on_response_head(self, head: ResponseHead) -> None:
        status = head.status
        req = self.head
        assert req is not None
        if status < 200:
            if status == 101 and self.tunnel:
                self._open_tunnel(head)
            elif req.version == "1.1":
                self.conn.write(informational_to_client(head))
                self.informed = True
            return
        route = self.route
        assert route is not None
        if (
            status in route.retry.statuses
            and req.method in IDEMPOTENT
            and self._retry_status(status)
        ):
            return  # its answer discarded, the request went to another server
        if self.tunnel:
            self.tunnel = False  # the server declined the upgrade: a plain response, then close
            self.client_close = True
        self.status = status
        self.responded = True
        passive = self.pool.passive  # type: ignore[union-attr]  # passive health checks
        if passive is not None:
            passive.observe(self.server.state, status >= 500)  # type: ignore[union-attr]
        conn = self.conn
        upstream = self.upstream
        if upstream is not None:
            upstream.deadline = conn.proxy.loop.time() + route.timeouts.request
        chunked = False
        if head.content_length is None and response_has_body(req.method, status):
            if req.version == "1.1":
                chunked = True
            else:
                self.client_close = True  # HTTP/1.0: the end of the body is the close
        self.out_chunked = chunked
        close = self.client_close or not self.request_done or conn.proxy.stopping
        if close:
            self.client_close = True
        hsts = conn.listener.hsts
        extra = None if hsts is None else _hsts_unless_set(head, hsts)
        if self.cookies:  # sticky arm and server (lb.filters)
            extra = [*(extra or ()), *((b"set-cookie", v) for v in self.cookies.values())]
        if not close and req.version == "1.0":
            # An HTTP/1.0 client that asked for keep-alive closes unless told it was granted.
            extra = [*(extra or ()), (b"connection", b"keep-alive")]
        conn.write(
            response_to_client(head, self.request_id, chunked=chunked, close=close, extra=extra)
        )
        self.server_keep_alive = head.keep_alive

    def on_response_body(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self.conn.write(encode_chunk(data) if self.out_chunked else data)
        upstream = self.upstream
        if upstream is not None:
            upstream.deadline = self.conn.proxy.loop.time() + self.route.timeouts.request  # type: ignore[union-attr]

    def on_response_end(self) -> None:
        if self.out_chunked:
            self.conn.write(LAST_CHUNK)
        self.response_done = True
        upstream = self.upstream
        self.upstream = None
        if upstream is not None:
            gate = self.conn.gate
            if gate.reasons:
                gate.resume(SERVER_FULL)  # that socket's full buffer is no reason now
            if self.request_done and self.server_keep_alive:
                upstream.release()  # (or closed, if it turns out not to be usable)
            else:
                upstream.close()
        if self.request_done or self.client_close:
            self._finish()

    # Upgrades (WebSocket and others): after 101 the exchange is a byte tunnel ----------------

    def _open_tunnel(self, head: ResponseHead) -> None:
        self.status = 101
        self.responded = True
        self.client_close = True
        self._tunnel_active()  # a tunnel lives while bytes flow, up to `timeouts.tunnel` idle
        self.conn.write(response_to_client(head, self.request_id, chunked=False, close=False))
        for data in self.tunnel_buffer or ():
            self._tunnel_to_server(data)
        self.tunnel_buffer = None
        self.conn.gate.resume(UPGRADING)

    def on_tunnel_data_from_client(self, data: bytes) -> None:
        if self.status == 101:
            self._tunnel_to_server(data)
        else:
            # Held until the server agrees to switch; the client is not read meanwhile, so
            # this holds one socket read, not whatever the client cares to send.
            if self.tunnel_buffer is None:
                self.tunnel_buffer = []
            self.tunnel_buffer.append(data)
            self.conn.gate.pause(UPGRADING)

    def _tunnel_to_server(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.write(data)
            self._tunnel_active()

    def _tunnel_active(self) -> None:
        upstream = self.upstream
        if upstream is not None and self.route is not None:
            upstream.deadline = self.conn.proxy.loop.time() + self.route.timeouts.tunnel

    def tunnel_eof_from_client(self) -> None:
        upstream = self.upstream
        transport = upstream.transport if upstream is not None else None
        if transport is not None and transport.can_write_eof():
            transport.write_eof()
        else:
            self._drop_upstream()
            self.response_done = True
            self._finish()

    def on_upgrade_data(self, data: bytes) -> None:  # response parser delegate, after a 101
        self.on_tunnel_data_from_server(data)

    def on_tunnel_data_from_server(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self.conn.write(data)
        self._tunnel_active()

    # Flow control --------------------------------------------------------------------------

    def upstream_pause_writing(self) -> None:
        self.conn.gate.pause(SERVER_FULL)

    def upstream_resume_writing(self) -> None:
        self.conn.gate.resume(SERVER_FULL)

    def client_pause_writing(self) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.pause_reading()

    def client_resume_writing(self) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.resume_reading()

    # Failures ------------------------------------------------------------------------------

    def upstream_failed(self, upstream: UpstreamConnection, detail: str, timeout: bool) -> None:
        """The server connection broke or timed out while this exchange used it."""
        if upstream is not self.upstream:
            return
        self._drop_upstream()
        server = self.server
        address = server.address if server is not None else "-"
        if self.status == 101:
            if timeout:
                self.detail = "tunnel idle past timeouts.tunnel"
                log.info("closing tunnel from %s to %s: idle", self.conn.client_ip, address)
            self.response_done = True
            self._finish()
            self.conn.close()
            return
        if timeout and not self.request_done and not self.responded:
            self.fail(Reason.request_timeout, "request body not received in time")
            return
        if not self.responded:
            # Nothing reached the client yet. A kept-alive connection that was closed under
            # us (the server timed it out as we reused it) is retried once on a new one, if
            # the request can be sent again unchanged (RFC 9112 §9.3.1).
            if (
                upstream.reused
                and not timeout
                and self.body is not None
                and self.head is not None
                and (self.head.method in IDEMPOTENT or not self.body_bytes)
                and self.pool is not None
                and self.server is not None
            ):
                # The same server is fine: it is alive, only that socket was not.
                self._free_slot()
                self._connect(fresh=True)
                return
            log.warning("server %s failed before answering: %s", address, detail)
            if self.pool is not None and self.pool.passive is not None and server is not None:
                self.pool.passive.observe(server.state, True)  # passive health checks
            if (
                not timeout
                and server is not None
                and self.route is not None
                and self.head is not None
                and self.head.method in IDEMPOTENT
            ):
                # Reset or closed before any response byte: an idempotent request may go to
                # another server (a timeout may be a slow answer on its way: never retried).
                self.excluded |= {server.state}
                if self._may_retry(self.route.retry.connect_failure):
                    self._free_slot()
                    self._connect()
                    return
            self.fail(
                Reason.backend_timeout if timeout else Reason.backend_failed,
                f"server {address}: {detail}",
            )
            return
        log.warning("server %s failed mid-response (%d sent): %s", address, self.status, detail)
        self.detail = f"server {address}: {detail}"
        self.client_close = True
        self.response_done = True
        self._finish()
        self.conn.close()

    def _redirect_https(self, head: RequestHead) -> None:
        """A `redirect_https` listener answers every request itself: 308 to https."""
        location = https_location(head)
        if location is None:
            self.fail(Reason.bad_request, "no usable Host header to redirect to https")
            return
        self.status = 308
        self.responded = True
        self.response_done = True
        if not self.request_done:
            self.client_close = True  # the body is not read: the connection cannot be reused
        self.conn.write(redirect_response(location, self.request_id, self.client_close))
        self._finish()

    def fail(self, reason: Reason, detail: str) -> None:
        """Answer with lb's own error (nothing was sent to the client yet)."""
        self._drop_upstream()  # it may hold part of this request: never reuse it
        self.status = reason.status
        self.detail = detail
        self.responded = True
        self.response_done = True
        if closes_connection(reason) or not self.request_done:
            self.client_close = True
        rid = self.request_id if self.head else None
        self.conn.write(
            error_response(
                reason, detail, rid, close=self.client_close, hsts=self.conn.listener.hsts
            )
        )
        head = self.head
        log.info(
            "%s: %d %s for %s %s from %s: %s",
            self.conn.listener.name,
            reason.status,
            reason.name,
            head.method if head is not None else "-",
            head.path if head is not None else "-",
            self.conn.client_ip,
            detail,
        )
        self.conn.proxy.count_error(self.conn.listener.name, reason.name)
        self._finish()

    def abort_request(self) -> None:
        """The request stream broke after part of it was sent on: close both sides."""
        self._drop_upstream()
        self.client_close = True
        self.detail = self.detail or "request aborted"
        if not self.responded:
            self.status = 400
        self.response_done = True
        self._finish()
        self.conn.close()

    def client_lost(self) -> None:
        if self.finished:
            return
        self._drop_upstream()
        if not self.response_done:
            self.status = (
                self.status if self.tunnel and self.status == 101 else STATUS_CLIENT_CLOSED
            )
            self.detail = self.detail or "client closed the connection"
        self.response_done = True
        self._finish()

    def _free_slot(self) -> None:
        """This exchange no longer uses `server` (done, or going to try another): its slot goes
        to the oldest request waiting in the pool's queue, which may take it at once. Every
        `in_flight` decrement is here, so none of them forgets the waiters."""
        server = self.server
        if server is None:
            return
        if not self.finished:
            self.server = None  # a finished exchange keeps it: the log names its server
        server.state.in_flight -= 1
        queue = self.pool.waiting if self.pool is not None else None
        if queue is not None and queue.waiters:
            queue.wake()

    def _drop_upstream(self) -> None:
        upstream = self.upstream
        self.upstream = None
        if upstream is not None:
            # Its resume_writing will never come to this exchange: the client must not stay
            # paused for a socket it no longer writes to (a retry's new one pauses it anew).
            self.conn.gate.resume(SERVER_FULL)
            upstream.abort()

    # Log and count: always, exactly once ----------------------------------------------------

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._free_slot()
        if self.queued is not None:
            self.pool.waiting.remove(self)  # type: ignore[union-attr]  # the client left
        if self.route is not None and self.route.pool is None:
            self.runtime.splits[self.route.name].observe(self)  # per-arm metrics, rollback
        self.conn.proxy.observe(self)
        self.conn.exchange_done(self)

    def __repr__(self) -> str:
        head = self.head
        what = f"{head.method} {head.path}" if head is not None else "refused"
        return f"<Exchange {what} status={self.status}>"


def _hsts_unless_set(head: ResponseHead, value: bytes) -> list[tuple[bytes, bytes]] | None:
    """The listener's Strict-Transport-Security, unless the server set its own."""
    if head.has_field(b"strict-transport-security"):
        return None
    return [(b"strict-transport-security", value)]
