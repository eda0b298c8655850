"""Read-side flow control with named reasons.

A client connection can be paused for several independent reasons at once (its server cannot
take more body, a pipelined request waits its turn, ...); reading resumes only when every reason
is gone. Calls are idempotent, so callers need not track what they already asked for.
"""

from __future__ import annotations

import asyncio
from typing import Final

SERVER_FULL: Final = 1  # the peer's write buffer is above its high-water mark
PIPELINED: Final = 2  # a request is queued behind one whose response is not finished
CONNECTING: Final = 4  # body bytes are buffered while the upstream connection is being opened
CLIENT_FULL: Final = 8
UPGRADING: Final = 16  # bytes after an Upgrade request wait for the server's 101


class ReadGate:
    __slots__ = ("reasons", "transport")

    def __init__(self, transport: asyncio.BaseTransport | None = None) -> None:
        self.transport = transport
        # The reasons it is paused for (0: reading). Public so that a hot path that is almost
        # never paused can skip the call: `if gate.reasons: gate.resume(...)`.
        self.reasons = 0

    def pause(self, reason: int) -> None:
        if not self.reasons and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()  # type: ignore[attr-defined]
        self.reasons |= reason

    def resume(self, reason: int) -> None:
        if not self.reasons & reason:
            return
        self.reasons &= ~reason
        if not self.reasons and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()  # type: ignore[attr-defined]

    @property
    def paused(self) -> bool:
        return bool(self.reasons)
