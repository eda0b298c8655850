"""Discovery: server addresses given as names, resolved and re-resolved (pool `resolve_interval`).

Each worker resolves for itself (through `lb.proxy.pool.resolve`, or the `resolve` callable a test
injects), never per request: every name once when the worker starts (before it listens) and
when a reload brings a name it has not resolved yet, then every `resolve_interval` for the
pools that set one. `PoolRuntime.set_resolved` applies an answer: an address that appears
becomes a server of its own (`NAME:PORT (IP)`, weight and backup from its configured entry),
one that vanished is drained (its requests in flight finish) and dropped. A failed lookup
keeps the servers of the last good one; a name never resolved connects by name meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from lb.config.base import split_address
from lb.proxy.pool.resolve import is_ip, resolve

if TYPE_CHECKING:
    from lb.proxy.pool.pool import PoolRuntime
    from lb.proxy.runtime import Runtime

log = logging.getLogger("lb.discovery")

Resolve = Callable[[str, int], Awaitable[list[str]]]
LOOKUP_TIMEOUT = 5.0  # seconds for one name: a slow DNS server must not hold a start


class Discovery:
    def __init__(self, resolve: Resolve = resolve) -> None:
        self.resolve = resolve
        self.runtime: Runtime | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, runtime: Runtime) -> None:
        """Resolve every name of `runtime` once, then keep re-resolving in the background."""
        self.runtime = runtime
        for pool in runtime.pools.values():
            await self.refresh(runtime, pool)
        self._schedule(runtime, first=False)

    def reload(self, runtime: Runtime) -> None:
        """A new runtime: names it shares with the old one keep their servers (PoolRuntime
        carries them over); names new to it are resolved now, in the background."""
        self.stop()
        self.runtime = runtime
        self._schedule(runtime, first=True)

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks = []

    def _schedule(self, runtime: Runtime, first: bool) -> None:
        loop = asyncio.get_running_loop()
        for pool in runtime.pools.values():
            if not any(not is_ip(split_address(a)[0]) for a in pool.members):
                continue
            interval = pool.config.resolve_interval
            if first or interval is not None:
                self._tasks.append(loop.create_task(self._run(runtime, pool, interval, first)))

    async def _run(
        self, runtime: Runtime, pool: PoolRuntime, interval: float | None, first: bool
    ) -> None:
        if first:
            await self.refresh(runtime, pool, only_new=True)
        while interval is not None:
            await asyncio.sleep(interval)
            await self.refresh(runtime, pool)

    async def refresh(self, runtime: Runtime, pool: PoolRuntime, only_new: bool = False) -> None:
        """Resolve `pool`'s names and apply the answers; `only_new`: only names never
        resolved in this worker yet."""
        for address in list(pool.members):
            host, port = split_address(address)
            if is_ip(host):
                continue
            if only_new and any(s.host != host for s in pool.members.get(address, ())):
                continue
            try:
                async with asyncio.timeout(LOOKUP_TIMEOUT):
                    ips = await self.resolve(host, port)
            except (OSError, TimeoutError) as err:
                log.warning(
                    "server %s in pool %s: cannot resolve %s (%s); keeping its servers",
                    address,
                    pool.name,
                    host,
                    err or "timed out",
                )
                continue
            before = [s.host for s in pool.members.get(address, ())]
            if pool.set_resolved(address, ips):
                log.info(
                    "server %s in pool %s resolves to %s (was %s)",
                    address,
                    pool.name,
                    ", ".join(ips),
                    ", ".join(before) or "-",
                )
                runtime.servers_changed(pool)
