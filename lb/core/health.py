"""Server health, sans-IO: what the active checks' results and the passive signals mean.

Two independent judges decide whether a server takes traffic; the shell (`lb.proxy.health.probes`,
`lb.proxy.health.checker`) runs the probes and timers, feeds results in here, and sets
`ServerState.healthy` to "active verdict is UP and not passively ejected".

Active checks (HAProxy's rise/fall). `HealthCounter` counts the results of one server's probes:
`unhealthy_threshold` failures in a row take an UP server DOWN, `healthy_threshold` passes in a
row bring a DOWN server UP; a result that agrees with the current state resets the streak of
the other kind. A server starts UP but *unconfirmed*: until one check has passed, a single
failure takes it DOWN, so a server that is dead when lb starts gets no traffic after the first
check rather than after `unhealthy_threshold` of them. Invariant: `observe()` reports a
transition exactly once, on the result that causes it.

Passive checks (Envoy's outlier detection, consecutive failures). `OutlierDetector` watches
the answers of one pool's servers: `consecutive_failures` failures in a row (a connect failure,
a server that fails before answering, a 5xx) eject the server for `base_ejection` x (the
number of times it has been ejected), capped at `max(MAX_EJECTION, base_ejection)`. The count
decays by one for each `base_ejection` the server stays back in the pool, so a server that
failed once last week starts afresh. Invariants: an ejection never puts more than
`max_ejected_percent` of the pool's servers out at once (such an ejection is not made, and
reported once as capped); results for an ejected server are ignored; a server comes back when
`readmit(now)` is called at or after its time, with a clean failure count.

Everything takes time as a value (`now`, seconds on any monotonic clock) and does no I/O.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, Literal, NamedTuple, TypeVar

from lb.config.pools import HealthCheck, PassiveCheck, Pool
from lb.config.schema import Config

__all__ = [
    "DEFAULT_HEALTHY_THRESHOLD",
    "DEFAULT_INTERVAL",
    "DEFAULT_PATH",
    "DEFAULT_TIMEOUT",
    "DEFAULT_UNHEALTHY_THRESHOLD",
    "MAX_EJECTION",
    "ActiveCheck",
    "Ejection",
    "HealthCounter",
    "OutlierDetector",
    "PassivePolicy",
    "Transition",
    "active_check",
    "active_checks",
]

DEFAULT_INTERVAL = 2.0
DEFAULT_TIMEOUT = 1.0
DEFAULT_HEALTHY_THRESHOLD = 2
DEFAULT_UNHEALTHY_THRESHOLD = 3
DEFAULT_PATH = "/"
MAX_EJECTION = 300.0  # Envoy's max_ejection_time default


# -- active checks: what to probe --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActiveCheck:
    """One pool's active check with every default filled in."""

    kind: Literal["http", "tcp"]
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    healthy_threshold: int = DEFAULT_HEALTHY_THRESHOLD
    unhealthy_threshold: int = DEFAULT_UNHEALTHY_THRESHOLD
    path: str = DEFAULT_PATH
    host: str | None = None  # None: the server's address
    expect_status: frozenset[int] | None = None  # None: any 2xx or 3xx (nginx's default)

    def status_ok(self, status: int) -> bool:
        if self.expect_status is None:
            return 200 <= status < 400
        return status in self.expect_status

    def describe_expected(self) -> str:
        if self.expect_status is None:
            return "2xx or 3xx"
        return ", ".join(str(s) for s in sorted(self.expect_status))


def active_check(pool: Pool, defaults: HealthCheck, tcp_only: bool) -> ActiveCheck | None:
    """The resolved active check of `pool`, or None when it is not actively checked.

    A pool is checked when it has a `health_check` or `defaults.health_check` sets `type` or
    `path`. Each key comes from the pool, else from the defaults, else the built-in default.
    The type, when neither names one: http if a path is given, else tcp for a pool only tcp/udp
    listeners use (`tcp_only`), else http.
    """
    own = pool.health_check
    if own is None and defaults.type is None and defaults.path is None:
        return None
    own = own or HealthCheck()

    def pick(key: str) -> object:
        value = getattr(own, key)
        return value if value is not None else getattr(defaults, key)

    path = pick("path")
    kind = pick("type")
    if kind is None:
        kind = "http" if path is not None or not tcp_only else "tcp"
    expect = pick("expect_status")
    return ActiveCheck(
        kind="tcp" if kind == "tcp" else "http",
        interval=_or(pick("interval"), DEFAULT_INTERVAL),
        timeout=_or(pick("timeout"), DEFAULT_TIMEOUT),
        healthy_threshold=int(_or(pick("healthy_threshold"), DEFAULT_HEALTHY_THRESHOLD)),
        unhealthy_threshold=int(_or(pick("unhealthy_threshold"), DEFAULT_UNHEALTHY_THRESHOLD)),
        path=str(path) if path is not None else DEFAULT_PATH,
        host=str(pick("host")) if pick("host") is not None else None,
        expect_status=frozenset(expect) if isinstance(expect, list) and expect else None,
    )


def _or(value: object, default: float) -> float:
    return float(value) if isinstance(value, int | float) else default


def active_checks(config: Config) -> dict[str, ActiveCheck]:
    """Pool name -> its active check, for the pools that are actively checked."""
    routed = {route.pool for route in config.routes if route.pool is not None}
    routed |= {arm.pool for route in config.routes for arm in route.split or []}
    checks = {}
    for name, pool in config.pools.items():
        check = active_check(pool, config.defaults.health_check, tcp_only=name not in routed)
        if check is not None:
            checks[name] = check
    return checks


# -- active checks: rise and fall -------------------------------------------------------------


class Transition(NamedTuple):
    up: bool  # the new state
    checks: int  # results in a row that caused it


class HealthCounter:
    """Rise/fall counting of one server's check results (see the module docstring)."""

    __slots__ = ("confirmed", "healthy_threshold", "streak", "unhealthy_threshold", "up")

    def __init__(
        self,
        healthy_threshold: int = DEFAULT_HEALTHY_THRESHOLD,
        unhealthy_threshold: int = DEFAULT_UNHEALTHY_THRESHOLD,
        up: bool = True,
        confirmed: bool = False,
    ) -> None:
        if healthy_threshold < 1 or unhealthy_threshold < 1:
            raise ValueError("thresholds must be at least 1")
        self.healthy_threshold = healthy_threshold
        self.unhealthy_threshold = unhealthy_threshold
        self.up = up
        self.confirmed = confirmed or not up  # a DOWN server has been judged already
        self.streak = 0  # results in a row that disagree with `up`

    def observe(self, ok: bool) -> Transition | None:
        """Count one result; the transition it causes, if any."""
        if ok == self.up:
            self.streak = 0
            if ok:
                self.confirmed = True
            return None
        self.streak += 1
        # An unconfirmed server (never seen passing) goes DOWN at its first failure.
        fall = self.unhealthy_threshold if self.confirmed else 1
        needed = self.healthy_threshold if ok else fall
        if self.streak < needed:
            return None
        checks, self.streak = self.streak, 0
        self.up = ok
        self.confirmed = True
        return Transition(ok, checks)

    def __repr__(self) -> str:
        state = "up" if self.up else "down"
        if not self.confirmed:
            state += " unconfirmed"
        return (
            f"<HealthCounter {state} streak={self.streak} "
            f"rise={self.healthy_threshold} fall={self.unhealthy_threshold}>"
        )


# -- passive checks: outlier ejection ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PassivePolicy:
    consecutive_failures: int = 5
    base_ejection: float = 30.0
    max_ejected_percent: int = 50
    max_ejection: float = MAX_EJECTION

    @classmethod
    def from_config(cls, passive: PassiveCheck) -> PassivePolicy:
        return cls(passive.consecutive_failures, passive.base_ejection, passive.max_ejected_percent)

    def duration(self, ejections: int) -> float:
        """How long the `ejections`-th ejection (1-based, after decay) lasts."""
        return min(self.base_ejection * ejections, max(self.max_ejection, self.base_ejection))


class Ejection(NamedTuple):
    ejected: bool  # False: the threshold was reached but max_ejected_percent held it in
    duration: float  # seconds out; 0.0 when not ejected
    failures: int  # the consecutive failures that led here
    ejections: int  # the multiplier used (after decay)


K = TypeVar("K", bound=Hashable)


class _Ejection:
    __slots__ = ("capped", "ejections", "failures", "returned_at", "until")

    def __init__(self) -> None:
        self.failures = 0  # consecutive
        self.ejections = 0  # the growth multiplier, before decay
        self.until = 0.0  # > 0 while ejected: when it comes back
        self.returned_at: float | None = None  # when the last ejection ended
        self.capped = False  # the cap was reported for the current run of failures


class OutlierDetector(Generic[K]):
    """Consecutive-failure ejection for the servers of one pool, keyed by any hashable."""

    __slots__ = ("_records", "ejected_count", "policy")

    def __init__(self, policy: PassivePolicy, servers: Iterable[K]) -> None:
        self.policy = policy
        self._records: dict[K, _Ejection] = {s: _Ejection() for s in servers}
        self.ejected_count = 0

    def is_ejected(self, server: K) -> bool:
        record = self._records.get(server)
        return record is not None and record.until > 0.0

    def success(self, server: K) -> None:
        """A good answer: the failure streak starts over (the hot path: one dict lookup)."""
        record = self._records.get(server)
        if record is not None and record.failures and not record.until:
            record.failures = 0
            record.capped = False

    def failure(self, server: K, now: float) -> Ejection | None:
        """A failed answer; an `Ejection` when the streak reached the threshold."""
        record = self._records.get(server)
        if record is None or record.until:
            return None  # unknown, or already out: answers still in flight do not count
        record.failures += 1
        policy = self.policy
        if record.failures < policy.consecutive_failures:
            return None
        ejections = record.ejections
        if ejections and record.returned_at is not None:
            ejections = max(0, ejections - int((now - record.returned_at) // policy.base_ejection))
        ejections += 1
        if (self.ejected_count + 1) * 100 > policy.max_ejected_percent * len(self._records):
            if record.capped:
                return None
            record.capped = True
            return Ejection(False, 0.0, record.failures, ejections)
        duration = policy.duration(ejections)
        failures = record.failures
        record.ejections = ejections
        record.until = now + duration
        record.failures = 0
        record.capped = False
        self.ejected_count += 1
        return Ejection(True, duration, failures, ejections)

    def readmit(self, now: float) -> list[K]:
        """The servers whose ejection has ended by `now`; they are back in the pool."""
        back = []
        for server, record in self._records.items():
            if 0.0 < record.until <= now:
                record.until = 0.0
                record.returned_at = now
                record.failures = 0
                self.ejected_count -= 1
                back.append(server)
        return back

    def next_readmit(self) -> float | None:
        """When the next ejected server comes back, or None when none is out."""
        times = [r.until for r in self._records.values() if r.until > 0.0]
        return min(times) if times else None

    def carry_over(self, old: OutlierDetector[K]) -> None:
        """After a reload: keep the records of the servers both pools have."""
        for server, record in old._records.items():
            mine = self._records.get(server)
            if mine is not None:
                for name in _Ejection.__slots__:
                    setattr(mine, name, getattr(record, name))
        self.ejected_count = sum(1 for r in self._records.values() if r.until > 0.0)

    def __repr__(self) -> str:
        return (
            f"<OutlierDetector servers={len(self._records)} ejected={self.ejected_count} "
            f"after={self.policy.consecutive_failures}>"
        )
