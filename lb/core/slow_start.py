"""Slow start, sans-IO: a server back from DOWN takes a growing share of its pool's traffic.

A server that was down (failed active checks, or ejected by passive ones) often comes back
cold: empty caches, JIT not warm, connection pools to its own dependencies closed. Sent its
full share at once it may fall over again. With a pool's `slow_start: T`, its effective weight
(`ServerState.effective`, what the balancers read) ramps linearly from `START` of its weight
to all of it over T seconds after the DOWN -> UP transition (HAProxy's `slowstart`, nginx
plus's `slow_start`).

Invariants: `effective` stays within [START x weight, weight] while ramping and equals
`weight` once done (or when the server goes down again, which ends its ramp); the configured
`weight` is never changed. Time is a value (`now`); the shell calls `update(now)` on a timer.
"""

from __future__ import annotations

from lb.core.balancer import ServerState

__all__ = ["START", "SlowStart", "ramp"]

START = 0.1  # share of its weight a server gets right after coming back


def ramp(elapsed: float, duration: float) -> float:
    """The share of its weight a server gets `elapsed` seconds after coming back."""
    if elapsed >= duration or duration <= 0:
        return 1.0
    if elapsed <= 0:
        return START
    return START + (1.0 - START) * elapsed / duration


class SlowStart:
    """The ramping servers of one pool."""

    __slots__ = ("duration", "since")

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self.since: dict[ServerState, float] = {}  # ramping server -> when it came back

    def begin(self, state: ServerState, now: float) -> None:
        """`state` just went from DOWN to UP."""
        self.since[state] = now
        state.effective = float(state.weight) * START

    def update(self, now: float) -> bool:
        """Set every ramping server's effective weight for `now`; True while any still ramps."""
        done = []
        for state, since in self.since.items():
            share = ramp(now - since, self.duration)
            if share >= 1.0 or not state.healthy:
                done.append(state)
                state.effective = float(state.weight)
            else:
                state.effective = state.weight * share
        for state in done:
            del self.since[state]
        return bool(self.since)

    def __repr__(self) -> str:
        return f"<SlowStart {self.duration}s ramping={[s.address for s in self.since]}>"
