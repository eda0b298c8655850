"""`/_lb/jobs/{id}`: what became of an offloaded request, on every http listener.

In every chain of a config with `queues` (the chain of requests no route matches too), right
after the https redirect, so it answers whichever route the path would match: the job URL
belongs to lb, not to a backend. A request for another path costs one `startswith`.

- GET (or HEAD): while the job is not done, 200 and its status as JSON (queued, running,
  retrying with its attempt and the last failure, failed with its reason, cancelled), with
  Retry-After while it may still change; once done, the stored response itself (its status,
  headers and body) with `X-LB-Job: {id}`. Unknown, or finished longer than `result_ttl`
  ago: 404 job_not_found.
- DELETE: cancels a job no worker has started (200 and its status), else 409.

A job stored with an owner (`queues.NAME.owner`) answers only to the same credential; to
anyone else it does not exist (404, the same answer as an unknown id).
"""

from __future__ import annotations

import json

from lb.config.schema import Config
from lb.core.errors import Reason
from lb.core.offload import (
    JOBS_PREFIX,
    EnvelopeError,
    StoredResponse,
    job_id_from_path,
    retry_after,
    status_document,
)
from lb.filters.context import BuildContext, Services
from lb.metrics import QUEUE_JOBS
from lb.offload.policy import queue_policy, request_owner
from lb.proxy.http.pipeline import Answer, Filter, RequestResult
from lb.proxy.http.session import Session
from lb.stores.base import JobRecord, JobStatus
from lb.stores.errors import StoreUnavailable

_PREFIX = JOBS_PREFIX.encode()


class JobsEndpoint(Filter):
    name = "jobs"
    wait_timeout = 5.0  # one store call, which has its own (shorter) timeout

    def __init__(self, config: Config, services: Services) -> None:
        self.queues = config.queues
        self.services = services

    def on_request(self, session: Session) -> RequestResult:
        head = session.head
        assert head is not None
        if not head.target.startswith(_PREFIX):
            return None
        job_id = job_id_from_path(head.path)
        if job_id is None:
            return Answer.refuse(Reason.job_not_found, "no such job URL: /_lb/jobs/{id}")
        if head.method in ("GET", "HEAD"):
            return self._get(session, job_id)
        if head.method == "DELETE":
            return self._delete(session, job_id)
        return Answer(
            405,
            b"Method Not Allowed",
            [(b"allow", b"GET, HEAD, DELETE"), (b"content-type", b"text/plain; charset=utf-8")],
            b"405 Method Not Allowed: a job URL takes GET, HEAD or DELETE\n",
        )

    def on_wait_timeout(self, session: Session) -> Answer | None:
        return Answer.refuse(Reason.queue_unavailable, "the job store did not answer in time")

    async def _record(self, session: Session, job_id: str) -> JobRecord | Answer:
        try:
            record = await self.services.stores.jobs.get(job_id)
        except StoreUnavailable as e:
            answer = Answer.refuse(
                Reason.queue_unavailable, f"the job store cannot be reached: {e}"
            )
            answer.fields.append((b"retry-after", b"2"))
            return answer
        if record is None or not self._owns(session, record):
            return Answer.refuse(
                Reason.job_not_found,
                f"no job {job_id}: unknown, or finished longer ago than its queue's result_ttl",
            )
        return record

    def _owns(self, session: Session, record: JobRecord) -> bool:
        if record.owner is None:
            return True
        queue = self.queues.get(record.queue)
        if queue is None:  # its queue left the config: its owner cannot be checked
            return False
        assert session.head is not None
        return request_owner(record.queue, queue, session.head) == record.owner

    async def _get(self, session: Session, job_id: str) -> Answer:
        record = await self._record(session, job_id)
        if isinstance(record, Answer):
            return record
        if record.status is JobStatus.DONE and record.result is not None:
            try:
                response = StoredResponse.decode(record.result)
            except EnvelopeError as e:
                return Answer.refuse(Reason.backend_failed, f"job {job_id}'s result: {e}")
            return Answer(
                response.status,
                response.reason,
                [*response.headers, (b"x-lb-job", job_id.encode())],
                response.body,
            )
        return _status(record)

    async def _delete(self, session: Session, job_id: str) -> Answer:
        record = await self._record(session, job_id)
        if isinstance(record, Answer):
            return record
        queue = self.queues.get(record.queue)
        if queue is None:
            return _status(record, 409)
        try:
            cancelled = await self.services.stores.jobs.cancel(job_id, queue_policy(queue))
            after = await self.services.stores.jobs.get(job_id)
        except StoreUnavailable as e:
            return Answer.refuse(Reason.queue_unavailable, f"the job store cannot be reached: {e}")
        if cancelled:
            QUEUE_JOBS.labels(record.queue, "cancelled").inc()
        return _status(after or record, 200 if cancelled else 409)


def _status(record: JobRecord, code: int = 200) -> Answer:
    document = status_document(
        record.id,
        record.status.value,
        record.attempt,
        record.reason,
        record.created_at,
        record.updated_at,
    )
    fields = [(b"content-type", b"application/json"), (b"x-lb-job", record.id.encode())]
    wait = retry_after(record.status.value)
    if wait:
        fields.append((b"retry-after", str(wait).encode()))
    reason = {200: b"OK", 409: b"Conflict"}[code]
    return Answer(code, reason, fields, json.dumps(document).encode() + b"\n")


def build(ctx: BuildContext) -> Filter | None:
    if not ctx.config.queues:
        return None
    return JobsEndpoint(ctx.config, ctx.services)
