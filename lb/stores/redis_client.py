"""The one Redis client of a process, and what every store call goes through.

Theory of operation. `RedisConnection.call` runs one operation under the configured
`timeout`: an answer arrives in time, or the caller gets `StoreUnavailable` at the timeout.
A connection error or a timeout marks Redis *down*: from then on every call fails at once
(no request waits on a server known to be gone), and a background probe PINGs every
`probe_interval` until one answers, which marks it *up* again. redis-py reconnects by itself
on the next use; its own retry is one immediate attempt, so a pooled connection that died
with a restarted server is replaced within the same call.

State is exported as `lb_redis_up` (lb.metrics) and `status()` (for /api/v1/status).
`connect(settings, previous)` keeps the previous client when the `redis:` section is unchanged,
so a reload keeps its connections, its state and its pub/sub listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from lb.config.base import split_address
from lb.config.redis import Redis as RedisSettings
from lb.metrics import redis_up_gauge
from lb.stores.errors import StoreError, StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

# Errors that mean "the server is not there" (as opposed to "it refused this command").
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,  # refused, reset, closed; Sentinel's MasterNotFoundError
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,  # restarted, still reading its data
    redis_errors.ReadOnlyError,  # we reached a replica: a failover is under way
    OSError,
)
_PROBE_FAILURES: tuple[type[BaseException], ...] = (TimeoutError, *_UNAVAILABLE)


class RedisConnection:
    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.timeout = settings.timeout
        self.prefix = settings.key_prefix
        self.client: Redis = _make_client(settings)
        self.up = True  # optimistic until a call or the first probe says otherwise
        self.last_error: str | None = None
        self.last_change = time.time()
        self._probe: asyncio.Task[None] | None = None
        self._became_up: asyncio.Event | None = None
        self._closed = False
        self._gauge = redis_up_gauge()
        self._gauge.set(1)

    def __repr__(self) -> str:
        state = "up" if self.up else f"down ({self.last_error})"
        return f"<RedisConnection {self.display_url} {state}>"

    @property
    def display_url(self) -> str:
        s = self.settings
        if s.sentinel is not None:
            return f"sentinel://{','.join(s.sentinel.addresses)}/{s.sentinel.master}/{s.db or 0}"
        return s.safe_url()

    def status(self) -> dict[str, Any]:
        """For /api/v1/status: no password, ever."""
        return {
            "configured": True,
            "up": self.up,
            "url": self.display_url,
            "last_error": self.last_error,
            "since": round(self.last_change, 3),
        }

    def start(self) -> None:
        """Check the server now, in the background (needs a running loop), so the state and
        the gauge are right before the first request needs them."""
        if self._probe is None and not self._closed:
            self._probe = asyncio.get_running_loop().create_task(self._probe_loop(first=True))

    async def call(
        self, operation: Callable[[Redis], Awaitable[T]], *, timeout: float | None = None
    ) -> T:
        """Run `operation(client)` within `timeout` [the configured one]; translate errors."""
        if not self.up:
            self._ensure_probe()  # e.g. the loop that ran the last probe is gone
            raise StoreUnavailable(f"redis is down: {self.last_error}")
        try:
            async with asyncio.timeout(timeout if timeout is not None else self.timeout):
                return await operation(self.client)
        except TimeoutError:
            error = f"no answer within {(timeout or self.timeout) * 1000:g}ms"
            self.mark_down(error)
            raise StoreUnavailable(f"redis: {error}") from None
        except _UNAVAILABLE as e:
            self.mark_down(_describe(e))
            raise StoreUnavailable(f"redis: {_describe(e)}") from e
        except redis_errors.RedisError as e:
            raise StoreError(f"redis: {e}") from e

    def mark_down(self, error: str) -> None:
        self.last_error = error
        if self.up:
            log.warning("redis %s is down: %s", self.display_url, error)
            self.up = False
            self.last_change = time.time()
            self._gauge.set(0)
            if self._became_up is not None:
                self._became_up.clear()
        self._ensure_probe()

    def _ensure_probe(self) -> None:
        if (self._probe is None or self._probe.done()) and not self._closed:
            with contextlib.suppress(RuntimeError):  # no running loop: the next call starts it
                self._probe = asyncio.get_running_loop().create_task(self._probe_loop())

    def _mark_up(self) -> None:
        if not self.up:
            log.warning("redis %s is up again", self.display_url)
            self.up = True
            self.last_change = time.time()
        self._gauge.set(1)
        if self._became_up is not None:
            self._became_up.set()

    async def wait_up(self, timeout: float) -> bool:
        """Wait until Redis is (known) up; False after `timeout`. For listeners that must
        resubscribe, not for request paths."""
        if self.up:
            return True
        if self._became_up is None:
            self._became_up = asyncio.Event()
        try:
            async with asyncio.timeout(timeout):
                await self._became_up.wait()
        except TimeoutError:
            return False
        return True

    async def _probe_loop(self, first: bool = False) -> None:
        """PING until it answers; every `probe_interval` while it does not."""
        while not self._closed:
            if not first:
                await asyncio.sleep(self.settings.probe_interval)
            first = False
            try:
                async with asyncio.timeout(self.timeout):
                    await self.client.ping()
            except _PROBE_FAILURES as e:
                self.mark_down(
                    _describe(e) if not isinstance(e, TimeoutError) else "no answer to PING"
                )
                continue
            except redis_errors.RedisError as e:  # e.g. NOAUTH: up, but we cannot use it
                self.mark_down(str(e))
                continue
            self._mark_up()
            return

    async def aclose(self) -> None:
        self._closed = True
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._probe
        closer = getattr(self.client, "aclose", None) or self.client.close
        with contextlib.suppress(Exception):
            await closer()


def connect(settings: RedisSettings, previous: RedisConnection | None) -> RedisConnection:
    """The connection for `settings`: `previous` itself when its settings are the same."""
    if previous is not None and previous.settings == settings and not previous._closed:
        return previous
    return RedisConnection(settings)


def is_unavailable(e: BaseException) -> bool:
    """True for the errors that mean Redis is not there (not that it refused a command)."""
    return isinstance(e, _UNAVAILABLE)


def _describe(e: BaseException) -> str:
    return str(e) or type(e).__name__


def _make_client(s: RedisSettings) -> Redis:
    common: dict[str, Any] = {
        # No socket read timeout: `call` bounds every operation (a blocking XREADGROUP may
        # legitimately wait longer than `timeout`, given a longer one).
        "socket_timeout": None,
        "socket_connect_timeout": s.timeout,
        "retry": Retry(NoBackoff(), 1),
    }
    if s.sentinel is not None:
        sentinels = [split_address(a) for a in s.sentinel.addresses]
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": s.timeout,
            "socket_connect_timeout": s.timeout,
        }
        if s.sentinel.password is not None:
            sentinel_kwargs["password"] = s.sentinel.password
        manager = Sentinel(
            sentinels,
            sentinel_kwargs=sentinel_kwargs,
            db=s.db or 0,
            username=s.username,
            password=s.password,
            **common,
        )
        client: Redis = manager.master_for(s.sentinel.master, max_connections=s.max_connections)
        return client
    assert s.url is not None  # the schema requires one of url or sentinel
    # Blocking: past max_connections a call waits for a free connection (within its timeout)
    # instead of failing as if Redis were down.
    pool = BlockingConnectionPool.from_url(
        s.url, max_connections=s.max_connections, timeout=None, **common
    )
    return Redis(connection_pool=pool)
