"""A queue's config (`queues.NAME`) as what the job store and the filters need of it."""

from __future__ import annotations

from lb.config.queues import Queue
from lb.core.http import RequestHead
from lb.core.offload import owner_hash
from lb.stores.base import QueuePolicy


def queue_policy(queue: Queue) -> QueuePolicy:
    return QueuePolicy(
        max_length=queue.max_length,
        max_attempts=queue.max_attempts,
        ack_timeout=queue.ack_timeout,
        result_ttl=queue.result_ttl,
        idempotency_ttl=queue.idempotency_ttl,
    )


def request_owner(name: str, queue: Queue, head: RequestHead) -> str | None:
    """The owner (a hash of the credential `owner: header:NAME | cookie:NAME` names) of a
    request to queue `name`; None when the queue has no `owner` or the request carries none."""
    if queue.owner is None:
        return None
    kind, _, field = queue.owner.partition(":")
    if kind == "header":
        value = head.index.get(field.lower().encode("latin-1"))
    else:
        cookie = head.cookie(field)
        value = cookie.encode("latin-1") if cookie is not None else None
    return owner_hash(name, value)
