"""A `Sink` with no client: it collects one response whole, up to a size, into a future.

For upstream calls that lb makes on its own behalf: a cache revalidation or background
refresh (lb.filters.cache), an offload job (lb.offload.consumer). Informational responses are
skipped; an Upgrade is never asked for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from lb.core.errors import Reason
from lb.core.http import ResponseHead
from lb.core.retry import RetryPolicy
from lb.proxy.http.call import UpstreamCall
from lb.proxy.http.session import Session
from lb.proxy.http.sink import NO_CLIENT, Client, Sink, Upstreams
from lb.proxy.pool.pool import PoolRuntime


@dataclass(frozen=True, slots=True)
class Collected:
    head: ResponseHead | None  # None: no response (see `failure`)
    body: bytes = b""
    failure: Reason | None = None  # why there is no whole response
    detail: str = ""
    broken: bool = False  # the response began, then stopped (as a 502 would be)


class TooLarge(Exception):
    """The response is bigger than the collector takes."""


class Collector(Sink):
    """Collects the response of one call; `result` resolves once, with a `Collected`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.result: asyncio.Future[Collected] = asyncio.get_running_loop().create_future()
        self._head: ResponseHead | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self.call: UpstreamCall | None = None  # set by `collect`: cancelled when too large

    @property
    def client(self) -> Client:
        return NO_CLIENT

    def _resolve(self, collected: Collected) -> None:
        if not self.result.done():
            self.result.set_result(collected)

    def call_head(self, head: ResponseHead) -> None:
        if head.content_length is not None and head.content_length > self.limit:
            self._too_large()
            return
        self._head = head

    def call_informational(self, head: ResponseHead) -> None:
        pass

    def call_body(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self.limit:
            self._too_large()
            return
        self._chunks.append(data)

    def call_end(self) -> None:
        self._resolve(Collected(self._head, b"".join(self._chunks)))

    def call_failed(self, reason: Reason, detail: str) -> None:
        self._resolve(Collected(None, failure=reason, detail=detail))

    def call_broken(self, detail: str) -> None:
        self._resolve(Collected(None, failure=Reason.backend_failed, detail=detail, broken=True))

    def _too_large(self) -> None:
        if not self.result.done():
            self.result.set_exception(TooLarge(f"response over {self.limit} bytes"))
        if self.call is not None:
            self.call.cancel()

    # No tunnels, no request body to pace.
    def call_tunnel(self, head: ResponseHead) -> None:
        self.call_failed(Reason.backend_failed, "unexpected 101")

    def call_tunnel_data(self, data: bytes) -> None:
        pass

    def call_tunnel_closed(self, detail: str) -> None:
        pass

    def pause_request(self) -> None:
        pass

    def resume_request(self) -> None:
        pass


def collect(
    upstreams: Upstreams,
    pool: PoolRuntime,
    session: Session,
    data: bytes,
    body: bytes,
    retry: RetryPolicy,
    timeout: float,
    limit: int,
) -> Coroutine[Any, Any, Collected]:
    """Send a request (`data`: its head as the server gets it, then `body`) to `pool` with no
    client behind it, now; await the result for its whole response. It raises TooLarge past
    `limit` bytes; cancelling the await cancels the call, so its server slot goes back."""
    collector = Collector(limit)
    call = UpstreamCall(upstreams, pool, session, data, collector, retry, timeout)
    collector.call = call
    if body:
        call.send_body(body)
    call.end_body()
    call.start()
    return _result(collector, call)


async def _result(collector: Collector, call: UpstreamCall) -> Collected:
    try:
        return await collector.result
    except asyncio.CancelledError:
        call.cancel()  # nobody waits for it now
        raise
