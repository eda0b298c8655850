"""Pick the fastest event loop installed: uvloop if importable, asyncio's own otherwise."""

from __future__ import annotations

import asyncio


def install_best_loop() -> str:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - depends on the machine
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"
