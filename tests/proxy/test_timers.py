"""The worker's one deadline sweeper (lb.proxy.timers)."""

from __future__ import annotations

import asyncio

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
