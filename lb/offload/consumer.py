"""Consumers: claim a queue's jobs, send each to its route's pool, store the result.

Theory of operation. A `Consumers` runs `concurrency` loops per queue in one process, each
`claim -> run -> complete | fail`. A run rebuilds the request from its stored envelope and
sends it with an `UpstreamCall`, the same as a client's request (the route's pool, its
balancing, health, TLS, retries to another server), to a `Collector` (lb.proxy.http.collect)
that collects the response. Then, by the queue's `retry_on` (lb.core.offload.retry_reason):

- a final answer (any status not in retry_on) is stored as the job's result (`complete`
  writes it before it acknowledges the delivery: a crash in between runs the job again, it
  never loses a result);
- a retryable one is handed back with a backoff delay (`fail(delay=)`), or to the dead
  letters once `max_attempts` runs failed;
- a job whose consumer dies mid-run is not acknowledged: after `ack_timeout` the store
  gives it to the next `claim`, here or in another process.

The store down (Redis) makes `claim` fail fast: the loop waits a little and tries again; a
result that cannot be stored is retried a few times, then left to the ack_timeout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Protocol

from lb.config.queues import Queue
from lb.core.errors import Reason
from lb.core.forwarding import request_to_server
from lb.core.http import RequestHead
from lb.core.offload import (
    EnvelopeError,
    StoredRequest,
    StoredResponse,
    backoff_delay,
    end_to_end,
    retry_reason,
)
from lb.core.router import CompiledRoute
from lb.metrics import JOB_DURATION, QUEUE_JOBS, QUEUE_LAG
from lb.offload.policy import queue_policy
from lb.proxy.http.collect import Collected, TooLarge, collect
from lb.proxy.http.session import Session
from lb.proxy.http.sink import Upstreams
from lb.stores.base import Job, QueuePolicy
from lb.stores.errors import StoreError, StoreUnavailable

if TYPE_CHECKING:
    from lb.proxy.runtime import Runtime
    from lb.stores import Stores

log = logging.getLogger("lb.offload")

MAX_RESULT = 64 * 1024 * 1024  # a response larger than this is not stored: the job fails
STORE_RETRY = 0.5  # seconds between tries while the store is down


class ConsumerHost(Upstreams, Protocol):
    """What consumers use of their process: a `Proxy`, listening or not."""

    runtime: Runtime
    stores: Stores


def _failure_kind(reason: Reason | None) -> str | None:
    """The `retry_on` name of a call that got no response (None: not retryable by kind)."""
    if reason in (Reason.backend_timeout, Reason.queue_timeout):
        return "timeout"
    if reason in (Reason.backend_failed, Reason.no_healthy_server, Reason.queue_full):
        return "connect_failure"
    return None


class Consumers:
    """The consumer loops of one process, for some or all of the config's queues."""

    def __init__(
        self, host: ConsumerHost, queues: list[str] | None = None, concurrency: int | None = None
    ) -> None:
        self.host = host
        self.only = queues  # None: every queue of the running config
        self.concurrency = concurrency  # None: each queue's own
        self.name = f"{socket.gethostname()}-{os.getpid()}"
        self.tasks: dict[str, list[asyncio.Task[None]]] = {}
        self.running: set[asyncio.Future[None]] = set()  # jobs under way
        self.stopping = False
        self._routes: tuple[object, dict[str, CompiledRoute]] = (None, {})

    def __repr__(self) -> str:
        return f"<Consumers {self.name} queues={sorted(self.tasks)}>"

    # Start, follow reloads, stop -------------------------------------------------------

    def start(self) -> None:
        """Start (or, after a reload, add and remove) the loops for the config's queues."""
        queues = self.host.runtime.config.queues
        wanted = {q for q in queues if self.only is None or q in self.only}
        for name in list(self.tasks):
            if name not in wanted:
                for task in self.tasks.pop(name):
                    task.cancel()
        for name in wanted:
            if name in self.tasks:
                continue
            count = self.concurrency or queues[name].concurrency
            self.tasks[name] = [asyncio.ensure_future(self._loop(name, i)) for i in range(count)]
            log.info("consuming queue %s with %d loops as %s", name, count, self.name)

    async def stop(self, grace: float) -> None:
        """Claim nothing more; let jobs under way finish for up to `grace` seconds; cancel the
        rest (unacknowledged, they go to another worker after their ack_timeout)."""
        self.stopping = True
        tasks = [t for ts in self.tasks.values() for t in ts]
        self.tasks = {}
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)

    # The loop --------------------------------------------------------------------------

    async def _loop(self, queue: str, index: int) -> None:
        consumer = f"{self.name}-{index}"
        while not self.stopping:
            config = self.host.runtime.config.queues.get(queue)
            if config is None:
                return  # removed by a reload
            policy = queue_policy(config)
            try:
                job = await self.host.stores.jobs.claim(queue, consumer, policy, block=1.0)
            except StoreUnavailable:
                await asyncio.sleep(STORE_RETRY)
                continue
            except StoreError as e:
                log.error("queue %s: claim failed: %s", queue, e)
                await asyncio.sleep(STORE_RETRY)
                continue
            if job is None:
                continue
            try:
                await self.run(job, config, policy)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("queue %s: job %s failed in lb itself", queue, job.id)

    async def run(self, job: Job, config: Queue, policy: QueuePolicy) -> None:
        """One run of `job`, to its result or its next attempt."""
        started = time.perf_counter()
        try:
            request = StoredRequest.decode(job.payload)
        except EnvelopeError as e:
            await self._settle(job, policy, "dead", f"unreadable job: {e}", retry=False)
            return
        if job.attempt == 1:
            QUEUE_LAG.labels(job.queue).observe(max(0.0, time.time() - request.created))
        route = self._route(request.route)
        if route is None or route.pool is None or route.pool not in self.host.runtime.pools:
            detail = f"route {request.route!r} (or its pool) is not in the running config"
            await self._settle(job, policy, "dead", detail, retry=False)
            return
        got = await self._call(request, route, config.job_timeout)
        outcome, detail, retry = self._judge(got, config)
        if outcome == "done":
            assert got.head is not None
            response = StoredResponse(
                got.head.status, got.head.reason, end_to_end(got.head.headers), got.body
            )
            await self._settle(job, policy, "done", response.encode())
        elif retry:
            last = job.attempt >= policy.max_attempts
            b = config.backoff
            delay = backoff_delay(job.attempt, b.base, b.max, b.jitter)
            await self._settle(job, policy, "dead" if last else "retried", detail, delay=delay)
        else:
            await self._settle(job, policy, "dead", detail, retry=False)
        JOB_DURATION.labels(job.queue, outcome).observe(time.perf_counter() - started)

    def _judge(self, got: Collected, config: Queue) -> tuple[str, str, bool]:
        """(outcome, why, retry?) of a finished call."""
        if got.head is None:
            if got.broken:  # cut mid-response: as a 502 would be
                detail = f"response cut short: {got.detail}"
                return "failed", detail, retry_reason(config.retry_on, status=502) is not None
            kind = _failure_kind(got.failure)
            why = f"{got.failure.name}: {got.detail}" if got.failure else got.detail
            return (
                "failed",
                why,
                kind is not None and retry_reason(config.retry_on, failure=kind) is not None,
            )
        retry = retry_reason(config.retry_on, status=got.head.status)
        if retry is not None:
            return "failed", retry, True
        return "done", "", False

    async def _call(
        self, request: StoredRequest, route: CompiledRoute, timeout: float
    ) -> Collected:
        host = self.host
        body = request.body
        headers = [*request.headers]
        head = RequestHead(request.method, request.target, "1.1", headers)
        if body or request.method in ("POST", "PUT", "PATCH"):
            head.content_length = len(body)
        session = Session(head, request.client_ip, request.proto, "offload", request.request_id)
        session.route = route
        session.pool = route.pool
        pool = host.runtime.pools[route.pool]  # type: ignore[index]  # checked by run
        data = request_to_server(head, request.client_ip, request.proto, request.request_id, False)
        timeouts = route.timeouts
        got = collect(host, pool, session, data, body, route.retry, timeouts.request, MAX_RESULT)
        try:  # (a timeout cancels the call: its server slot goes back)
            return await asyncio.wait_for(got, timeout)
        except TimeoutError:
            detail = f"no complete response within job_timeout ({timeout:g}s)"
            return Collected(None, failure=Reason.backend_timeout, detail=detail)
        except TooLarge as err:  # final: a result this large is not kept
            return Collected(None, detail=str(err))

    async def _settle(
        self,
        job: Job,
        policy: QueuePolicy,
        outcome: str,
        result_or_reason: bytes | str,
        *,
        retry: bool = True,
        delay: float = 0.0,
    ) -> None:
        """Store the outcome; while the store is down, try again for a while (the job stays
        unacknowledged meanwhile: at worst it runs again after its ack_timeout)."""
        jobs = self.host.stores.jobs
        loop = asyncio.get_running_loop()
        deadline = loop.time() + policy.ack_timeout / 2
        while True:
            try:
                if isinstance(result_or_reason, bytes):
                    await jobs.complete(job, result_or_reason, policy)
                else:
                    await jobs.fail(job, result_or_reason, policy, retry=retry, delay=delay)
                break
            except StoreUnavailable:
                if loop.time() >= deadline:
                    log.warning("job %s: the store is down; it runs again later", job.id)
                    return
                await asyncio.sleep(STORE_RETRY)
        QUEUE_JOBS.labels(job.queue, outcome).inc()
        if outcome != "done":
            log.info("job %s (queue %s) %s: %s", job.id, job.queue, outcome, result_or_reason)

    def _route(self, name: str) -> CompiledRoute | None:
        runtime = self.host.runtime
        if self._routes[0] is not runtime:
            routes: dict[str, CompiledRoute] = {}
            for listener in runtime.listeners:
                for route in runtime.router.routes(listener):
                    routes.setdefault(route.name, route)
            self._routes = (runtime, routes)
        return self._routes[1].get(name)
