"""Active health checks, the I/O: the probes, and one task per server that runs them.

The decisions are in `lb.core.health`. A tcp check is a connect; an http check is a GET on a
fresh connection, read up to the status line. A pool with `tls` is probed as the proxy connects
to it: the TLS handshake, verified as the pool says, is part of both kinds of check, so a server
whose certificate lb would refuse is DOWN.

`ActiveChecker` probes each checked server on its interval, counts passes and failures against
the rise/fall thresholds, logs each transition once and hands it to its owner: the supervisor's
`HealthPublisher` under `lb run` (lb.proxy.health.channel), or a worker's own `LocalHealth`
(lb.proxy.health.checker). A reload keeps the verdicts and counters of servers still in the config
(counters restart when the pool's check changed).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from lb.config.base import split_address
from lb.config.schema import Config
from lb.config.tls import PoolTls
from lb.core.health import ActiveCheck, HealthCounter, active_checks
from lb.proxy.pool.resolve import resolve
from lb.proxy.tls.contexts import client_context, pool_server_name

log = logging.getLogger("lb.health")

MAX_STATUS_LINE = 8192


# -- probes -------------------------------------------------------------------------------------


async def probe(
    host: str,
    port: int,
    check: ActiveCheck,
    address: str,
    tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> tuple[bool, str]:
    """One check of one server: (passed, what was seen), never raising. With `tls` (the
    pool's client context) the connection does the TLS handshake first, as the proxy's do."""
    try:
        async with asyncio.timeout(check.timeout):
            host = (await resolve(host, port))[0]  # a name: as the proxy resolves it
            reader, writer = await asyncio.open_connection(
                host,
                port,
                limit=MAX_STATUS_LINE,
                ssl=tls,
                server_hostname=server_hostname if tls is not None else None,
            )
            try:
                if check.kind == "tcp":
                    return True, "TLS handshake done" if tls is not None else "connected"
                return await _http_probe(reader, writer, check, address)
            finally:
                writer.close()
    except TimeoutError:
        return False, f"timed out after {check.timeout:g}s"
    except ConnectionRefusedError:
        return False, "connect refused"
    except ssl.SSLCertVerificationError as err:
        return False, f"TLS certificate refused: {err.verify_message or err.reason}"
    except ssl.SSLError as err:
        return False, f"TLS handshake failed: {err.reason or err}"
    except OSError as err:
        return False, f"connect failed: {err.strerror or err}"
    except Exception as err:  # a probe must never kill its task
        return False, f"check failed: {err!r}"


async def _http_probe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, check: ActiveCheck, address: str
) -> tuple[bool, str]:
    writer.write(
        (
            f"GET {check.path} HTTP/1.1\r\nHost: {check.host or address}\r\n"
            "User-Agent: lb-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")
    )
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError:
        return False, "server closed the connection before answering"
    except asyncio.LimitOverrunError:
        return False, "not an HTTP response (status line too long)"
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return False, f"not an HTTP response: {line[:40]!r}"
    status = int(parts[1])
    if check.status_ok(status):
        return True, f"status {status}"
    return False, f"status {status}, expected {check.describe_expected()}"


# -- active checker: one task per (pool, server) ----------------------------------------------


@dataclass(eq=False)
class Target:
    pool: str
    address: str
    host: str
    port: int
    check: ActiveCheck
    counter: HealthCounter
    detail: str = "not checked yet"
    tls: ssl.SSLContext | None = None  # the pool's `tls`, as the proxy connects
    server_hostname: str | None = None


Key = tuple[str, str]  # (pool, server address)


class ActiveChecker:
    """Probes every actively checked server of a config on its interval; calls `on_change`
    with each transition, which it logs once."""

    def __init__(self, on_change: Callable[[Target, bool], None]) -> None:
        self.on_change = on_change
        self.targets: dict[Key, Target] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # Pool name -> its `tls` and the client context built from it (kept while unchanged).
        self._tls: dict[str, tuple[PoolTls, ssl.SSLContext]] = {}

    def set_config(self, config: Config) -> None:
        """(Re)start the probes for `config`, keeping what is known of the servers it shares
        with the previous one."""
        targets: dict[Key, Target] = {}
        contexts: dict[str, tuple[PoolTls, ssl.SSLContext]] = {}
        for pool_name, check in active_checks(config).items():
            pool_tls = config.pools[pool_name].tls
            tls = None
            if pool_tls is not None:
                kept = self._tls.get(pool_name)
                tls = (
                    kept[1]
                    if kept is not None and kept[0] == pool_tls
                    else client_context(pool_tls)
                )
                contexts[pool_name] = (pool_tls, tls)
            for server in config.pools[pool_name].servers:
                key = (pool_name, server.address)
                old = self.targets.get(key)
                if old is not None and old.check == check:
                    counter = old.counter
                else:
                    counter = HealthCounter(
                        check.healthy_threshold,
                        check.unhealthy_threshold,
                        up=old.counter.up if old is not None else True,
                        confirmed=old.counter.confirmed if old is not None else False,
                    )
                host, port = split_address(server.address)
                target = Target(pool_name, server.address, host, port, check, counter)
                if pool_tls is not None:
                    target.tls = tls
                    target.server_hostname = pool_server_name(pool_tls, server.address)
                if old is not None:
                    target.detail = old.detail
                targets[key] = target
        self.stop()
        self.targets = targets
        self._tls = contexts
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(t)) for t in targets.values()]

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks = []

    async def _run(self, target: Target) -> None:
        loop = asyncio.get_running_loop()
        check = target.check
        while True:
            started = loop.time()
            ok, detail = await probe(
                target.host,
                target.port,
                check,
                target.address,
                target.tls,
                target.server_hostname,
            )
            target.detail = detail
            change = target.counter.observe(ok)
            if change is not None:
                if change.up:
                    word = "pass" if change.checks == 1 else "passes"
                    log.info(
                        "server %s in pool %s is UP: %s (%d %s)",
                        target.address,
                        target.pool,
                        detail,
                        change.checks,
                        word,
                    )
                else:
                    word = "failure" if change.checks == 1 else "failures"
                    log.warning(
                        "server %s in pool %s is DOWN: %s (%d %s)",
                        target.address,
                        target.pool,
                        detail,
                        change.checks,
                        word,
                    )
                self.on_change(target, change.up)
            await asyncio.sleep(max(0.0, check.interval - (loop.time() - started)))
