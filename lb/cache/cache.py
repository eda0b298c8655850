"""The response cache of one process: its tiers, collapsed misses, and purges.

Theory of operation. Entries live under store keys (lb.core.cache_keys, lb.core.cache_entry):
a primary key per URL, and for a URL whose responses vary, a variants record there and each
variant under its own key. Tiers:

- `local` (lb.cache.local): decoded entries in this process. Without `redis:` it is the cache.
- `shared`: a `CacheStore` in Redis, when `redis:` is set: every worker and every lb instance
  reads and writes it; `local` then holds entries for at most `local_ttl` seconds and drops
  those another process changed (the store's invalidation messages; a lost subscription
  clears it whole).

A store is written in the background: the response is streamed to its client first. When
Redis is down or slow, a read or write fails within the Redis timeout (StoreUnavailable):
the request bypasses the cache, and nothing waits longer.

Collapsed misses: the first miss of a key in a process makes a `flight`; other requests for it
in the same process wait on that flight (bounded by `collapse_timeout`) and then look again.
With Redis, the flight also takes a short lock (lease) in the store, and the first miss of
the other processes wait for the entry to appear there, polling, within the same bound; past
it they go to the origin themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Iterable
from typing import Any

from lb.cache.local import LocalTier
from lb.config.cache import CacheConfig
from lb.core.cache_entry import Entry, decode_entry, decode_variants, encode_entry
from lb.metrics import (
    CACHE_BYTES,
    CACHE_COLLAPSED,
    CACHE_OBJECTS,
    CACHE_REQUESTS,
    CACHE_STORE_ERRORS,
)
from lb.stores import CacheStore, Invalidation, StoreError, StoreUnavailable, Subscription

log = logging.getLogger("lb.cache")

PASS_TTL = 30.0  # seconds a URL whose response was not storable skips collapsing
MAX_PASSES = 10_000
URI_TAG = "uri:"  # every entry is tagged with its URI key: §4.4 invalidation is by tag
PATH_TAG = "path:"  # every entry is tagged with its path: a purge by path is a purge by tag
DIR_TAG = "dir:"  # ... and with each directory above it: a purge by prefix ending in "/"


def path_tags(path: str) -> list[str]:
    """The automatic tags of an entry for `path`: the path, and each directory prefix."""
    tags = [PATH_TAG + path]
    i = path.find("/")
    while i != -1:
        tags.append(DIR_TAG + path[: i + 1])
        i = path.find("/", i + 1)
    return tags


class Count:
    """A number of requests its keeper adds to per request (`count.n += 1`: a field of a
    compiled object, no lookup or boxed int), added to the metric at each flush."""

    def __init__(self) -> None:
        self.n = 0


class ResponseCache:
    def __init__(self, settings: CacheConfig, shared: CacheStore | None) -> None:
        self.settings = settings
        self.local = LocalTier(settings.max_memory)
        self.shared = shared
        self.flights: dict[str, asyncio.Future[None]] = {}  # misses on their way, by key
        self.refreshing: set[str] = set()  # keys with a background refresh under way
        # Keys whose last response could not be stored, until when (monotonic): their misses
        # go straight to the server instead of queuing behind one another.
        self.passes: dict[str, float] = {}
        self._subscription: Subscription | None = None
        self._subscribing: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._errors = 0  # store errors since the last flush (lb_cache_store_errors_total)
        self._collapsed = 0
        # lb_cache_requests_total, counted by the filters (`counter`) and handed over a few
        # times a second: a hit must cost less than the request it saves.
        self._counters: dict[tuple[str, bytes], Count] = {}  # see `counter`

    # Configuration -------------------------------------------------------------------------

    def reconfigure(self, settings: CacheConfig, shared: CacheStore | None) -> None:
        """A reload: entries stay; a changed store means the local tier cannot be trusted."""
        if shared is not self.shared:
            self.local.clear()
            self._unsubscribe()
            self.shared = shared
        if settings.max_memory != self.settings.max_memory:
            self.local.max_bytes = settings.max_memory
        self.settings = settings
        self.start()

    def start(self) -> None:
        """Follow the shared store's invalidations (needs a running loop)."""
        if self.shared is not None and self._subscription is None and self._subscribing is None:
            self._subscribing = asyncio.get_running_loop().create_task(self._subscribe())

    async def _subscribe(self) -> None:
        shared = self.shared
        assert shared is not None
        try:
            self._subscription = await shared.subscribe_invalidations(self._invalidated)
        except StoreError as err:
            log.warning("cache: cannot follow invalidations yet (%s); local tier off", err)
        finally:
            self._subscribing = None

    def _unsubscribe(self) -> None:
        sub, self._subscription = self._subscription, None
        if sub is not None:
            self.background(sub.close())

    async def close(self) -> None:
        self._unsubscribe()
        for task in list(self._tasks):
            task.cancel()

    def _invalidated(self, invalidation: Invalidation) -> None:
        if invalidation.everything:
            self.local.clear()
        else:
            self.local.drop(invalidation.keys)

    @property
    def local_ttl(self) -> float | None:
        """How long the local tier may keep an entry: no bound without a shared tier; with one,
        `local_ttl`, and 0 (no local tier) while invalidations cannot be followed."""
        if self.shared is None:
            return None
        return self.settings.local_ttl if self._subscription is not None else 0.0

    # Reading ------------------------------------------------------------------------------

    def get_local(self, key: str) -> Entry | bytes | None:
        return self.local.get(key)

    async def get(self, key: str) -> Entry | bytes | None:
        """The entry (or variants record) under `key`: local tier, then the shared one. A
        value that does not decode is dropped and reads as absent. Raises StoreUnavailable."""
        found = self.local.get(key)
        if found is not None or self.shared is None:
            return found
        try:
            data = await self.shared.get(key)
        except StoreUnavailable:
            self._errors += 1
            raise
        if data is None:
            return None
        value: Entry | bytes | None
        if data[:4] == b"LBV1":
            value = data if decode_variants(data) is not None else None
        else:
            value = decode_entry(data)
        if value is None:
            log.warning("cache: dropping a corrupt or truncated entry under %r", key)
            self.background(self._delete_quietly([key]))
            return None
        ttl = self.local_ttl
        if ttl:
            self.local.set(key, value, ttl)
        return value

    # Writing ------------------------------------------------------------------------------

    def put(self, key: str, value: Entry | bytes, ttl: float, tags: list[str]) -> None:
        """Store now in the local tier, and in the background in the shared one."""
        local_ttl = self.local_ttl
        self.local.set(key, value, ttl if local_ttl is None else min(ttl, local_ttl), tags)
        if self.shared is not None:
            data = (
                value if isinstance(value, bytes) else encode_entry(value, self.settings.compress)
            )
            self.background(self._put_shared(key, data, ttl, tags))

    async def _put_shared(self, key: str, data: bytes, ttl: float, tags: list[str]) -> None:
        shared = self.shared
        assert shared is not None
        try:
            await shared.set(key, data, ttl, tags)
            # Other processes may hold an older version in their local tier.
            await shared.publish_invalidation(Invalidation((key,)))
        except StoreError as err:
            self._errors += 1
            log.info("cache: not stored in redis (%s): %s", key, err)

    async def _delete_quietly(self, keys: list[str]) -> None:
        if self.shared is not None:
            with contextlib.suppress(StoreError):
                await self.shared.delete(keys)

    def invalidate(self, targets: Iterable[str]) -> None:
        """§4.4 invalidation after an unsafe request: each target URI key, every variant and
        every header/cookie-keyed version of it (they share its `URI_TAG`), here and (in the
        background) in the store."""
        for target in targets:
            self.local.drop_tag(URI_TAG + target)
            if self.shared is not None:
                self.background(self._invalidate_shared(target))

    async def _invalidate_shared(self, target: str) -> None:
        shared = self.shared
        assert shared is not None
        try:
            await shared.purge_tag(URI_TAG + target)
        except StoreError as err:
            self._errors += 1
            log.warning("cache: invalidation of %s not done in redis: %s", target, err)

    # Purges (admin API) -------------------------------------------------------------------

    async def purge(self, kind: str, value: str) -> int:
        """Remove entries by `path` (any host), `prefix` (a path ending in "/", or a URL
        prefix "https://host/..."), `tag`, or `all`; how many went (from the shared store when
        there is one, else from this process). Raises StoreUnavailable."""
        local = self.local
        if kind == "all":
            count = local.clear()
            if self.shared is not None:
                count = await self.shared.purge_all()
            return count
        if kind == "prefix" and not value.startswith("/"):
            key_prefix = "GET " + value
            count = local.drop_prefix(key_prefix)
            if self.shared is not None:
                count = await self.shared.purge_prefix(key_prefix)
            return count
        tag = {"path": PATH_TAG, "prefix": DIR_TAG, "tag": ""}[kind] + value
        count = local.drop_tag(tag)
        if self.shared is not None:
            count = await self.shared.purge_tag(tag)
        return count

    # Collapsed misses ---------------------------------------------------------------------

    def begin_flight(self, key: str) -> asyncio.Future[None] | None:
        """The flight already under way for `key` (wait on it), or None: this request is the
        flight now, and must `end_flight` whatever happens."""
        flight = self.flights.get(key)
        if flight is not None:
            self._collapsed += 1
            return flight
        self.flights[key] = asyncio.get_running_loop().create_future()
        return None

    def mark_pass(self, key: str) -> None:
        """`key`'s response was not storable: its misses skip collapsing for PASS_TTL. A pass
        with more than half of that left is left as it is: a URL that is never storable (an
        API's no-store) is marked on every response, and most need no write."""
        passes = self.passes
        now = time.monotonic()
        until = passes.get(key)
        if until is not None:
            if until - now > PASS_TTL / 2:
                return
            del passes[key]  # (inserted again below: the newest, last to go)
        passes[key] = now + PASS_TTL
        if len(passes) > MAX_PASSES:
            del passes[next(iter(passes))]  # the one marked longest ago

    def end_flight(self, key: str) -> None:
        flight = self.flights.pop(key, None)
        if flight is not None and not flight.done():
            flight.set_result(None)

    async def lock(self, key: str) -> str | None:
        """Take the store's collapse lock for `key`: a token, or None when another process
        holds it. Without a shared store there is nothing to take: ""."""
        if self.shared is None:
            return ""
        return await self.shared.try_lock("collapse:" + key, self.settings.collapse_timeout)

    def unlock(self, key: str, token: str | None) -> None:
        if token and self.shared is not None:
            self.background(self._unlock(key, token))

    async def _unlock(self, key: str, token: str) -> None:
        assert self.shared is not None
        with contextlib.suppress(StoreError):
            await self.shared.unlock("collapse:" + key, token)

    async def wait_in_store(
        self, key: str, lock_key: str, deadline: float
    ) -> tuple[Entry | bytes | None, str | None]:
        """Another process fetches `key` (it holds the collapse lock of `lock_key`): poll the
        store for the entry until `deadline`. When the lock is let go with no entry stored
        (the response was not storable, or failed), this request takes the lock and fetches:
        (None, token). Past the deadline: (None, None), and it fetches without the lock."""
        self._collapsed += 1
        pause = 0.01
        while time.monotonic() < deadline:
            await asyncio.sleep(pause)
            found = await self.get(key)
            if found is not None:
                return found, None
            token = await self.lock(lock_key)
            if token is not None:
                return None, token
            pause = min(pause * 2, 0.1)
        return None, None

    # Upkeep -------------------------------------------------------------------------------

    def background(self, coro: Coroutine[Any, Any, Any]) -> None:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def counter(self, key: tuple[str, bytes]) -> Count:
        """The count of `key` (route, result), which its caller keeps (no lookup per
        request), added to the metric at each flush. One per key, whoever asks."""
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = Count()
        return counter

    def flush_metrics(self) -> None:
        for (route, result), counter in self._counters.items():
            if counter.n:
                CACHE_REQUESTS.labels(route, result.decode().lower()).inc(counter.n)
                counter.n = 0
        CACHE_OBJECTS.labels("local").set(len(self.local))
        CACHE_BYTES.labels("local").set(self.local.bytes)
        if self._errors:
            CACHE_STORE_ERRORS.inc(self._errors)
            self._errors = 0
        if self._collapsed:
            CACHE_COLLAPSED.inc(self._collapsed)
            self._collapsed = 0

    def __repr__(self) -> str:
        shared = "redis" if self.shared is not None else "in-process"
        return f"<ResponseCache {shared} {self.local!r}>"
