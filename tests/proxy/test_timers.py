"""The worker's one deadline sweeper (lb.proxy.timers)."""

from __future__ import annotations

import asyncio
import time

from lb.proxy.timers import TICK, Ticker
from tests.conftest import wait_until


class Deadline:
    def __init__(self, at: float, fail: bool = False) -> None:
        self.deadline = at
        self.fail = fail
        self.fired = 0

    def on_deadline(self) -> None:
        self.fired += 1
        if self.fail:
            raise RuntimeError("a bug in a handler")


async def test_a_failing_handler_does_not_stop_the_ticker():
    loop = asyncio.get_running_loop()
    ticker = Ticker(loop)
    broken = Deadline(loop.time())
    broken.fail = True
    ticker.watched.add(broken)
    ticker.start()
    try:
        await wait_until(lambda: broken.fired, what="the failing deadline")
        later = Deadline(loop.time() + TICK)
        ticker.watched.add(later)
        await wait_until(lambda: later.fired, what="a deadline after the failure")
        assert (broken.fired, later.fired) == (1, 1)  # each fired once
    finally:
        ticker.stop()


def _late_ticks(above: str) -> float:
    """Ticks of this process that ran more than `above` seconds late (bucket bounds)."""
    from prometheus_client import REGISTRY

    name = "lb_event_loop_lag_seconds_bucket"
    every = REGISTRY.get_sample_value(name, {"le": "+Inf"}) or 0.0
    return every - (REGISTRY.get_sample_value(name, {"le": above}) or 0.0)


async def test_a_paused_loop_is_counted_and_logged_once_a_minute(caplog):
    """What an operator sees of a stall: the lag histogram counts it, and a pause of a second
    or more is logged; a second one right after is counted but not logged again."""
    loop = asyncio.get_running_loop()
    ticker = Ticker(loop)
    ticker.start()
    try:
        for expected in (1, 2):
            before = _late_ticks("1.0")
            await asyncio.sleep(TICK)  # a tick on time first
            time.sleep(1.1)  # a callback that blocks the loop
            await wait_until(lambda b=before: _late_ticks("1.0") > b, what="the late tick")
            warnings = [r for r in caplog.records if "event loop of worker" in r.getMessage()]
            assert len(warnings) == 1, (expected, [r.getMessage() for r in warnings])
            assert "paused 1" in warnings[0].getMessage()
        assert _late_ticks("0.001") >= 2
    finally:
        ticker.stop()
