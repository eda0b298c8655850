"""How an `UpstreamCall` (lb.proxy.http.call) gets its request to a server: choosing one (the
pool's balancer, or the session's chooser), the pool's waiting room when every server is at
its `max_connections`, connecting or taking a kept-alive connection, and retries within the
route's policy and the pool's budget. `Attempts` is the call's base class: the state and these
steps; the call adds the request and response streams on top.

Every `in_flight` decrement is in `_free_slot`, so none forgets the waiters; every dropped
server connection goes through `_drop_upstream`, which never leaves the request's source paused.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Final, cast

from lb.core.balancer import ServerState
from lb.core.errors import Reason
from lb.core.forwarding import LAST_CHUNK, encode_chunk
from lb.core.retry import RetryPolicy
from lb.metrics import RETRIES
from lb.proxy.http.connection import Caller, UpstreamConnection, UpstreamServer
from lb.proxy.http.session import Session
from lb.proxy.http.sink import Sink, Upstreams
from lb.proxy.pool.pool import PoolRuntime
from lb.proxy.pool.waiting import WaitingRoom, full_servers

log = logging.getLogger("lb.proxy")

# Request body bytes held while the server connection opens, before the source is paused.
CONNECT_BUFFER: Final = 256 * 1024
# A request body up to this size is kept so the request can be sent again on a new
# connection when a kept-alive one turns out to be stale, or to another server on a retry.
REPLAY_BUFFER: Final = 64 * 1024

# Final ints, not `range(7)` unpacked: compiled code then reads them as constants.
IDLE: Final = 0
WAITING: Final = 1
CONNECTING: Final = 2
SENT: Final = 3
RECEIVING: Final = 4
TUNNEL: Final = 5
DONE: Final = 6
STATES = ("idle", "waiting", "connecting", "sent", "receiving", "tunnel", "done")

_NONE_EXCLUDED: Final[frozenset[ServerState]] = frozenset()


class Attempts:
    """The part of an `UpstreamCall` that finds it a server: see lb.proxy.http.call."""

    __slots__ = (
        "attempts",
        "body",
        "body_buffered",
        "body_bytes",
        "chunked",
        "client",
        "data",
        "excluded",
        "informed",
        "keep_alive",
        "pool",
        "queued",
        "request_done",
        "retry",
        "server",
        "session",
        "sink",
        "source_paused",
        "state",
        "timeout",
        "tunnel_timeout",
        "upstream",
        "upstreams",
        "wants_tunnel",
    )

    def __init__(
        self,
        upstreams: Upstreams,
        pool: PoolRuntime,
        session: Session,
        head_bytes: bytes,
        sink: Sink,
        retry: RetryPolicy,
        timeout: float,
        tunnel_timeout: float = 0.0,
        wants_tunnel: bool = False,
    ) -> None:
        head = session.head
        assert head is not None
        self.upstreams = upstreams
        self.pool = pool
        self.session = session
        self.data = head_bytes  # the request head as the server gets it
        self.sink = sink
        self.client = sink.client
        self.source_paused = False  # this call asked the sink to stop reading the request
        self.retry = retry
        self.timeout = timeout  # no byte from the server for this long: 504
        self.tunnel_timeout = tunnel_timeout
        self.chunked = head.chunked
        self.wants_tunnel = wants_tunnel  # an Upgrade request: a 101 opens a tunnel
        self.state = IDLE
        self.server: UpstreamServer | None = None
        self.upstream: UpstreamConnection | None = None
        self.body: list[bytes] | None = []  # request body kept for a replay; None: too large
        self.body_buffered = 0
        self.body_bytes = 0
        self.request_done = False
        self.keep_alive = False
        self.attempts = 0
        # Servers that failed this request; immutable, replaced on the rare failure, so the
        # common request allocates no set.
        self.excluded: frozenset[ServerState] = _NONE_EXCLUDED
        self.queued: asyncio.TimerHandle | None = None  # in the waiting room: its timeout
        self.informed = False  # a 1xx went to the sink: no more retries

    # Choosing a server and connecting ------------------------------------------------------

    def _connect(self, fresh: bool = False) -> None:
        """Choose a server (again without those that failed) and get a connection to it;
        `fresh` skips kept-alive sockets, after one of them turned out to be stale."""
        pool = self.pool
        session = self.session
        exclude = self.excluded
        waiting = pool.waiting
        full: set[ServerState] = set()
        if waiting is not None:  # servers with max_connections (lb.proxy.pool.waiting)
            if waiting.waiters and self.queued is None:
                self._wait(waiting)  # others wait already: behind them, first come first served
                return
            full = full_servers(pool.servers)
            if full:
                exclude = exclude | full  # a full server is skipped like a failed one
        choose = session.choose
        if choose is None:
            assert session.head is not None
            server = pool.choose(session.head, session.client_ip, exclude)
        else:  # e.g. cookie-insert affinity (lb.filters.sticky)
            server = choose(pool, session, exclude)
        if server is None:
            if waiting is not None and exclude is not self.excluded and full - self.excluded:
                self._wait(waiting)
            elif self.attempts:
                self._fail(Reason.backend_failed, session.detail or "every server failed")
            else:
                self._fail(Reason.no_healthy_server, f"no server available in pool {pool.name}")
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
        self.state = CONNECTING
        task = asyncio.ensure_future(self.upstreams.connect(server, pool.timeouts.connect))
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Future[UpstreamConnection]) -> None:
        server = self.server
        if self.state != CONNECTING or server is None:  # cancelled meanwhile
            if not task.cancelled() and task.exception() is None:
                task.result().release()  # nobody wants it now: keep it for the next request
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
        pool = self.pool
        self.upstreams.count_connect_error(pool.name, server.address, cause)
        log.warning(
            "connect to %s (pool %s) failed: %s",
            server.address,
            pool.name,
            "timed out" if cause == "timeout" else exc,
        )
        self.session.detail = f"connect to {server.address} failed ({cause})"
        if pool.passive is not None:
            pool.passive.observe(server.state, True)  # passive health checks
        self.excluded |= {server.state}
        self._free_slot()
        if self._may_retry(self.retry.connect_failure):
            self._connect()  # a refused connect sent nothing: another server is safe
        elif cause == "timeout":
            self._fail(Reason.backend_timeout, self.session.detail)
        else:
            self._fail(Reason.backend_failed, self.session.detail)

    def _attach(self, upstream: UpstreamConnection) -> None:
        self.upstream = upstream
        server = upstream.server
        self.session.server = server.address
        data = self.data
        body = self.body
        if body:
            data += b"".join([encode_chunk(c) for c in body] if self.chunked else body)
        if self.request_done and self.chunked:
            data += LAST_CHUNK
        if body is not None and self.body_buffered > REPLAY_BUFFER:
            self.body = None  # too large to send twice: no more retries
        self.state = SENT
        # Body bytes held while connecting may have paused the source: they go out now (and
        # if that fills the socket's buffer, `upstream_pause_writing` pauses it again).
        if self.source_paused:
            self._resume_source()
        method = self.session.head.method  # type: ignore[union-attr]  # a call has a head
        # The connection reports to the whole call (the subclass answers as its `Caller`).
        caller = cast("Caller", self)
        upstream.send(caller, data, method, self.timeout, self.wants_tunnel)
        if self.client.write_paused and upstream.transport is not None:
            upstream.transport.pause_reading()

    # Retries (lb.core.retry) and the waiting room (lb.proxy.pool.waiting) -------------------

    def _may_retry(self, on: bool) -> bool:
        """The server last added to `excluded` failed this request: may it go to another?
        `on`: the route's `retries` name this kind of failure. Also needed: attempts left, an
        untried server, the whole request still replayable, no 1xx passed on, and the pool's
        retry budget."""
        pool = self.pool
        tried = len(self.excluded)
        if (
            not on
            or self.body is None
            or self.informed
            or not self.retry.allows(tried)
            or tried >= len(pool.servers)
        ):
            return False
        if not pool.budget.acquire(time.perf_counter(), self.retry.budget):
            log.info("pool %s: retry budget spent, not retrying %r", pool.name, self)
            return False
        RETRIES.labels(pool.name).inc()
        return True

    def _retry_status(self, status: int) -> bool:
        """The server answered a status the route retries on: unless the retry is refused,
        its answer is discarded (never sent on) and another server asked."""
        server = self.server
        assert server is not None
        self.excluded |= {server.state}
        if not self._may_retry(True):
            return False
        log.info("server %s answered %d to %r: retrying elsewhere", server.address, status, self)
        if self.pool.passive is not None:
            self.pool.passive.observe(server.state, True)
        self.session.detail = f"server {server.address} answered {status}"
        self._drop_upstream()  # its response is not read: the socket cannot be reused
        self._free_slot()
        self._connect()
        return True

    def _wait(self, waiting: WaitingRoom) -> None:
        """Every server this request could use is at its max_connections: wait for a slot."""
        self.state = WAITING
        if self.queued is not None:
            waiting.requeue(self)  # woken, but the slot went elsewhere: first in line again
        elif not waiting.put(self):
            self._fail(
                Reason.queue_full,
                f"every server of pool {waiting.name} is at max_connections "
                f"and {waiting.max} requests wait already",
            )

    def dequeued(self) -> None:
        """A slot freed up (WaitingRoom.wake)."""
        if self.state == WAITING:
            self._connect()

    def queue_timeout(self) -> None:
        if self.state == WAITING:
            waiting = self.pool.waiting
            self._fail(
                Reason.queue_timeout,
                f"waited {waiting.timeout if waiting else 0:g}s for a server of pool "
                f"{self.pool.name} under its max_connections",
            )

    def upstream_pause_writing(self) -> None:
        self._pause_source()

    def upstream_resume_writing(self) -> None:
        self._resume_source()

    # Flow control and ending ---------------------------------------------------------------

    def _pause_source(self) -> None:
        self.source_paused = True
        self.sink.pause_request()

    def _resume_source(self) -> None:
        self.source_paused = False
        self.sink.resume_request()

    def _fail(self, reason: Reason, detail: str) -> None:
        self.state = DONE
        self._drop_upstream()  # it may hold part of this request: never reuse it
        self._free_slot()
        self.sink.call_failed(reason, detail)

    def _free_slot(self) -> None:
        """This call no longer uses `server` (done, or going to try another): its slot goes
        to the oldest request in the pool's waiting room, which may take it at once. Every
        `in_flight` decrement is here, so none of them forgets the waiters."""
        server = self.server
        if server is None:
            return
        self.server = None
        server.state.in_flight -= 1
        waiting = self.pool.waiting
        if waiting is not None and waiting.waiters:
            waiting.wake()

    def _drop_upstream(self) -> None:
        upstream = self.upstream
        self.upstream = None
        if upstream is not None:
            # Its resume_writing will never come: the source must not stay paused for a socket
            # no longer written to (a retry's new one pauses it anew).
            if self.source_paused:
                self._resume_source()
            upstream.abort()
