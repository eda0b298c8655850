"""What an `UpstreamCall` (lb.proxy.http.call) talks to: the `Sink` it delivers the response
to, that sink's `Client` (corked around each server read, and read from no faster than it
writes), and the `Upstreams` of the process (the event loop, connecting to servers). A sink with
nobody behind it (a cache refresh, an offload job) uses `NO_CLIENT`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Protocol

from mypy_extensions import trait

from lb.core.errors import Reason
from lb.core.http import ResponseHead
from lb.proxy.http.connection import UpstreamConnection, UpstreamServer
from lb.proxy.timers import Ticker


@trait
class Sink:
    """Where a call delivers its response; the exchange is one, a cache store another.

    A mypyc trait, not a Protocol: compiled calls then go through a vtable, with no method
    lookup by name (a call makes three to five of these per response). Implementations
    inherit it (and are compiled with it)."""

    # No defaults: an implementation that forgot a method fails loudly, not silently.
    def call_head(self, head: ResponseHead) -> None:
        raise NotImplementedError

    def call_informational(self, head: ResponseHead) -> None:
        raise NotImplementedError

    def call_body(self, data: bytes) -> None:
        raise NotImplementedError

    def call_end(self) -> None:
        raise NotImplementedError

    def call_failed(self, reason: Reason, detail: str) -> None:
        """No response head reached the sink, and none will: answer `reason` instead."""
        raise NotImplementedError

    def call_broken(self, detail: str) -> None:
        """The response stopped after its head: the sink can only cut its own stream."""
        raise NotImplementedError

    def call_tunnel(self, head: ResponseHead) -> None:
        raise NotImplementedError

    def call_tunnel_data(self, data: bytes) -> None:
        raise NotImplementedError

    def call_tunnel_closed(self, detail: str) -> None:
        raise NotImplementedError

    def pause_request(self) -> None:
        raise NotImplementedError

    def resume_request(self) -> None:
        raise NotImplementedError

    @property
    def client(self) -> Client:
        """Where the response goes: its writes are corked around each server read."""
        raise NotImplementedError


class Client(Protocol):
    """The sink's reader (a client connection), or `NO_CLIENT`."""

    write_paused: bool  # it cannot take more now: read nothing more from the server

    def cork(self) -> None: ...
    def uncork(self) -> None: ...


class _NoClient:
    """For sinks with no client behind them (a cache refresh, an offload job)."""

    write_paused = False

    def cork(self) -> None:
        pass

    def uncork(self) -> None:
        pass


NO_CLIENT: Client = _NoClient()


class Upstreams(Protocol):
    """What a call needs of the process around it."""

    loop: asyncio.AbstractEventLoop
    ticker: Ticker

    def connect(self, server: UpstreamServer, timeout: float) -> Awaitable[UpstreamConnection]: ...
    def count_connect_error(self, pool: str, server: str, cause: str) -> None: ...
