"""The supervisor's health verdicts, shared with every worker through one memory-mapped file.

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
seconds, applying changed bytes to its `PoolHealth` (lb.proxy.health.checker), so all workers agree
within that delay. The directory reaches the workers in the environment (`LB_HEALTH_DIR`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import mmap
import os
from typing import TYPE_CHECKING

from lb.config.schema import Config
from lb.metrics import SERVER_UP
from lb.proxy.health.local import LocalHealth, WorkerHealth, carry_over
from lb.proxy.health.probes import ActiveChecker, Key, Target

if TYPE_CHECKING:
    from lb.proxy.pool.pool import PoolRuntime
    from lb.proxy.runtime import Runtime

log = logging.getLogger("lb.health")

HEALTH_DIR_ENV = "LB_HEALTH_DIR"
READ_EVERY = 0.05  # seconds between a worker's reads of the shared verdicts
UNKNOWN, UP, DOWN = 0, 1, 2
HEALTH_BITS = 0x0F
DRAINED = 0x10  # the admin API drained this server (lb.supervisor)


# -- the file: one byte per (pool, server) of the config ---------------------------------------


def layout(config: Config) -> list[Key]:
    """The (pool, server) of each byte of the shared state file."""
    return [(name, s.address) for name, pool in config.pools.items() for s in pool.servers]


def state_path(directory: str, config: Config) -> str:
    digest = hashlib.blake2b(digest_size=8)
    for pool, address in layout(config):
        digest.update(f"{pool}\0{address}\n".encode())
    return os.path.join(directory, f"health-{digest.hexdigest()}.state")


# -- the workers' side: read the supervisor's verdicts ------------------------------------------


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
        carry_over(old, new)
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


def worker_health() -> WorkerHealth:
    """Read the supervisor's verdicts under `lb run`; probe in this process otherwise."""
    directory = os.environ.get(HEALTH_DIR_ENV)
    return SharedHealth(directory) if directory else LocalHealth()
