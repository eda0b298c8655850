"""Queue offload without Redis: the consumers run inside each `lb run` worker, so the
shipped config and `lb demo` offload with nothing else to run. With `redis:` configured they do
not: `lb worker` processes consume the shared queues.

Under `lb run` the workers share one job directory (lb.stores.file_jobs): any worker runs any
job, a job URL answers on every worker's connections, a job whose worker died is taken over
by another (or by its replacement), and the supervisor publishes the `lb_queue_*` gauges and
replays dead letters. The jobs live as long as that `lb run` (its run directory). A `Proxy`
alone in its process (tests, embedding) has its own in-memory queue, and publishes its gauges
itself. Configure `redis:` for jobs that outlive lb and are shared across machines.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, Protocol

from lb.offload.consumer import ConsumerHost, Consumers
from lb.offload.stats import publish_forever


class OffloadOwner(ConsumerHost, Protocol):
    """The `Proxy` whose in-process queues these consumers serve."""

    def _background(self, coro: Coroutine[Any, Any, None]) -> None: ...


class InProcessOffload:
    def __init__(self, proxy: OffloadOwner) -> None:
        self.proxy = proxy
        self.consumers: Consumers | None = None
        self.stats: asyncio.Task[None] | None = None

    def sync(self) -> None:
        """At start and after each reload: consume the config's queues, unless they are on
        Redis (or there are none)."""
        proxy = self.proxy
        wanted = bool(proxy.runtime.config.queues) and proxy.stores.redis is None
        if wanted:
            if self.consumers is None:
                self.consumers = Consumers(proxy)
            self.consumers.start()
            if self.stats is None and proxy.stores.jobs_dir is None:  # (else: the supervisor)
                jobs = proxy.stores.jobs
                self.stats = asyncio.ensure_future(
                    publish_forever(lambda: (jobs, list(proxy.runtime.config.queues)))
                )
        elif self.consumers is not None or self.stats is not None:
            proxy._background(self.stop(proxy.runtime.config.defaults.shutdown_grace))

    async def stop(self, grace: float) -> None:
        consumers, self.consumers = self.consumers, None
        stats, self.stats = self.stats, None
        if stats is not None:
            stats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stats
        if consumers is not None:
            await consumers.stop(grace)
