"""Health checks, each worker's side: verdicts turned into `ServerState.healthy`.

The decisions are in `lb.core.health`, the probes in `lb.proxy.health.probes`. `PoolHealth`
keeps one pool's health in one worker: a server is healthy (and the balancers send it traffic)
when its active verdict is UP and it is not passively ejected; it also sets the `lb_server_up`
gauge.

Active checks run once per server, not once per worker: under `lb run` the supervisor probes and
every worker applies its verdicts from a shared file (`SharedHealth`, lb.proxy.health.channel),
so all workers agree within `READ_EVERY`. Without it (an in-process `Proxy`, as in the tests)
the worker probes for itself (`LocalHealth`). `worker_health()` picks one.

Passive checks are per worker (`PoolHealth.observe`, called by the proxy on each answer): each
worker judges from the answers it sees, with no cross-process traffic on the request path.

A reload keeps what is known: active verdicts of servers still in the config (when their pool
is still actively checked) and passive ejections.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from lb.config.pools import PassiveCheck
from lb.core.balancer import ServerState
from lb.core.health import OutlierDetector, PassivePolicy
from lb.metrics import SERVER_UP

log = logging.getLogger("lb.health")


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
        # (lb.proxy.pool.discovery); its active verdict applies to each:
        # config address -> addresses.
        self._groups: dict[str, list[str]] = groups or {}
        self._group_up: dict[str, bool] = {}
        self.detector: OutlierDetector[str] | None = None
        if passive is not None:
            self.detector = OutlierDetector(PassivePolicy.from_config(passive), self._states)
        self._handle: asyncio.TimerHandle | None = None
        # Called when a server goes from DOWN to UP (the pool's slow start, lb.proxy.pool.waiting).
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
