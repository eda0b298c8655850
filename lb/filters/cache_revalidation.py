"""Revalidation and refresh: the calls the cache filter makes itself, with no client behind
them (lb.proxy.http.collect), to validate a stored entry (RFC 9111 §4.3).

- `revalidate`: an entry that must be validated before it serves is sent as a conditional
  request while its client waits: a 304 freshens it (REVALIDATED), a new response answers and
  is stored, and when the server fails, stale-if-error may let the entry answer (STALE).
- `refresh`: stale-while-revalidate (RFC 5861 §3): the client got the stale entry already;
  one background call per key in this process (and, with Redis, across processes: a short
  lock in the store) brings it up to date.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Coroutine
from typing import Any

from lb.cache.cache import ResponseCache
from lb.core.cache_entry import Entry
from lb.core.cache_freshness import may_serve_stale_on_error
from lb.core.cache_policy import ERROR_STATUSES, CacheSettings, StoredHead
from lb.core.cache_storing import storable, stored_meta
from lb.core.cache_validation import CONDITIONAL_FIELDS, conditional_request_fields, freshen
from lb.core.errors import Reason
from lb.core.forwarding import request_to_server
from lb.core.http import RequestHead, ResponseHead
from lb.filters.cache_answers import serve
from lb.filters.cache_state import MISS, REVALIDATED, STALE, CacheState
from lb.filters.cache_writes import put, store_collected
from lb.filters.context import Services
from lb.proxy.http.collect import Collected, TooLarge, collect
from lb.proxy.http.pipeline import Answer
from lb.proxy.http.session import Session
from lb.stores import StoreUnavailable

__all__ = ["Revalidator"]

log = logging.getLogger("lb.cache")


class Revalidator:
    """A cached route's revalidations and background refreshes."""

    def __init__(
        self,
        services: Services,
        settings: CacheSettings,
        strip: Collection[bytes],
        strip_hit: Collection[bytes],
    ) -> None:
        self.services = services
        self.settings = settings
        self.strip = strip  # off a new response's fields before it answers
        self.strip_hit = strip_hit  # off a stored entry's fields when it answers

    @property
    def cache(self) -> ResponseCache:
        return self.services.cache  # read per request: kept across reloads by the process

    async def revalidate(self, session: Session, state: CacheState, entry: Entry) -> Answer | None:
        """Validate `entry` while the client waits; None: the request goes on to the server."""
        head = session.head
        assert head is not None
        try:
            got = await self._fetch(session, conditional(head, entry))
        except TooLarge:
            return None  # a new response too large to keep: the request fetches it itself
        now = time.time()
        if got.head is None or got.head.status in ERROR_STATUSES:
            if may_serve_stale_on_error(entry.meta, now):
                return serve(head, state, entry, STALE, now, self.strip_hit)
            if got.head is None:
                return Answer.refuse(got.failure or Reason.backend_failed, got.detail)
        assert got.head is not None
        if got.head.status == 304:
            fresh = self._freshened(head, state, entry, got.head, now)
            if fresh is None:
                return None  # the 304 is for another response: fetch this one anew
            return serve(head, state, fresh, REVALIDATED, now, self.strip_hit)
        # A new response: it answers the client, and is stored if it may be.
        state.result = MISS
        store_collected(self.cache, self.settings, conditional(head, entry), state, got, now)
        fields = [f for f in got.head.headers if f[0].lower() not in self.strip]
        fields.append((b"x-cache", MISS))
        return Answer(got.head.status, got.head.reason, fields, got.body)

    def refresh(self, session: Session, state: CacheState, entry: Entry) -> None:
        """stale-while-revalidate: one background refresh per key in this process."""
        cache = self.cache
        key = state.stored_key or ""
        if key in cache.refreshing:
            return
        cache.refreshing.add(key)
        head = session.head
        assert head is not None
        cache.background(self._refresh_now(session, state, entry, conditional(head, entry)))

    async def _refresh_now(
        self, session: Session, state: CacheState, entry: Entry, request: RequestHead
    ) -> None:
        cache = self.cache
        key = state.stored_key or ""
        try:
            token = await cache.lock("refresh:" + key)
            if token is None:
                return  # another process refreshes it
            try:
                got = await self._fetch(session, request)
                now = time.time()
                if got.head is not None and got.head.status == 304:
                    self._freshened(request, state, entry, got.head, now)
                elif got.head is not None:
                    store_collected(cache, self.settings, request, state, got, now)
            finally:
                cache.unlock("refresh:" + key, token)
        except (TooLarge, StoreUnavailable) as err:
            log.info("cache: background refresh of %s not done: %s", key, err)
        finally:
            cache.refreshing.discard(key)

    def _fetch(self, session: Session, request: RequestHead) -> Coroutine[Any, Any, Collected]:
        """Send `request` to the session's pool with no client behind it; the whole answer."""
        route = session.route
        assert route is not None
        pool = self.services.runtime.pools[session.pool or route.pool or ""]
        call_session = Session(
            request,
            session.client_ip,
            session.proto,
            session.listener,
            session.request_id,
            session.subject,
        )
        call_session.route = route
        call_session.pool = pool.name
        data = request_to_server(
            request, session.client_ip, session.proto, session.request_id, False, session.subject
        )
        limit = self.settings.max_object_size
        timeout = route.timeouts.request
        return collect(self.services, pool, call_session, data, b"", route.retry, timeout, limit)

    def _freshened(
        self,
        request: RequestHead,
        state: CacheState,
        entry: Entry,
        head: ResponseHead,
        now: float,
    ) -> Entry | None:
        """`entry` freshened by the 304 `head` (§4.3.4), and stored; None when the 304 is for
        another response."""
        merged = freshen(list(entry.headers), head.headers, now)
        if merged is None:
            return None
        response = StoredHead(entry.status, merged)
        meta = stored_meta(request, response, self.settings, state.request_time, now)
        fresh = Entry(meta, entry.status, entry.reason, tuple(merged), entry.body)
        if storable(request, response, self.settings, now):
            put(self.cache, state, fresh, request)
        elif state.key is not None:
            # The 304 made it private or no-store (§5.2.2.7): answer this client, keep nothing.
            self.cache.invalidate([state.key.split(" #", 1)[0]])
        return fresh


def conditional(head: RequestHead, entry: Entry) -> RequestHead:
    """The request as lb validates its entry: the client's own conditionals replaced by the
    entry's validators (RFC 9111 §4.3.1)."""
    fields = [f for f in head.headers if f[0].lower() not in CONDITIONAL_FIELDS]
    fields += conditional_request_fields(entry.meta)
    return RequestHead("GET", head.target, head.version, fields)
