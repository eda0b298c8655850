"""Health checks, the I/O shell: probes, timers, and one verdict shared by every worker.

The decisions are in `lb.core.health`; this module runs the probes (tcp: a connect; http: a GET
on a fresh connection, up to the status line), keeps the timers, and turns verdicts into
`ServerState.healthy` (which the balancers honour) and the `lb_server_up` gauge. A pool with
`tls` is probed as the proxy connects to it: the TLS handshake, verified as the pool says, is
part of both kinds of check, so a server whose certificate lb would refuse is DOWN.

Active checks run once per server, not once per worker. Under `lb run` the supervisor probes
(`HealthPublisher`): it is the one process that lives as long as lb does and already owns the
config, so worker restarts neither repeat probes nor lose state, and only it logs transitions,
once each. It writes each server's verdict as one byte (0 unknown/unchecked, 1 UP, 2 DOWN) in a
small file in its run directory, mapped with mmap, one byte per (pool, server) in config order.
The same byte carries the admin API's drain flag (`DRAINED`, bit 4, set by `lb run`'s
supervisor, which owns it across worker restarts and reloads): a worker sets `drained` on the
server's states when it sees the bit change, so all workers stop sending it new requests
within `READ_EVERY`.
The file's name carries a digest of that layout, so a worker on a different config generation
(mid-reload) never reads a byte as the wrong server's: it keeps its last states until the file
for its own layout exists. The supervisor writes the new file before it signals the reload.
Every worker (`SharedHealth`) maps the file read-only and compares it every `READ_EVERY`
seconds, applying changed bytes, so all workers agree within that delay. The directory reaches
the workers in the environment (`LB_HEALTH_DIR`). Without it (an in-process `Worker`, as in
the tests) the worker probes for itself (`LocalHealth`).

Passive checks are per worker (`PoolHealth.observe`, called by the proxy on each answer): each
worker judges from the answers it sees, with no cross-process traffic on the request path.

A reload keeps what is known: active verdicts and rise/fall counters of servers still in the
config (counters restart when the pool's check changed), and passive ejections.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import mmap
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from lb.config.schema import Config, PassiveCheck, PoolTls, split_address
from lb.core.balancer import ServerState
from lb.core.health import (
    ActiveCheck,
    HealthCounter,
    OutlierDetector,
    PassivePolicy,
    active_checks,
)
from lb.metrics import SERVER_UP
from lb.proxy.resolve import resolve
from lb.proxy.tls import client_context, pool_server_name

if TYPE_CHECKING:
    from lb.proxy.runtime import PoolRuntime, Runtime

log = logging.getLogger("lb.health")

HEALTH_DIR_ENV = "LB_HEALTH_DIR"
READ_EVERY = 0.05  # seconds between a worker's reads of the shared verdicts
MAX_STATUS_LINE = 8192
UNKNOWN, UP, DOWN = 0, 1, 2
HEALTH_BITS = 0x0F
DRAINED = 0x10  # the admin API drained this server (lb.supervisor)


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


# -- per pool, in each worker: active verdict + passive ejection -> ServerState.healthy ---------


class PoolHealth:
    """The health of one pool's servers in one worker's runtime.

    `healthy` = the active verdict is UP and the server is not passively ejected. The proxy
    calls `observe()` for every answer when the pool has `passive` (through
    `PoolRuntime.passive`, None otherwise, so a pool without it pays one attribute test).
    """

    __slots__ = (
        "_group_up",
        "_groups",
        "_handle",
        "_states",
        "active_up",
        "detector",
        "name",
        "on_up",
    )

    def __init__(
        self,
        name: str,
        states: list[ServerState],
        passive: PassiveCheck | None,
        groups: dict[str, list[str]] | None = None,
    ) -> None:
        self.name = name
        self._states = {s.address: s for s in states}
        self.active_up = dict.fromkeys(self._states, True)
        # A configured address given as a name stands for one server per resolved IP
        # (lb.proxy.discovery); its active verdict applies to each: config address -> addresses.
        self._groups: dict[str, list[str]] = groups or {}
        self._group_up: dict[str, bool] = {}
        self.detector: OutlierDetector[str] | None = None
        if passive is not None:
            self.detector = OutlierDetector(PassivePolicy.from_config(passive), self._states)
        self._handle: asyncio.TimerHandle | None = None
        # Called when a server goes from DOWN to UP (the pool's slow start, lb.proxy.queue).
        self.on_up: Callable[[ServerState], None] | None = None

    def set_active(self, address: str, up: bool) -> None:
        """The active verdict of configured server `address` (all its resolved servers)."""
        members = self._groups.get(address)
        if members is None:
            members = [address]
        else:
            self._group_up[address] = up
        for member in members:
            if self.active_up.get(member, up) != up:
                self.active_up[member] = up
                self._apply(member)

    def set_servers(self, states: list[ServerState], groups: dict[str, list[str]]) -> None:
        """The pool's servers changed (a name resolved differently): keep what is known of
        the servers that stay; a new one starts with its configured server's verdict."""
        self._states = {s.address: s for s in states}
        self._groups = groups
        group_of = {m: g for g, members in groups.items() for m in members}
        self.active_up = {
            a: self.active_up.get(a, self._group_up.get(group_of.get(a, a), True))
            for a in self._states
        }
        if self.detector is not None:
            detector = OutlierDetector(self.detector.policy, self._states)
            detector.carry_over(self.detector)
            self.detector = detector
        for address in self._states:
            self._apply(address)

    def observe(self, state: ServerState, failed: bool) -> None:
        """One answer of `state`'s server: failed is a connect failure, a failure before the
        response head, or a 5xx."""
        detector = self.detector
        if detector is None:
            return
        if not failed:
            detector.success(state.address)
            return
        ejection = detector.failure(state.address, time.monotonic())
        if ejection is None:
            return
        policy = detector.policy
        if not ejection.ejected:
            log.warning(
                "server %s in pool %s not ejected after %d failures in a row: %d of %d servers "
                "are out already (max_ejected_percent %d)",
                state.address,
                self.name,
                ejection.failures,
                detector.ejected_count,
                len(self._states),
                policy.max_ejected_percent,
            )
            return
        log.warning(
            "server %s in pool %s ejected for %gs: %d failures in a row (ejection %d)",
            state.address,
            self.name,
            ejection.duration,
            ejection.failures,
            ejection.ejections,
        )
        self._apply(state.address)
        self._schedule()

    def _readmit(self) -> None:
        self._handle = None
        assert self.detector is not None
        for address in self.detector.readmit(time.monotonic()):
            log.info("server %s in pool %s is back from ejection", address, self.name)
            self._apply(address)
        self._schedule()

    def _schedule(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        when = self.detector.next_readmit() if self.detector is not None else None
        if when is not None:
            delay = max(0.0, when - time.monotonic())
            self._handle = asyncio.get_running_loop().call_later(delay, self._readmit)

    def _apply(self, address: str) -> None:
        state = self._states[address]
        detector = self.detector
        healthy = self.active_up[address] and not (
            detector is not None and detector.is_ejected(address)
        )
        if healthy != state.healthy:
            state.healthy = healthy
            SERVER_UP.labels(self.name, address).set(1 if healthy else 0)
            if healthy and self.on_up is not None:
                self.on_up(state)

    def publish(self) -> None:
        """Set the gauge of every server (at start, or when the pool became checked)."""
        for address, state in self._states.items():
            SERVER_UP.labels(self.name, address).set(1 if state.healthy else 0)

    def carry_over(self, old: PoolHealth, active: bool) -> None:
        """After a reload: take the old pool's passive ejections, and its active verdicts
        when this pool is still actively checked."""
        if active:
            for address, up in old.active_up.items():
                if address in self.active_up:
                    self.active_up[address] = up
            self._group_up.update(old._group_up)
        if self.detector is not None and old.detector is not None:
            self.detector.carry_over(old.detector)
        for address in self._states:
            self._apply(address)
        if self.detector is not None and self.detector.ejected_count:
            self._schedule()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def __repr__(self) -> str:
        down = [a for a, s in self._states.items() if not s.healthy]
        return f"<PoolHealth {self.name} servers={len(self._states)} down={down}>"


# -- the worker's side: probe itself, or read the supervisor's verdicts ------------------------


class WorkerHealth(Protocol):
    def start(self, runtime: Runtime) -> None: ...
    def reload(self, old: Runtime, new: Runtime) -> None: ...
    def stop(self) -> None: ...


def worker_health() -> WorkerHealth:
    """Read the supervisor's verdicts under `lb run`; probe in this process otherwise."""
    directory = os.environ.get(HEALTH_DIR_ENV)
    return SharedHealth(directory) if directory else LocalHealth()


def _carry_over(old: Runtime, new: Runtime) -> None:
    checked = active_checks(new.config)
    for name, pool in new.pools.items():
        previous = old.pools.get(name)
        if previous is not None:
            pool.health.carry_over(previous.health, active=name in checked)
    for pool in old.pools.values():
        pool.health.close()


class LocalHealth:
    """A worker that probes for itself (no supervisor)."""

    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        self.checker = ActiveChecker(self._changed)

    def start(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._check(runtime)

    def reload(self, old: Runtime, new: Runtime) -> None:
        _carry_over(old, new)
        self.runtime = new
        self._check(new)

    def _check(self, runtime: Runtime) -> None:
        self.checker.set_config(runtime.config)
        for target in self.checker.targets.values():
            runtime.pools[target.pool].health.set_active(target.address, target.counter.up)
        for name in {t.pool for t in self.checker.targets.values()}:
            runtime.pools[name].health.publish()

    def stop(self) -> None:
        self.checker.stop()
        if self.runtime is not None:
            for pool in self.runtime.pools.values():
                pool.health.close()

    def _changed(self, target: Target, up: bool) -> None:
        pool = self.runtime.pools.get(target.pool) if self.runtime is not None else None
        if pool is not None:
            pool.health.set_active(target.address, up)


def layout(config: Config) -> list[Key]:
    """The (pool, server) of each byte of the shared state file."""
    return [(name, s.address) for name, pool in config.pools.items() for s in pool.servers]


def state_path(directory: str, config: Config) -> str:
    digest = hashlib.blake2b(digest_size=8)
    for pool, address in layout(config):
        digest.update(f"{pool}\0{address}\n".encode())
    return os.path.join(directory, f"health-{digest.hexdigest()}.state")


class SharedHealth:
    """A worker under `lb run`: applies the verdicts the supervisor publishes."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.runtime: Runtime | None = None
        self._path = ""
        self._slots: list[tuple[PoolRuntime, str]] = []
        self._mm: mmap.mmap | None = None
        self._last = b""
        self._handle: asyncio.TimerHandle | None = None

    def start(self, runtime: Runtime) -> None:
        self._bind(runtime)
        self._poll()

    def reload(self, old: Runtime, new: Runtime) -> None:
        _carry_over(old, new)
        self._bind(new)
        self._read()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._unmap()
        if self.runtime is not None:
            for pool in self.runtime.pools.values():
                pool.health.close()

    def _bind(self, runtime: Runtime) -> None:
        self.runtime = runtime
        path = state_path(self.directory, runtime.config)
        self._slots = [(runtime.pools[p], a) for p, a in layout(runtime.config)]
        self._last = b""  # apply every byte of the (new) file once
        if path != self._path:
            self._path = path
            self._unmap()

    def _unmap(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None

    def _poll(self) -> None:
        try:
            self._read()
        except Exception:
            log.exception("reading the shared health state %s failed", self._path)
        self._handle = asyncio.get_running_loop().call_later(READ_EVERY, self._poll)

    def _read(self) -> None:
        if not self._slots:
            return
        if self._mm is None:
            try:
                with open(self._path, "rb") as f:
                    self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (FileNotFoundError, ValueError):
                return  # not written yet for this layout: keep the states we have
        data = self._mm[:]
        last = self._last
        if data == last:
            return
        for i, (pool, address) in enumerate(self._slots[: len(data)]):
            byte = data[i]
            before = last[i] if i < len(last) else -1
            if byte == before:
                continue
            verdict = byte & HEALTH_BITS
            if verdict != UNKNOWN and (before < 0 or before & HEALTH_BITS != verdict):
                pool.health.set_active(address, verdict == UP)
            drained = bool(byte & DRAINED)
            if before < 0 or bool(before & DRAINED) != drained:
                pool.set_drained(address, drained)
        self._last = data


# -- the supervisor's side --------------------------------------------------------------------


class HealthPublisher:
    """Runs in the supervisor: probes every checked server once, publishes the verdicts to
    the workers through the shared state file and to `lb_server_up`."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.checker = ActiveChecker(self._changed)
        self._path = ""
        self._mm: mmap.mmap | None = None
        self._index: dict[Key, int] = {}
        self.drained: set[Key] = set()  # kept across reloads while the server stays configured

    def start(self, config: Config) -> None:
        self.reload(config)

    def reload(self, config: Config) -> None:
        """Call before signalling the workers: their file is written when this returns."""
        self.checker.set_config(config)
        keys = layout(config)
        self._index = {key: i for i, key in enumerate(keys)}
        self.drained &= set(keys)
        data = bytearray(max(1, len(keys)))
        for i, key in enumerate(keys):
            target = self.checker.targets.get(key)
            if target is not None:
                data[i] = UP if target.counter.up else DOWN
            if key in self.drained:
                data[i] |= DRAINED
            SERVER_UP.labels(*key).set(0 if target is not None and not target.counter.up else 1)
        path = state_path(self.directory, config)
        if path == self._path and self._mm is not None:
            self._mm[: len(data)] = bytes(data)
            return
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # a worker opens the whole file or none
        with open(path, "r+b") as f:
            mm = mmap.mmap(f.fileno(), 0)
        if self._mm is not None:
            self._mm.close()
        self._mm, self._path = mm, path

    def _changed(self, target: Target, up: bool) -> None:
        i = self._index.get((target.pool, target.address))
        if i is not None and self._mm is not None:
            self._mm[i] = (UP if up else DOWN) | (self._mm[i] & DRAINED)
        SERVER_UP.labels(target.pool, target.address).set(1 if up else 0)

    def set_drained(self, pool: str, address: str, drained: bool) -> bool:
        """Drain (or enable) a configured server in every worker; False when unknown."""
        key = (pool, address)
        i = self._index.get(key)
        if i is None:
            return False
        if drained:
            self.drained.add(key)
        else:
            self.drained.discard(key)
        if self._mm is not None:
            byte = self._mm[i]
            self._mm[i] = (byte | DRAINED) if drained else (byte & ~DRAINED)
        return True

    def state(self, pool: str, address: str) -> dict[str, object]:
        """For the status document: "up", "down" or "unchecked", and the last check seen."""
        target = self.checker.targets.get((pool, address))
        if target is None:
            return {"health": "unchecked"}
        return {"health": "up" if target.counter.up else "down", "last_check": target.detail}

    def stop(self) -> None:
        self.checker.stop()
        if self._mm is not None:
            with contextlib.suppress(BufferError):
                self._mm.close()
            self._mm = None
