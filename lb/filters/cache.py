"""The response cache as a filter, on routes with `cache` (the rules: lb.core.cache_policy and
lb.core.cache_keys; the tiers, flights and purges: lb.cache.cache).

Request phase: a GET or HEAD the cache may answer is looked up, in the in-process tier first
(a fresh hit is answered at once, without a task), then in Redis (the request waits on the
lookup, bounded). A fresh entry answers (X-Cache: HIT, or a 304 to the client's own
conditional); a stale one within stale-while-revalidate answers too (STALE) while one
background call refreshes it; one that must be validated is sent as a conditional request by
the filter itself (REVALIDATED on a 304; a stale answer when the origin fails and
stale-if-error allows). A miss goes on to the server, behind the first concurrent miss for the
same URL (collapsed). Redis down: BYPASS, after at most the Redis timeout.

Response phase: a storable response (RFC 9111 §3) is kept while it streams to the client, up
to `max_object_size`, and stored when it ends; lb's targeted fields are taken off what the
client gets. After an unsafe request succeeds, its target and Location/Content-Location are
invalidated (§4.4).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

from lb.cache.cache import URI_TAG, ResponseCache, path_tags
from lb.config.cache import CacheConfig, RouteCache
from lb.core.cache_entry import (
    Entry,
    decode_variants,
    encode_variants,
    variant_store_key,
)
from lb.core.cache_keys import invalidation_targets, primary_key, variant_key
from lb.core.cache_policy import (
    CONDITIONAL_FIELDS,
    ERROR_STATUSES,
    SAFE_METHODS,
    CacheSettings,
    Decision,
    RequestDirectives,
    client_conditional_matches,
    conditional_request_fields,
    current_age,
    fields_to_strip,
    freshen,
    lookup_decision,
    may_serve_stale_on_error,
    request_directives,
    request_is_cacheable,
    storable,
    stored_meta,
)
from lb.core.errors import Reason
from lb.core.forwarding import request_to_server
from lb.core.http import RequestHead, ResponseHead
from lb.filters.context import BuildContext, Services
from lb.proxy.http.collect import Collected, TooLarge, collect
from lb.proxy.http.pipeline import Answer, Filter, RequestResult
from lb.proxy.http.session import Session
from lb.stores import StoreUnavailable

log = logging.getLogger("lb.cache")

HIT, MISS, STALE, REVALIDATED, BYPASS = b"HIT", b"MISS", b"STALE", b"REVALIDATED", b"BYPASS"
# Fields a 304 carries from the 200 it stands for (RFC 9110 §15.4.5).
_NOT_MODIFIED_FIELDS = frozenset(
    {b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary"}
)


class _State:
    """The cache's part of one request (in `session.vars["cache"]`)."""

    __slots__ = (
        "capture",
        "captured",
        "directives",
        "flight",
        "head",
        "key",
        "request_time",
        "result",
        "stored_key",
        "token",
        "unsafe",
    )

    def __init__(self, key: str | None, result: bytes = MISS) -> None:
        self.key = key  # the primary key (None: the request does not use the cache)
        self.stored_key = key  # where its entry is: the primary key, or a variant's
        self.result = result
        self.directives = RequestDirectives()
        self.request_time = time.time()
        self.flight = False  # this request fetches for the others of its key (end_flight)
        self.token: str | None = None  # the store's collapse lock, when this request holds it
        self.capture: list[bytes] | None = None  # the body, while it may be stored
        self.captured = 0
        self.head: ResponseHead | None = None  # the response, for storing or invalidating
        self.unsafe = False  # an unsafe method: invalidate on success


class _Head:
    """A stored entry's status and fields, for the policy functions."""

    __slots__ = ("headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.headers = headers


class CacheFilter(Filter):
    name = "cache"

    def __init__(
        self, route: str, cfg: RouteCache, top: CacheConfig, services: Services, wait: float
    ) -> None:
        self.route = route
        self.services = services
        self.settings = s = CacheSettings(
            default_ttl=cfg.default_ttl,
            heuristic=cfg.heuristic,
            stale_while_revalidate=cfg.stale_while_revalidate,
            stale_if_error=cfg.stale_if_error,
            honour_client_no_cache=cfg.client_no_cache == "honour",
            allow_set_cookie=cfg.allow_set_cookie,
            lb_field=top.lb_field.lower().encode("latin-1"),
            tag_header=top.tag_header.lower().encode("latin-1"),
            key_query=cfg.key.query,
            key_headers=tuple(h.lower().encode("latin-1") for h in cfg.key.headers),
            key_cookies=tuple(cfg.key.cookies),
            max_object_size=top.max_object_size,
        )
        # Off every answer: lb's targeted fields, and a server's own X-Cache (lb sets it).
        self.strip = (*fields_to_strip(s), b"x-cache")
        self.strip_hit = frozenset((*self.strip, b"age"))  # a hit's Age is lb's alone
        self.collapse_timeout = top.collapse_timeout
        self.wait_timeout = wait  # a lookup, a collapsed wait, or a revalidation

    @property
    def cache(self) -> ResponseCache:
        return self.services.cache  # read per request: kept across reloads by the process

    # Request phase ---------------------------------------------------------------------------

    def on_request(self, session: Session) -> RequestResult:
        head = session.head
        assert head is not None
        method = head.method
        if method != "GET" and method != "HEAD":
            state = _State(None, BYPASS)
            state.unsafe = method not in SAFE_METHODS
            _set_state(session, state)
            return None
        if not request_is_cacheable(head, self.settings):
            _set_state(session, _State(None, BYPASS))
            return None
        key = primary_key(head, session.proto.decode(), self.settings)
        state = _State(key)
        state.directives = request_directives(head)
        _set_state(session, state)
        cache = self.cache
        found = self._local(state, head, cache)
        if isinstance(found, Entry):
            result = self._decide(session, state, found)
            if result is not None:
                return result
        elif cache.passes.get(key, 0.0) > time.monotonic():
            return None  # lately not storable: straight to the server, not behind the others
        elif cache.shared is not None:
            return self._lookup_shared(session, state)
        return self._miss(session, state)

    def _local(self, state: _State, head: RequestHead, cache: ResponseCache) -> Entry | None:
        found = cache.get_local(state.stored_key or "")
        if isinstance(found, bytes):  # a variants record: the entry is under a variant key
            vary = decode_variants(found)
            if vary is None:
                return None
            state.stored_key = variant_store_key(state.key or "", variant_key(vary, head))
            found = cache.get_local(state.stored_key)
        return found if isinstance(found, Entry) else None

    def _decide(self, session: Session, state: _State, entry: Entry) -> RequestResult:
        """What a matching entry means for this request; None: a miss."""
        now = time.time()
        decision = lookup_decision(entry.meta, state.directives, self.settings, now)
        if decision is Decision.FRESH:
            return self._serve(session, state, entry, HIT, now)
        if decision is Decision.STALE_WHILE_REVALIDATE:
            self._refresh(session, state, entry)
            return self._serve(session, state, entry, STALE, now)
        if decision is Decision.REVALIDATE:
            return self._revalidate(session, state, entry)
        if decision is Decision.GATEWAY_TIMEOUT:
            return _only_if_cached()
        return None

    def _miss(self, session: Session, state: _State) -> RequestResult:
        if state.directives.only_if_cached:
            return _only_if_cached()
        flight = self.cache.begin_flight(state.key or "")
        if flight is not None:
            return self._after_flight(session, state, flight)
        state.flight = True
        return None

    async def _lookup_shared(self, session: Session, state: _State) -> Answer | None:
        cache = self.cache
        head = session.head
        assert head is not None and state.key is not None
        try:
            found = await cache.get(state.key)
            if isinstance(found, bytes):
                vary = decode_variants(found)
                state.stored_key = variant_store_key(state.key, variant_key(vary or (), head))
                found = await cache.get(state.stored_key)
            if isinstance(found, Entry):
                result = self._decide(session, state, found)
                if result is not None:
                    return await _resolve(result)
            if state.directives.only_if_cached:
                return _only_if_cached()
            flight = cache.begin_flight(state.key)
            if flight is not None:
                return await self._after_flight(session, state, flight)
            state.flight = True
            token = await cache.lock(state.key)
            if token is None:  # another process fetches it: wait for it in the store
                deadline = time.monotonic() + self.collapse_timeout
                found, token = await cache.wait_in_store(
                    state.stored_key or state.key, state.key, deadline
                )
                if isinstance(found, Entry):
                    result = self._decide(session, state, found)
                    if result is not None:
                        return await _resolve(result)
            state.token = token
            return None
        except StoreUnavailable as err:
            log.debug("cache bypassed for %s: %s", state.key, err)
            state.result = BYPASS
            return None

    async def _after_flight(
        self, session: Session, state: _State, flight: asyncio.Future[None]
    ) -> Answer | None:
        """Another request of this process fetches the same URL: wait for it, look again."""
        try:
            await asyncio.wait_for(asyncio.shield(flight), self.collapse_timeout)
        except TimeoutError:
            return None
        head = session.head
        assert head is not None
        state.stored_key = state.key
        found = self._local(state, head, self.cache)
        if found is None and self.cache.shared is not None:
            try:
                value = await self.cache.get(state.stored_key or "")
                found = value if isinstance(value, Entry) else None
            except StoreUnavailable:
                found = None
        if found is not None:
            result = self._decide(session, state, found)
            if result is not None:
                return await _resolve(result)
        return None

    def _serve(
        self, session: Session, state: _State, entry: Entry, result: bytes, now: float
    ) -> Answer:
        state.result = result
        head = session.head
        assert head is not None
        age = b"%d" % int(current_age(entry.meta, now))
        if client_conditional_matches(head, entry.meta):
            fields = [f for f in entry.headers if f[0].lower() in _NOT_MODIFIED_FIELDS]
            fields += [(b"age", age), (b"x-cache", result)]
            return Answer(304, b"Not Modified", fields)
        rendered = entry.rendered
        if rendered is None:  # once per entry: the fields a hit sends, as bytes
            strip = self.strip_hit
            entry.rendered = rendered = b"".join(
                [b"\r\n%s: %s" % f for f in entry.headers if f[0].lower() not in strip]
            )
        raw = b"%s\r\nage: %s\r\nx-cache: %s" % (rendered, age, result)
        return Answer(entry.status, entry.reason, None, entry.body, raw=raw)

    # Validation and refresh: calls the filter makes itself ----------------------------------

    async def _revalidate(self, session: Session, state: _State, entry: Entry) -> Answer | None:
        head = session.head
        assert head is not None
        try:
            got = await self._fetch(session, _conditional(head, entry))
        except TooLarge:
            return None  # a new response too large to keep: the request fetches it itself
        now = time.time()
        if got.head is None or got.head.status in ERROR_STATUSES:
            if may_serve_stale_on_error(entry.meta, now):
                return self._serve(session, state, entry, STALE, now)
            if got.head is None:
                return Answer.refuse(got.failure or Reason.backend_failed, got.detail)
        assert got.head is not None
        if got.head.status == 304:
            fresh = self._freshened(head, state, entry, got.head, now)
            if fresh is None:
                return None  # the 304 is for another response: fetch this one anew
            return self._serve(session, state, fresh, REVALIDATED, now)
        # A new response: it answers the client, and is stored if it may be.
        state.result = MISS
        self._store_collected(_conditional(head, entry), state, got, now)
        fields = [f for f in got.head.headers if f[0].lower() not in self.strip]
        fields.append((b"x-cache", MISS))
        return Answer(got.head.status, got.head.reason, fields, got.body)

    def _refresh(self, session: Session, state: _State, entry: Entry) -> None:
        """stale-while-revalidate: one background refresh per key in this process."""
        cache = self.cache
        key = state.stored_key or ""
        if key in cache.refreshing:
            return
        cache.refreshing.add(key)
        head = session.head
        assert head is not None
        cache.background(self._refresh_now(session, state, entry, _conditional(head, entry)))

    async def _refresh_now(
        self, session: Session, state: _State, entry: Entry, request: RequestHead
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
                    self._store_collected(request, state, got, now)
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
        self, request: RequestHead, state: _State, entry: Entry, head: ResponseHead, now: float
    ) -> Entry | None:
        merged = freshen(list(entry.headers), head.headers, now)
        if merged is None:
            return None
        response = _Head(entry.status, merged)
        meta = stored_meta(request, response, self.settings, state.request_time, now)
        fresh = Entry(meta, entry.status, entry.reason, tuple(merged), entry.body)
        if storable(request, response, self.settings, now):
            self._put(state, fresh, request)
        elif state.key is not None:
            # The 304 made it private or no-store (§5.2.2.7): answer this client, keep nothing.
            self.cache.invalidate([state.key.split(" #", 1)[0]])
        return fresh

    def _store_collected(
        self, head: RequestHead, state: _State, got: Collected, now: float
    ) -> None:
        assert got.head is not None
        verdict = storable(head, got.head, self.settings, now)
        if not verdict:
            return
        fields = [f for f in got.head.headers if f[0].lower() not in verdict.strip]
        response = _Head(got.head.status, fields)
        meta = stored_meta(head, response, self.settings, state.request_time, now)
        self._put(
            state, Entry(meta, got.head.status, got.head.reason, tuple(fields), got.body), head
        )

    def _put(self, state: _State, entry: Entry, request: RequestHead) -> None:
        meta = entry.meta
        # Kept past its freshness as long as it may still serve: stale windows, or validation.
        keep = max(meta.stale_while_revalidate, meta.stale_if_error)
        if meta.etag is not None or meta.last_modified is not None:
            keep = max(keep, meta.freshness_lifetime, 60.0)
        ttl = meta.freshness_lifetime + keep
        if ttl <= 0 or state.key is None:
            return
        # By URI too: a §4.4 invalidation then removes every version of it by tag, not scan.
        tags = [*meta.tags, *path_tags(request.path), URI_TAG + state.key.split(" #", 1)[0]]
        cache = self.cache
        if meta.vary:
            cache.put(state.key, encode_variants(meta.vary), ttl, tags)
            key = variant_store_key(state.key, variant_key(meta.vary, request))
            cache.put(key, entry, ttl, tags)
        else:
            cache.put(state.key, entry, ttl, tags)

    # Response phase --------------------------------------------------------------------------

    def on_response_head(self, session: Session, head: ResponseHead, from_server: bool) -> None:
        if not from_server:
            return  # lb's own answers: the cache's carry their X-Cache already
        state: _State | None = session.vars.get("cache") if session.vars else None
        if state is not None:
            if state.unsafe:
                state.head = head
            elif state.key is not None and state.result != BYPASS:
                request = session.head
                assert request is not None
                if request.method == "GET" and storable(request, head, self.settings, time.time()):
                    state.head = _copy(head)  # as the server sent it, before the strip below
                    state.capture = []
                    self.cache.passes.pop(state.key, None)
                elif request.method == "GET":
                    # Not storable: for a while, misses of this URL do not wait for each
                    # other (Varnish's hit-for-pass).
                    self.cache.mark_pass(state.key)
            session.add_response_field(b"x-cache", state.result)
        for name in self.strip:
            if head.has_field(name):
                head.remove_field(name)

    def on_response_body(self, session: Session, data: bytes) -> bytes:
        state: _State | None = session.vars.get("cache") if session.vars else None
        if state is not None and state.capture is not None:
            state.captured += len(data)
            if state.captured > self.settings.max_object_size:
                state.capture = None  # streams on, not stored
            else:
                state.capture.append(data)
        return data

    def on_response_end(self, session: Session) -> None:
        state: _State | None = session.vars.get("cache") if session.vars else None
        if state is None or state.head is None:
            return
        request = session.head
        assert request is not None
        head = state.head
        if state.unsafe:
            if 200 <= head.status < 400:
                scheme = session.proto.decode()
                self.cache.invalidate(invalidation_targets(request, head, scheme, self.settings))
            return
        if state.capture is not None:
            got = Collected(head, b"".join(state.capture))
            state.capture = None
            self._store_collected(request, state, got, time.time())

    def on_log(self, session: Session) -> None:
        state: _State | None = session.vars.get("cache") if session.vars else None
        if state is None:
            return
        cache = self.cache
        cache.count(self.route, state.result)
        if state.flight and state.key is not None:
            cache.end_flight(state.key)
        if state.token:
            cache.unlock(state.key or "", state.token)

    def on_wait_timeout(self, session: Session) -> Answer | None:
        state: _State | None = session.vars.get("cache") if session.vars else None
        if state is not None:
            state.result = BYPASS
        return None


def _copy(head: ResponseHead) -> ResponseHead:
    return ResponseHead(
        head.status,
        head.reason,
        head.version,
        list(head.headers),
        head.keep_alive,
        head.content_length,
        head.chunked,
    )


def _set_state(session: Session, state: _State) -> None:
    if session.vars is None:
        session.vars = {"cache": state}
    else:
        session.vars["cache"] = state


def _conditional(head: RequestHead, entry: Entry) -> RequestHead:
    """The request as lb validates its entry: the client's own conditionals replaced by the
    entry's validators (RFC 9111 §4.3.1)."""
    fields = [f for f in head.headers if f[0].lower() not in CONDITIONAL_FIELDS]
    fields += conditional_request_fields(entry.meta)
    return RequestHead("GET", head.target, head.version, fields)


def _only_if_cached() -> Answer:
    # RFC 9111 §5.2.1.7: only-if-cached and nothing usable stored: 504.
    answer = Answer.refuse(Reason.backend_timeout, "only-if-cached: not in the cache")
    answer.fields.append((b"x-cache", MISS))
    return answer


async def _resolve(result: Any) -> Answer | None:
    if isinstance(result, Answer) or result is None:
        return result
    return await result


def build(ctx: BuildContext) -> Filter | None:
    route = ctx.route
    if route is None or route.cache is None:
        return None
    redis = ctx.config.redis
    redis_wait = 3 * redis.timeout if redis is not None else 0.0
    top = ctx.config.cache
    # A lookup, a collapsed wait, then possibly a revalidation: each bounded on its own.
    wait = redis_wait + top.collapse_timeout + route.timeouts.connect + route.timeouts.request + 1
    return CacheFilter(route.name, route.cache, top, ctx.services, wait)
