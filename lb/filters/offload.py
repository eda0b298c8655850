"""`offload: {queue, mode}` on a route: the request is stored as a job and answered 202.

The whole request (head after hop-by-hop removal, body, client address, scheme, route) is in
the queue before the 202 goes out, so a client that got one has a job that a worker will run
(lb.offload). The body is read whole first (`reads_body`), bounded by the queue's
`max_body_size`. With `mode: prefer` only requests with `Prefer: respond-async` (RFC 7240) are
offloaded; the others are proxied as usual.

An `Idempotency-Key` (per route and owner) maps every repeat to the same job and the same
202; a repeat with another method, target or body gets 422. Over `max_length`: 503
queue_full; the queue's store (Redis) down: 503 queue_unavailable. Only this route is
affected: every other route keeps proxying.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable

from lb.config.queues import Queue
from lb.core.errors import Reason
from lb.core.offload import (
    JOBS_PREFIX,
    StoredRequest,
    accepted_body,
    end_to_end,
    fingerprint,
    idempotency_scope,
    wants_async,
)
from lb.filters.context import BuildContext, Services
from lb.metrics import QUEUE_JOBS
from lb.offload.policy import queue_policy, request_owner
from lb.proxy.http.pipeline import Answer, Filter, RequestResult
from lb.proxy.http.session import BodyTooLarge, Session
from lb.stores.base import Enqueued
from lb.stores.errors import QueueFull, StoreUnavailable

log = logging.getLogger("lb.offload")

RETRY_AFTER_FULL = b"5"  # seconds: a full queue drains at the pace of its workers
RETRY_AFTER_DOWN = b"2"  # Redis comes back on its own; the probe runs every second or so


class OffloadRequests(Filter):
    name = "offload"
    reads_body = True

    def __init__(
        self, route: str, queue_name: str, queue: Queue, mode: str, services: Services, wait: float
    ) -> None:
        self.route = route
        self.queue_name = queue_name
        self.queue = queue
        self.policy = queue_policy(queue)
        self.prefer_only = mode == "prefer"
        self.services = services
        self.wait_timeout = wait  # reading the body, then one store call
        self.counts = {
            outcome: QUEUE_JOBS.labels(queue_name, outcome)
            for outcome in ("accepted", "duplicate", "rejected_full", "unavailable")
        }

    def on_request(self, session: Session) -> RequestResult:
        head = session.head
        assert head is not None
        if self.prefer_only and not wants_async(head.index.get(b"prefer")):
            return None
        limit = self.queue.max_body_size
        if head.content_length is not None and head.content_length > limit:
            return Answer.refuse(
                Reason.body_too_large,
                f"body of {head.content_length} bytes over queue {self.queue_name}'s "
                f"max_body_size ({limit})",
            )
        # Callbacks, not a coroutine: the body (usually here already), then the store's
        # enqueue (a future already on its way with Redis), then the answer; a task per
        # request cost more than the rest of this filter at thousands of 202s a second.
        answer: asyncio.Future[Answer | None] = asyncio.get_running_loop().create_future()
        body = asyncio.ensure_future(session.read_body(limit))  # (a future: as it is)
        if body.done():
            self._store(session, answer, body)
        else:
            body.add_done_callback(functools.partial(self._store, session, answer))
        return answer

    def on_wait_timeout(self, session: Session) -> Answer | None:
        return Answer.refuse(
            Reason.request_timeout, f"request body not received within {self.wait_timeout:g}s"
        )

    def _store(
        self, session: Session, answer: asyncio.Future[Answer | None], body: asyncio.Future[bytes]
    ) -> None:
        """The body is here (or over the limit): queue the job."""
        if answer.done():
            return  # the exchange stopped waiting (wait_timeout, or the client left)
        if body.cancelled():
            answer.cancel()
            return
        error = body.exception()
        if isinstance(error, BodyTooLarge):
            answer.set_result(
                Answer.refuse(
                    Reason.body_too_large,
                    f"body over queue {self.queue_name}'s max_body_size "
                    f"({self.queue.max_body_size})",
                )
            )
            return
        if error is not None:
            self._failed(answer, error)
            return
        try:
            queued = asyncio.ensure_future(self._enqueue(session, body.result()))
        except Exception as e:
            self._failed(answer, e)
            return
        queued.add_done_callback(functools.partial(self._answer, answer))

    def _enqueue(self, session: Session, body: bytes) -> Awaitable[Enqueued]:
        head = session.head
        assert head is not None
        owner = request_owner(self.queue_name, self.queue, head)
        key = head.index.get(b"idempotency-key")
        stored = StoredRequest(
            route=self.route,
            method=head.method,
            target=head.target,
            headers=end_to_end(head.headers),
            body=body,
            client_ip=session.client_ip,
            proto=session.proto,
            request_id=session.request_id,
            created=time.time(),
        )
        return self.services.stores.jobs.enqueue(
            self.queue_name,
            stored.encode(),
            self.policy,
            idempotency_key=idempotency_scope(self.route, owner, key) if key else None,
            fingerprint=fingerprint(head.method, head.target, body) if key else "",
            owner=owner,
        )

    def _answer(
        self, answer: asyncio.Future[Answer | None], queued: asyncio.Future[Enqueued]
    ) -> None:
        """The store answered: 202, or why not."""
        if answer.done():
            return  # the exchange stopped waiting
        if queued.cancelled():
            answer.cancel()
            return
        error = queued.exception()
        if error is None:
            answer.set_result(self._accepted(queued.result()))
        elif isinstance(error, QueueFull):
            self.counts["rejected_full"].inc()
            refusal = Answer.refuse(
                Reason.queue_full,
                f"queue {self.queue_name} holds its max_length of {self.queue.max_length} jobs",
            )
            refusal.fields.append((b"retry-after", RETRY_AFTER_FULL))
            answer.set_result(refusal)
        elif isinstance(error, StoreUnavailable):
            self.counts["unavailable"].inc()
            refusal = Answer.refuse(
                Reason.queue_unavailable, f"queue {self.queue_name} cannot be reached: {error}"
            )
            refusal.fields.append((b"retry-after", RETRY_AFTER_DOWN))
            answer.set_result(refusal)
        else:
            self._failed(answer, error)

    def _failed(self, answer: asyncio.Future[Answer | None], error: BaseException) -> None:
        """An error the store did not name (a bug, a malformed reply): the job was not stored,
        so the client hears 503 queue_unavailable. Never proxied instead: an offloaded route's
        requests are too slow, or too unsafe to repeat, to run while the client waits."""
        log.error("offload to queue %s failed: %r", self.queue_name, error, exc_info=error)
        self.counts["unavailable"].inc()
        refusal = Answer.refuse(
            Reason.queue_unavailable, f"queue {self.queue_name} failed to store the job: {error}"
        )
        refusal.fields.append((b"retry-after", RETRY_AFTER_DOWN))
        answer.set_result(refusal)

    def _accepted(self, queued: Enqueued) -> Answer:
        if queued.conflict:
            return Answer.refuse(
                Reason.idempotency_conflict,
                "this Idempotency-Key was used for a different request (method, target or body)",
            )
        self.counts["accepted" if queued.created else "duplicate"].inc()
        return Answer(
            202,
            b"Accepted",
            [
                (b"content-type", b"application/json"),
                (b"location", (JOBS_PREFIX + queued.id).encode()),
                (b"retry-after", b"1"),
            ],
            accepted_body(queued.id),
        )

    def __repr__(self) -> str:
        return f"<OffloadRequests route={self.route} queue={self.queue_name}>"


def build(ctx: BuildContext) -> Filter | None:
    route = ctx.route
    if route is None or route.name is None:
        return None
    config_route = next((r for r in ctx.config.routes if r.name == route.name), None)
    if config_route is None or config_route.offload is None:
        return None
    offload = config_route.offload
    queue = ctx.config.queues[offload.queue]
    return OffloadRequests(
        route.name, offload.queue, queue, offload.mode, ctx.services, route.timeouts.request
    )
