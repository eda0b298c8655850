"""The worker's one deadline sweeper (lb.proxy.timers)."""

from __future__ import annotations

import asyncio

from lb.proxy.timers import TICK, Ticker


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
        await asyncio.sleep(TICK * 3)
        assert broken.fired == 1
        later = Deadline(loop.time() + TICK)
        ticker.watched.add(later)
        await asyncio.sleep(TICK * 4)
        assert later.fired == 1  # deadlines still fire after the failure
    finally:
        ticker.stop()
