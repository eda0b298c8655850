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

import json
import time

from lb.config.queues import Queue
from lb.core.errors import Reason
from lb.core.offload import (
    StoredRequest,
    accepted_document,
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
from lb.stores.errors import QueueFull, StoreUnavailable

RETRY_AFTER_FULL = b"5"  # seconds: a full queue drains at the pace of its workers
RETRY_AFTER_DOWN = b"2"  # Redis comes back on its own; the probe runs every second or so


class Offload(Filter):
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
        return self._accept(session)

    def on_wait_timeout(self, session: Session) -> Answer | None:
        return Answer.refuse(
            Reason.request_timeout, f"request body not received within {self.wait_timeout:g}s"
        )

    async def _accept(self, session: Session) -> Answer:
        head = session.head
        assert head is not None
        limit = self.queue.max_body_size
        try:
            body = await session.read_body(limit)
        except BodyTooLarge:
            return Answer.refuse(
                Reason.body_too_large,
                f"body over queue {self.queue_name}'s max_body_size ({limit})",
            )
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
        try:
            queued = await self.services.stores.jobs.enqueue(
                self.queue_name,
                stored.encode(),
                self.policy,
                idempotency_key=idempotency_scope(self.route, owner, key) if key else None,
                fingerprint=fingerprint(head.method, head.target, body) if key else "",
                owner=owner,
            )
        except QueueFull:
            self.counts["rejected_full"].inc()
            answer = Answer.refuse(
                Reason.queue_full,
                f"queue {self.queue_name} holds its max_length of {self.queue.max_length} jobs",
            )
            answer.fields.append((b"retry-after", RETRY_AFTER_FULL))
            return answer
        except StoreUnavailable as e:
            self.counts["unavailable"].inc()
            answer = Answer.refuse(
                Reason.queue_unavailable, f"queue {self.queue_name} cannot be reached: {e}"
            )
            answer.fields.append((b"retry-after", RETRY_AFTER_DOWN))
            return answer
        if queued.conflict:
            return Answer.refuse(
                Reason.idempotency_conflict,
                "this Idempotency-Key was used for a different request (method, target or body)",
            )
        self.counts["accepted" if queued.created else "duplicate"].inc()
        document = accepted_document(queued.id)
        return Answer(
            202,
            b"Accepted",
            [
                (b"content-type", b"application/json"),
                (b"location", document["location"].encode()),
                (b"retry-after", b"1"),
            ],
            json.dumps(document).encode() + b"\n",
        )

    def __repr__(self) -> str:
        return f"<Offload route={self.route} queue={self.queue_name}>"


def build(ctx: BuildContext) -> Filter | None:
    route = ctx.route
    if route is None or route.name is None:
        return None
    config_route = next((r for r in ctx.config.routes if r.name == route.name), None)
    if config_route is None or config_route.offload is None:
        return None
    offload = config_route.offload
    queue = ctx.config.queues[offload.queue]
    return Offload(
        route.name, offload.queue, queue, offload.mode, ctx.services, route.timeouts.request
    )
