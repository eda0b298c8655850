"""The HTTP/1.1 reverse proxy's `Exchange`: one client request and its response, from head to
logged. It drives the pipeline's phases (lb.proxy.http.pipeline) and is the client's `Sink`
for the `UpstreamCall` (lb.proxy.http.call) that forwards the request.

Theory of operation. Progress is one state, in order:

    PENDING -> FILTERING -> UPSTREAM -> RESPONDING -> COMPLETE -> DONE
                                 \\-> TUNNEL (after a 101) -/

PENDING: behind another request on its connection. FILTERING: routed, its request filters
running (one of them may be waited for). UPSTREAM: a call is under way, no response byte went
to the client. RESPONDING: the head went out, the body streams. COMPLETE: the whole response
went out (or lb answered itself); it waits for the rest of the request body, if any. DONE:
logged and counted (the log phase runs exactly once, in `_finish`). Beside the state, two
flags that are not progress: `request_done` (the request body ended; it streams independently
of the response) and `client_close` (the connection closes after this exchange).

Failures before any response byte reached the client become lb's own answer; after that the
only honest signal left is closing the connection. An exchange writes to the client only
through its `ClientConnection`, and only while it is that connection's `exchanges[0]`.

Flow control: when the server cannot take more request body, the client socket stops being
read (`ReadGate`); when the client cannot take more response body, the server socket stops
being read. Neither side is ever buffered without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Final

from lb.core.errors import Reason, error_response
from lb.core.forwarding import (
    LAST_CHUNK,
    encode_chunk,
    informational_to_client,
    request_to_server,
    response_to_client,
)
from lb.core.http import ResponseHead, response_has_body
from lb.proxy.http.call import UpstreamCall
from lb.proxy.http.flow import CONNECTING, UPGRADING
from lb.proxy.http.pipeline import Answer, Filter
from lb.proxy.http.request_body import (
    COMPLETE,
    DONE,
    FILTERING,
    PENDING,
    RESPONDING,
    STATES,
    STATUS_CLIENT_CLOSED,
    TUNNEL,
    UPSTREAM,
    RequestBody,
)
from lb.proxy.http.sink import Sink

if TYPE_CHECKING:
    from lb.proxy.http.client import ClientConnection

log = logging.getLogger("lb.proxy")
# A Final alias: compiled code calls it from a C static, not a module lookup per call.
perf_counter: Final = time.perf_counter


class Exchange(RequestBody, Sink):
    """One request and its response, from head to logged."""

    __slots__ = ()

    # Phases: route, request filters --------------------------------------------------------

    def start(self) -> None:
        """Runs when this exchange reaches the front of its connection's exchanges."""
        if self.state != PENDING:
            return  # refused, or the client left, before it could start
        if self.refusal is not None:  # the parser refused its bytes (ClientConnection._refuse)
            self.fail(self.refusal.reason, self.refusal.detail)
            return
        head = self.session.head
        assert head is not None
        listener = self.conn.listener.name
        route = self.runtime.router.match(listener, head)
        self.session.route = route
        self.chain = chain = self.runtime.chains[listener, route.name if route else None]
        self.state = FILTERING
        if chain.reads_body:
            self.session.reader = self
        if chain.request:
            self._request_filters(0)
        else:
            self._forward()

    def _request_filters(self, i: int) -> None:
        """Run the chain's request filters from the i-th on; then forward."""
        filters = self.chain.request  # type: ignore[union-attr]  # set by start
        session = self.session
        while i < len(filters):
            f = filters[i]
            i += 1
            result = f.on_request(session)
            if result is None:
                continue
            if isinstance(result, Answer):
                self.answer(result)
            else:
                self._wait_for(f, result, i)
            return
        self._forward()

    def _wait_for(self, f: Filter, awaitable: Awaitable[Answer | None], then: int) -> None:
        """A request filter asked to wait (a store lookup): go on from filter `then` once it
        is done, or after its `wait_timeout`. Only such a request pays for a task."""
        future = asyncio.ensure_future(awaitable)
        timer = self.conn.proxy.loop.call_later(f.wait_timeout, future.cancel)
        self.waiting = future

        def done(future: asyncio.Future[Answer | None]) -> None:
            timer.cancel()
            self.waiting = None
            if self.state != FILTERING:
                return  # the client left meanwhile
            result: Answer | None
            if future.cancelled():
                result = f.on_wait_timeout(self.session)
            elif future.exception() is not None:
                log.warning("filter %s failed on %r: %r", f.name, self, future.exception())
                result = None
            else:
                result = future.result()
            try:
                if result is not None:
                    self.answer(result)
                else:
                    self._request_filters(then)
            except Exception:
                log.exception("exchange %r failed after filter %s", self, f.name)
                self.conn.abort()

        future.add_done_callback(done)

    # Phase: choose upstream, forward -------------------------------------------------------

    def _forward(self) -> None:
        session = self.session
        route = session.route
        head = session.head
        assert head is not None
        if route is None:
            self.fail(Reason.no_route, f"no route for {head.host or '-'}{head.path}")
            return
        limit = route.max_body_size
        if limit is not None and head.content_length is not None and head.content_length > limit:
            self.fail(Reason.body_too_large, f"body of {head.content_length} bytes over {limit}")
            return
        if limit is not None and self.body_bytes > limit:  # chunks that came with the head
            self.fail(Reason.body_too_large, f"body over {limit} bytes")
            return
        pool_name = session.pool or route.pool  # a split's arm, set by its filter
        assert pool_name is not None
        session.pool = pool_name
        conn = self.conn
        tunnel = head.upgrade is not None  # (a property: read once)
        data = request_to_server(
            head,
            conn.client_ip,
            conn.proto,
            session.request_id,
            tunnel,
            conn.subject,
            conn.local_authority if b"host" not in head.index else b"",
        )
        call = UpstreamCall(
            conn.proxy,
            self.runtime.pools[pool_name],
            session,
            data,
            self,
            route.retry,
            route.request_timeout,
            route.tunnel_timeout,
            tunnel,
        )
        self.call = call
        self.state = UPSTREAM
        held = self.held
        self.held = None
        if held:
            for chunk in held:
                call.send_body(chunk)
            if conn.gate.reasons:
                conn.gate.resume(CONNECTING)  # the call holds or sends them now
        if self.request_done:
            call.end_body()
        call.start()

    # Sink: the response, from the call -------------------------------------------------------

    def call_informational(self, head: ResponseHead) -> None:
        self.conn.write(informational_to_client(head))

    def call_head(self, head: ResponseHead) -> None:
        session = self.session
        req = session.head
        assert req is not None
        status = head.status
        if self.call is not None and self.call.wants_tunnel:
            self.client_close = True  # the server declined the upgrade: answer, then close
        session.status = status
        self.state = RESPONDING
        chain = self.chain
        if chain is not None and chain.response_head:
            for hook in chain.response_head:
                hook(session, head, True)
        conn = self.conn
        chunked = False
        if head.content_length is None and response_has_body(req.method, status):
            if req.version == "1.1":
                chunked = True
            else:
                self.client_close = True  # HTTP/1.0: the end of the body is the close
        self.out_chunked = chunked
        close = self.client_close or not self.request_done or conn.current.stopping
        if close:
            self.client_close = True
        extra = session.response_fields
        if not close and req.version == "1.0":
            # An HTTP/1.0 client that asked for keep-alive closes unless told it was granted.
            extra = [*(extra or ()), (b"connection", b"keep-alive")]
        conn.write(
            response_to_client(head, session.request_id, chunked=chunked, close=close, extra=extra)
        )

    def call_body(self, data: bytes) -> None:
        chain = self.chain
        if chain is not None and chain.response_body:
            for hook in chain.response_body:
                data = hook(self.session, data)
        self.session.bytes_out += len(data)
        self.conn.write(encode_chunk(data) if self.out_chunked else data)

    def call_end(self) -> None:
        if self.out_chunked:
            self.conn.write(LAST_CHUNK)
        self.state = COMPLETE
        chain = self.chain
        if chain is not None and chain.response_end:
            for hook in chain.response_end:
                hook(self.session)
        if self.request_done or self.client_close:
            self._finish()

    def call_failed(self, reason: Reason, detail: str) -> None:
        self.fail(reason, detail)

    def call_broken(self, detail: str) -> None:
        self.session.detail = detail
        self.client_close = True
        self.state = COMPLETE
        self._finish()
        self.conn.close()

    # Upgrades (WebSocket and others): after 101 the exchange is a byte tunnel ----------------

    def call_tunnel(self, head: ResponseHead) -> None:
        session = self.session
        session.status = 101
        self.state = TUNNEL
        self.client_close = True
        self.conn.write(response_to_client(head, session.request_id, chunked=False, close=False))
        call = self.call
        if call is not None:
            for data in self.tunnel_buffer or ():
                call.tunnel_send(data)
        self.tunnel_buffer = None
        self.conn.gate.resume(UPGRADING)

    def call_tunnel_data(self, data: bytes) -> None:
        self.session.bytes_out += len(data)
        self.conn.write(data)

    def call_tunnel_closed(self, detail: str) -> None:
        if detail:
            self.session.detail = detail
        self.state = COMPLETE
        self._finish()
        self.conn.close()

    def on_tunnel_data_from_client(self, data: bytes) -> None:
        if self.state == TUNNEL:
            if self.call is not None:
                self.call.tunnel_send(data)
        else:
            # Held until the server agrees to switch; the client is not read meanwhile, so
            # this holds one socket read, not whatever the client cares to send.
            if self.tunnel_buffer is None:
                self.tunnel_buffer = []
            self.tunnel_buffer.append(data)
            self.conn.gate.pause(UPGRADING)

    def tunnel_eof_from_client(self) -> None:
        call = self.call
        if call is not None and call.tunnel_eof():
            return  # the server's own close then ends the tunnel
        if call is not None:
            call.cancel()
        self.state = COMPLETE
        self._finish()

    # Sink: flow control ----------------------------------------------------------------------

    @property
    def client(self) -> ClientConnection:
        return self.conn

    def client_pause_writing(self) -> None:
        if self.call is not None:
            self.call.pause_response()

    def client_resume_writing(self) -> None:
        if self.call is not None:
            self.call.resume_response()

    # lb's own answers, and endings -----------------------------------------------------------

    def answer(self, answer: Answer) -> None:
        """Respond with `answer` instead of a server's response (nothing was sent yet)."""
        if self.call is not None:
            self.call.cancel()  # it may hold part of this request: never reuse its socket
        session = self.session
        session.status = answer.status
        if answer.detail:
            session.detail = answer.detail
        self.state = COMPLETE
        conn = self.conn
        if answer.close or not self.request_done or conn.current.stopping:
            # (a body left unread cannot be skipped safely; a stopping worker keeps no client)
            self.client_close = True
        reason = answer.error
        request = session.head
        if reason is not None:
            log.info(
                "%s: %d %s for %s %s from %s: %s",
                conn.listener.name,
                answer.status,
                reason.name,
                request.method if request is not None else "-",
                request.path if request is not None else "-",
                conn.client_ip,
                answer.detail,
            )
            conn.proxy.count_error(conn.listener.name, reason.name)
        if request is None:  # bytes the parser refused: no request to speak of
            assert reason is not None
            data = error_response(reason, answer.detail, None, close=True, hsts=conn.listener.hsts)
        else:
            head = answer.head()
            chain = self.chain or self.runtime.chain(conn.listener.name, None)
            for hook in chain.response_head:
                hook(session, head, False)
            data = response_to_client(
                head,
                session.request_id,
                chunked=False,
                close=self.client_close,
                extra=session.response_fields,
                body=answer.body if reason is not None or request.method != "HEAD" else b"",
            )
        session.bytes_out += len(answer.body)
        conn.write(data)
        self._finish()

    def fail(self, reason: Reason, detail: str) -> None:
        """Answer with lb's own error (nothing was sent to the client yet)."""
        self.answer(Answer.refuse(reason, detail))

    def abort_request(self) -> None:
        """The request stream broke after part of it was sent on: close both sides."""
        if self.call is not None:
            self.call.cancel()
        self.client_close = True
        session = self.session
        session.detail = session.detail or "request aborted"
        if not self.responded:
            session.status = 400
        self.state = COMPLETE
        self._finish()
        self.conn.close()

    def client_lost(self) -> None:
        if self.state == DONE:
            return
        if self.call is not None:
            self.call.cancel()
        session = self.session
        if self.state < COMPLETE:
            if not (self.state == TUNNEL and session.status == 101):
                session.status = STATUS_CLIENT_CLOSED
            session.detail = session.detail or "client closed the connection"
        self.state = COMPLETE
        self._finish()

    # Log and count: always, exactly once ----------------------------------------------------

    def _finish(self) -> None:
        if self.state == DONE:
            return
        self.state = DONE
        call = self.call
        if call is not None:
            self.call = None  # (and the call's `sink` is the only way back: no cycle left)
            call.cancel()  # (a no-op once its response ended)
        if self.waiting is not None:
            self.waiting.cancel()
        chain = self.chain or self.runtime.chain(self.conn.listener.name, None)
        session = self.session
        session.ended = perf_counter()  # one reading for every log-phase filter
        for hook in chain.log:
            try:  # each on its own: one that fails must not skip the others (a cache flight)
                hook(session)
            except Exception:
                log.exception("log phase failed for %r", self)
        self.conn.exchange_done(self)

    def __repr__(self) -> str:
        head = self.session.head
        what = f"{head.method} {head.path}" if head is not None else "refused"
        return f"<Exchange {what} {STATES[self.state]} status={self.session.status}>"
