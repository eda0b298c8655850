"""`UpstreamCall`: one request sent to a pool, its response delivered to a sink.

Theory of operation. A call owns everything between "this request goes to pool P" and "here is
the response": choosing a server (the pool's balancer, or the session's chooser: sticky), the
pool's waiting room when every server is at its `max_connections`, retries within the route's
policy and the pool's budget, kept-alive connections (a stale one is retried once on a new
socket), TLS to servers (the pool's context, inside the connection), and the request and
response deadlines. It needs no client: the exchange is one `Sink`; a cache revalidation or an
offload job can be another.

Progress is one state (`state`), in order:

    IDLE -> WAITING (for a server slot) -> CONNECTING -> SENT -> RECEIVING -> DONE
                                                           \\-> TUNNEL (after a 101) -> DONE

and back to CONNECTING (or WAITING) from CONNECTING, SENT when a retry is allowed. The request
body streams through `send_body`; up to `REPLAY_BUFFER` bytes of it are kept so a retry can
send it again. Until the sink has seen a response head, every failure is either retried or
reported once through `call_failed`; after that, through `call_broken`.

Flow control: when the server cannot take more request body, the sink is asked to stop
reading its source (`pause_request`); when the sink's client cannot take more response, the
sink calls `pause_response` and the server socket stops being read.
"""

from __future__ import annotations

import logging

from lb.core.errors import Reason
from lb.core.forwarding import LAST_CHUNK, encode_chunk
from lb.core.http import IDEMPOTENT, ResponseHead
from lb.proxy.http.attempts import (
    CONNECT_BUFFER,
    DONE,
    RECEIVING,
    REPLAY_BUFFER,
    STATES,
    TUNNEL,
    Attempts,
)
from lb.proxy.http.connection import UpstreamConnection

log = logging.getLogger("lb.proxy")


class UpstreamCall(Attempts):
    __slots__ = ()

    # The request, from whoever makes the call ---------------------------------------------

    def start(self) -> None:
        self.pool.budget.record(self.session.started)  # the share retries may take
        self._connect()

    def send_body(self, data: bytes) -> None:
        self.body_bytes += len(data)
        upstream = self.upstream
        body = self.body
        if body is None:  # streaming: nothing kept
            if upstream is not None and upstream.transport is not None:
                upstream.transport.write(encode_chunk(data) if self.chunked else data)
                upstream.expire_in(self.timeout)
            return
        body.append(data)
        self.body_buffered += len(data)
        if upstream is not None and upstream.transport is not None:
            upstream.transport.write(encode_chunk(data) if self.chunked else data)
            if self.body_buffered > REPLAY_BUFFER:
                self.body = None  # too large to send twice: no more retries
        elif self.body_buffered > CONNECT_BUFFER:
            self._pause_source()

    def end_body(self) -> None:
        self.request_done = True
        upstream = self.upstream
        if self.chunked and upstream is not None and upstream.transport is not None:
            upstream.transport.write(LAST_CHUNK)

    def tunnel_send(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.write(data)
            upstream.expire_in(self.tunnel_timeout)

    def tunnel_eof(self) -> bool:
        """The client half-closed a tunnel: passed on. False when it cannot be (close)."""
        upstream = self.upstream
        transport = upstream.transport if upstream is not None else None
        if transport is not None and transport.can_write_eof():
            transport.write_eof()
            return True
        return False

    def pause_response(self) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.pause_reading()

    def resume_response(self) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.resume_reading()

    def cancel(self) -> None:
        """Whoever made the call no longer wants its answer (the client left, or was answered
        otherwise): its connection is dropped, its slot and its place in line given back."""
        if self.state == DONE:
            return
        self.state = DONE
        self._drop_upstream()
        if self.queued is not None:
            waiting = self.pool.waiting
            if waiting is not None:
                waiting.remove(self)
        self._free_slot()

    # The response, from the connection's parser --------------------------------------------

    def on_response_head(self, head: ResponseHead) -> None:
        status = head.status
        session = self.session
        req = session.head
        assert req is not None
        if status < 200:
            if status == 101 and self.wants_tunnel:
                self._open_tunnel(head)
            elif req.version == "1.1":
                self.informed = True
                self.sink.call_informational(head)
            return
        if (
            status in self.retry.statuses
            and req.method in IDEMPOTENT
            and self._retry_status(status)
        ):
            return  # its answer discarded, the request went to another server
        self.state = RECEIVING
        passive = self.pool.passive  # passive health checks
        if passive is not None and self.server is not None:
            passive.observe(self.server.state, status >= 500)
        upstream = self.upstream
        if upstream is not None:
            upstream.expire_in(self.timeout)
        self.keep_alive = head.keep_alive
        self.sink.call_head(head)

    def on_response_body(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is not None:
            upstream.expire_in(self.timeout)
        self.sink.call_body(data)

    def on_response_end(self) -> None:
        upstream = self.upstream
        self.upstream = None
        self.state = DONE
        if upstream is not None:
            if self.source_paused:
                self._resume_source()  # that socket's full buffer is no reason now
            if self.request_done and self.keep_alive:
                upstream.release()  # (or closed, if it turns out not to be usable)
            else:
                upstream.close()
        self._free_slot()
        self.sink.call_end()

    # Upgrades (WebSocket and others): after 101 the call is a byte tunnel -------------------

    def _open_tunnel(self, head: ResponseHead) -> None:
        self.state = TUNNEL
        upstream = self.upstream
        if upstream is not None:
            upstream.expire_in(self.tunnel_timeout)
        self.sink.call_tunnel(head)

    def on_upgrade_data(self, data: bytes) -> None:  # parser delegate, after a 101
        upstream = self.upstream
        if upstream is not None:
            upstream.expire_in(self.tunnel_timeout)
        self.sink.call_tunnel_data(data)

    # The connection's signals --------------------------------------------------------------

    def upstream_pause_writing(self) -> None:
        self._pause_source()

    def upstream_resume_writing(self) -> None:
        self._resume_source()

    def upstream_failed(self, upstream: UpstreamConnection, detail: str, timeout: bool) -> None:
        """The server connection broke or timed out while this call used it."""
        if upstream is not self.upstream:
            return
        self._drop_upstream()
        server = self.server
        address = server.address if server is not None else "-"
        session = self.session
        if self.state == TUNNEL:
            self.state = DONE
            self._free_slot()
            if timeout:
                log.info("closing tunnel from %s to %s: idle", session.client_ip, address)
                detail = "tunnel idle past timeouts.tunnel"
            self.sink.call_tunnel_closed(detail)
            return
        if self.state == RECEIVING:
            log.warning("server %s failed mid-response: %s", address, detail)
            self.state = DONE
            self._free_slot()
            self.sink.call_broken(f"server {address}: {detail}")
            return
        if timeout and not self.request_done:
            self._fail(Reason.request_timeout, "request body not received in time")
            return
        head = session.head
        assert head is not None
        # Nothing reached the sink yet. A kept-alive connection that was closed under us (the
        # server timed it out as we reused it) is retried once on a new one, if the request
        # can be sent again unchanged (RFC 9112 §9.3.1).
        if (
            upstream.reused
            and not timeout
            and self.body is not None
            and head.method in IDEMPOTENT  # RFC 9112 §9.3.1: never resend a POST on our own
            and not self.informed
            and server is not None
        ):
            # The same server is fine: it is alive, only that socket was not.
            self._free_slot()
            self._connect(fresh=True)
            return
        log.warning("server %s failed before answering: %s", address, detail)
        if self.pool.passive is not None and server is not None:
            self.pool.passive.observe(server.state, True)  # passive health checks
        if not timeout and server is not None and head.method in IDEMPOTENT:
            # Reset or closed before any response byte: an idempotent request may go to
            # another server (a timeout may be a slow answer on its way: never retried).
            self.excluded |= {server.state}
            if self._may_retry(self.retry.connect_failure):
                self._free_slot()
                self._connect()
                return
        self._fail(
            Reason.backend_timeout if timeout else Reason.backend_failed,
            f"server {address}: {detail}",
        )

    def __repr__(self) -> str:
        head = self.session.head
        what = f"{head.method} {head.path}" if head is not None else "-"
        return f"<UpstreamCall {what} pool={self.pool.name} {STATES[self.state]}>"
