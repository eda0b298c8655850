"""A route's weighted canary split, shell side: arm choice (force, sticky arm, weights), the
per-arm metrics, and automatic rollback.

Choosing an arm for a request, first that applies:

1. force: the `force.header` (or `force.cookie`) holds a value listed in `force.arms`: that
   arm, for this request only (no cookie is set, the client's assignment is unchanged).
2. sticky: the route's sticky cookie names an arm still in the split and not rolled back:
   that arm, even at weight 0, so setting a weight to 0 stops new clients but keeps the ones
   already assigned until their cookie expires; a reload that changes weights keeps them too.
3. a weighted draw among the arms of weight above 0; with `sticky`, a cookie naming the arm
   goes out with the answer.

A rolled-back arm counts as weight 0 and also loses its stuck clients (they are drawn again
and get a new cookie): a rollback is for a canary that fails, and failing on fewer clients is
still failing. It stays rolled back until a reload (a new `Runtime`) or `rearm()` (the admin
call `POST /api/v1/routes/{route}/rearm`, relayed to workers as SIGUSR1).
"""

from __future__ import annotations

import logging
import os
import random
import time

from lb.config.routes import Route
from lb.config.schema import Config
from lb.core.http import RequestHead
from lb.core.rollback import RollbackMonitor
from lb.core.router import route_name
from lb.core.split import Split
from lb.core.sticky import CookieSigner, set_cookie_value
from lb.metrics import SPLIT_DURATION, SPLIT_ROLLBACKS, SPLIT_ROLLED_BACK

log = logging.getLogger("lb.canary")

__all__ = ["SEED_ENV", "RouteSplit", "build_splits", "rearm_all"]

SEED_ENV = "LB_SEED"  # seeds every split's draws: reproducible tests and benchmarks
STATUS_CLIENT_CLOSED = 499  # not the arm's doing: left out of its error rate


class RouteSplit:
    __slots__ = (
        "_arm_of",
        "_durations",
        "_force_cookie",
        "_force_header",
        "_ident_of",
        "_rng",
        "_split",
        "arms",
        "cookie",
        "force",
        "monitor",
        "route",
        "signer",
        "ttl",
    )

    def __init__(
        self, route: str, config: Route, signer: CookieSigner, rng: random.Random | None = None
    ) -> None:
        self.route = route
        self.arms: tuple[tuple[str, int], ...] = tuple(
            (arm.pool, arm.weight) for arm in config.split or ()
        )
        self._rng = rng if rng is not None else random.Random()
        self._split = Split(self.arms, self._rng)
        self.signer = signer
        self.cookie = config.sticky.cookie if config.sticky is not None else None
        self.ttl = config.sticky.ttl if config.sticky is not None else 0.0
        self._arm_of: dict[str, str] = {}
        self._ident_of: dict[str, str] = {}
        for pool, _ in self.arms:
            ident = signer.ident("arm", route, pool)
            self._arm_of[ident] = pool
            self._ident_of[pool] = ident
        force = config.force
        self.force: dict[str, str] = dict(force.arms) if force is not None else {}
        self._force_header = (
            force.header.lower().encode("latin-1") if force and force.header else None
        )
        self._force_cookie = force.cookie if force is not None else None
        self.monitor: RollbackMonitor | None = None
        if config.rollback is not None:
            rb = config.rollback
            self.monitor = RollbackMonitor(self.arms, rb.max_error_rate, rb.min_requests, rb.window)
            for pool, _ in self.arms:
                SPLIT_ROLLED_BACK.labels(route, pool).set(0)
        self._durations = {pool: SPLIT_DURATION.labels(route, pool) for pool, _ in self.arms}

    # Choosing an arm ----------------------------------------------------------------------

    def pick(self, head: RequestHead, secure: bool) -> tuple[str, bytes | None]:
        """The arm (pool name) for this request, and the Set-Cookie value to send, if any."""
        if self.force:
            if self._force_header is not None:
                raw = head.index.get(self._force_header)
                value = raw.decode("latin-1").strip() if raw is not None else None
            else:
                value = head.cookie(self._force_cookie)  # type: ignore[arg-type]
            if value is not None:
                forced = self.force.get(value)
                if forced is not None:
                    return forced, None
        cookie = self.cookie
        if cookie is None:
            return self._split.pick(), None
        now = time.time()
        ident = self.signer.verify(cookie, head.cookie(cookie), now)
        if ident is not None:
            pool = self._arm_of.get(ident)
            if pool is not None and (self.monitor is None or pool not in self.monitor.rolled_back):
                return pool, None
        pool = self._split.pick()
        value = self.signer.issue(cookie, self._ident_of[pool], int(now + self.ttl))
        return pool, set_cookie_value(cookie, value, self.ttl, secure)

    # Counting answers, rolling back ---------------------------------------------------------

    def observe(self, pool: str, status: int, started: float) -> None:
        """Log-and-count phase of a request this split sent to arm `pool`."""
        hist = self._durations.get(pool)
        if hist is not None:
            hist.observe(time.perf_counter() - started)
        monitor = self.monitor
        if monitor is None or status <= 0 or status == STATUS_CLIENT_CLOSED:
            return
        if monitor.record(pool, status, time.monotonic()):
            self._roll_back(pool)

    def _roll_back(self, arm: str) -> None:
        monitor = self.monitor
        assert monitor is not None
        window = monitor.windows[arm]
        stable = monitor.windows[monitor.stable]
        log.warning(
            "route %s: canary arm %s rolled back to weight 0: %d of %d answers 5xx in the last "
            "%gs, against %d of %d on stable arm %s (threshold %g points); re-arm with a reload "
            "or POST /api/v1/routes/%s/rearm",
            self.route,
            arm,
            window.errors,
            window.requests,
            monitor.window,
            stable.errors,
            stable.requests,
            monitor.stable,
            monitor.max_error_rate * 100,
            self.route,
        )
        SPLIT_ROLLBACKS.labels(self.route, arm).inc()
        SPLIT_ROLLED_BACK.labels(self.route, arm).set(1)
        self._reweigh()

    def _reweigh(self) -> None:
        rolled_back = self.monitor.rolled_back if self.monitor is not None else set()
        self._split = Split(
            [(pool, 0 if pool in rolled_back else weight) for pool, weight in self.arms],
            self._rng,
        )

    @property
    def rolled_back(self) -> frozenset[str]:
        return frozenset(self.monitor.rolled_back) if self.monitor is not None else frozenset()

    def rearm(self) -> list[str]:
        """Restore every rolled-back arm to its configured weight; the arms re-armed."""
        if self.monitor is None:
            return []
        arms = self.monitor.rearm()
        for arm in arms:
            SPLIT_ROLLED_BACK.labels(self.route, arm).set(0)
            log.info("route %s: canary arm %s re-armed", self.route, arm)
        if arms:
            self._reweigh()
        return arms

    def __repr__(self) -> str:
        arms = " ".join(f"{pool}={weight}" for pool, weight in self.arms)
        rolled = f" rolled_back={sorted(self.rolled_back)}" if self.rolled_back else ""
        return f"<RouteSplit {self.route} {arms}{rolled}>"


def build_splits(config: Config, signer: CookieSigner) -> dict[str, RouteSplit]:
    """One `RouteSplit` per route with a split, by route name. With $LB_SEED set, each split
    draws from its own generator seeded with it and the route name, so runs repeat exactly."""
    seed = os.environ.get(SEED_ENV)
    splits: dict[str, RouteSplit] = {}
    for index, route in enumerate(config.routes):
        if route.split is None:
            continue
        name = route_name(route, index)
        rng = random.Random(f"{seed}:{name}") if seed is not None else None
        splits[name] = RouteSplit(name, route, signer, rng)
    return splits


def rearm_all(splits: dict[str, RouteSplit]) -> list[tuple[str, str]]:
    """Re-arm every rolled-back arm of a runtime's splits: (route, arm) of each."""
    return [(name, arm) for name, split in splits.items() for arm in split.rearm()]
