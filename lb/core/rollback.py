"""Automatic canary rollback: each arm's 5xx rate over a sliding window, and the decision (sans-IO).

Theory of operation. A split with `rollback:` has one stable arm (the largest configured
weight; the first of equals) and one or more canaries (every other arm). Each answered request
is recorded against its arm with the time `now` passed in. A canary is rolled back when

    canary requests in the window >= min_requests, and
    canary 5xx rate - stable 5xx rate > max_error_rate      (a difference of fractions)

so a canary that fails as often as the stable arm (a bad backend shared by both, a client
sending garbage) is left alone, and one that fails more is taken out. A stable arm with no
requests in the window counts as a 0% error rate.

The window is `BUCKETS` buckets of window/BUCKETS seconds each; a bucket is cleared when time
comes round to it again, so counts are exact to within one bucket and the cost per request is
O(1): running totals, with the slots scanned once per bucket width, not per request.

A rolled-back arm stays rolled back until `rearm()`: the shell calls it on the admin re-arm
call, and a reload builds a new monitor. Each worker process decides on its own traffic; no
state is shared.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["BUCKETS", "ArmWindow", "RollbackMonitor", "should_roll_back", "stable_arm"]

BUCKETS = 10


def stable_arm(arms: Sequence[tuple[str, int]]) -> str:
    """The stable arm of a split: the largest configured weight, the first of equals."""
    best = arms[0]
    for arm in arms[1:]:
        if arm[1] > best[1]:
            best = arm
    return best[0]


def should_roll_back(
    canary_requests: int,
    canary_errors: int,
    stable_requests: int,
    stable_errors: int,
    max_error_rate: float,
    min_requests: int,
) -> bool:
    """The rollback rule (see the module docstring), on counts of one window."""
    if canary_requests < max(1, min_requests):
        return False
    stable_rate = stable_errors / stable_requests if stable_requests else 0.0
    return canary_errors / canary_requests - stable_rate > max_error_rate


class ArmWindow:
    """Requests and 5xx answers of one arm over the last `window` seconds."""

    __slots__ = ("_errors", "_last", "_requests", "_stamps", "_width", "errors", "requests")

    def __init__(self, window: float) -> None:
        if window <= 0:
            raise ValueError(f"rollback window must be above 0, got {window}")
        self._width = window / BUCKETS
        self._requests = [0] * BUCKETS
        self._errors = [0] * BUCKETS
        self._stamps = [-1] * BUCKETS  # the bucket number each slot holds, -1: none yet
        self._last = -1  # the bucket number of the last advance: nothing to drop until it moves
        self.requests = 0  # totals over the slots still inside the window
        self.errors = 0

    def advance(self, now: float) -> int:
        """Drop buckets that fell out of the window; the current bucket's number."""
        current = int(now / self._width)
        if current == self._last:
            return current
        self._last = current
        oldest = current - BUCKETS + 1
        stamps = self._stamps
        for slot in range(BUCKETS):
            stamp = stamps[slot]
            if stamp != -1 and stamp < oldest:
                self.requests -= self._requests[slot]
                self.errors -= self._errors[slot]
                self._requests[slot] = self._errors[slot] = 0
                stamps[slot] = -1
        return current

    def record(self, error: bool, now: float) -> None:
        current = self.advance(now)
        slot = current % BUCKETS
        if self._stamps[slot] != current:
            self._stamps[slot] = current  # empty: advance() cleared whatever it held before
        self._requests[slot] += 1
        self.requests += 1
        if error:
            self._errors[slot] += 1
            self.errors += 1

    def __repr__(self) -> str:
        return f"<ArmWindow requests={self.requests} errors={self.errors}>"


class RollbackMonitor:
    """Windows for every arm of one split, and which canaries are rolled back."""

    __slots__ = ("max_error_rate", "min_requests", "rolled_back", "stable", "window", "windows")

    def __init__(
        self,
        arms: Sequence[tuple[str, int]],
        max_error_rate: float,
        min_requests: int,
        window: float,
    ) -> None:
        if len(arms) < 2:
            raise ValueError("rollback needs a split of at least two arms")
        self.stable = stable_arm(arms)
        self.max_error_rate = max_error_rate
        self.min_requests = min_requests
        self.window = window
        self.windows = {name: ArmWindow(window) for name, _ in arms}
        self.rolled_back: set[str] = set()

    def record(self, arm: str, status: int, now: float) -> bool:
        """Count one answer of `arm`; True when this answer makes `arm` roll back."""
        window = self.windows.get(arm)
        if window is None:
            return False
        window.record(500 <= status <= 599, now)
        if arm == self.stable or arm in self.rolled_back:
            return False
        stable = self.windows[self.stable]
        stable.advance(now)
        if should_roll_back(
            window.requests,
            window.errors,
            stable.requests,
            stable.errors,
            self.max_error_rate,
            self.min_requests,
        ):
            self.rolled_back.add(arm)
            return True
        return False

    def rearm(self) -> list[str]:
        """Clear every rollback and the counts that led to it; the arms re-armed."""
        arms = sorted(self.rolled_back)
        self.rolled_back.clear()
        self.windows = {name: ArmWindow(self.window) for name in self.windows}
        return arms

    def __repr__(self) -> str:
        return f"<RollbackMonitor stable={self.stable} rolled_back={sorted(self.rolled_back)}>"
