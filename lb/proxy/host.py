"""What a connection needs of the process that accepted it (the `Proxy`), as a protocol, so
that connection modules depend on this small surface and not on the proxy that imports them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol

from lb.core.errors import Reason

if TYPE_CHECKING:
    from lb.proxy.http.connection import UpstreamConnection, UpstreamServer
    from lb.proxy.l4.reactor import Reactor
    from lb.proxy.runtime import Current, Runtime
    from lb.proxy.timers import Ticker


class Host(Protocol):
    loop: asyncio.AbstractEventLoop
    ticker: Ticker
    runtime: Runtime  # the newest config; an exchange keeps the one it started with
    stopping: bool
    current: Current  # both of those, where compiled code reads them per request
    parser_kind: str
    reuse_port: bool
    connections: dict[str, set[Any]]
    servers: dict[str, Any]

    @property
    def reactor(self) -> Reactor: ...

    def connection_opened(self, conn: Any) -> None: ...
    def connection_closed(self, conn: Any) -> None: ...
    def count_error(self, listener: str, cause: str) -> None: ...
    def count_connect_error(self, pool: str, server: str, cause: str) -> None: ...
    def log_refusal(self, conn: Any, reason: Reason, detail: str) -> None: ...
    def connect(self, server: UpstreamServer, timeout: float) -> Awaitable[UpstreamConnection]: ...
