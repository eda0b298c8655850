"""The response cache as a filter, on routes with `cache`. The rules are lb.core.cache_*; the
tiers, flights and purges lb.cache.cache; this filter's parts: the per-request state
(lb.filters.cache_state), answers from an entry (cache_answers), keeping responses
(cache_writes), and its own calls to validate an entry (cache_revalidation).

Request phase (this module): a GET or HEAD the cache may answer is looked up, in the
in-process tier first (a fresh hit is answered at once, without a task), then in Redis (the
request waits on the lookup, bounded). A fresh entry answers (X-Cache: HIT, or a 304 to the
client's own conditional); a stale one within stale-while-revalidate answers too (STALE) while
one background call refreshes it; one that must be validated is sent as a conditional request
by the filter itself (REVALIDATED on a 304; a stale answer when the origin fails and
stale-if-error allows). A miss goes on to the server, behind the first concurrent miss for the
same URL (collapsed). Redis down: BYPASS, after at most the Redis timeout.

The fast path: most requests are plain (no Cache-Control, Pragma, conditional or Range of
their own: lb.core.cache_request.is_plain). For those, a fresh entry of the in-process tier
answers with the key remembered by scheme, Host and target, one freshness test (`fresh_age`),
no per-request state (the hit is counted at once: no later phase has anything to do for it),
and the stored fields already bytes. Anything else takes the way above.

Response phase (this module): a storable response (RFC 9111 §3) is kept while it streams to
the client, up to `max_object_size`, and stored when it ends; lb's targeted fields are taken
off what the client gets. After an unsafe request succeeds, its target and
Location/Content-Location are invalidated (§4.4).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from lb.cache.cache import Count, ResponseCache
from lb.config.cache import CacheConfig, RouteCache
from lb.core.cache_entry import Entry, decode_variants, variant_store_key
from lb.core.cache_freshness import Decision, fresh_age, lookup_decision
from lb.core.cache_keys import invalidation_targets, primary_key, variant_key
from lb.core.cache_policy import SAFE_METHODS, CacheSettings, fields_to_strip
from lb.core.cache_request import NOT_PLAIN, request_directives, request_is_cacheable
from lb.core.cache_storing import storable
from lb.core.http import RequestHead, ResponseHead
from lb.filters.cache_answers import hit, only_if_cached, serve
from lb.filters.cache_revalidation import Revalidator
from lb.filters.cache_state import BYPASS, HIT, STALE, CacheState, set_state, state_of
from lb.filters.cache_writes import store_collected
from lb.filters.context import BuildContext, Services
from lb.proxy.http.collect import Collected
from lb.proxy.http.pipeline import Answer, Filter, RequestResult
from lb.proxy.http.session import Session
from lb.stores import StoreUnavailable

log = logging.getLogger("lb.cache")

# Plain requests' primary keys remembered per route (CacheFilter._keys): at most this many,
# for targets at most this long (a few MB at worst, whatever URLs clients make up).
_MAX_KEYS = 4096
_MAX_REMEMBERED_TARGET = 512


def _plain(index: dict[bytes, bytes]) -> bool:
    """No field that asks more of the cache than a fresh entry (directives, conditionals,
    ranges): every hit asks. A loop (all() over a generator compiles to one), not
    keys().isdisjoint(), which is a method call when compiled; the names are the index's own,
    whose hashes are kept (lb.core.http)."""
    return all(name not in NOT_PLAIN for name in index)


class CacheFilter(Filter):
    name = "cache"

    def __init__(
        self, route: str, cfg: RouteCache, top: CacheConfig, services: Services, wait: float
    ) -> None:
        self.route = route
        self.services = services
        # The process keeps one ResponseCache across reloads (a reload changes its tiers, not
        # the object): kept here, not read off the plain-Python Proxy by name per request.
        self._cache = services.cache
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
        self._strip_names = frozenset(self.strip)
        self.strip_hit = frozenset((*self.strip, b"age"))  # a hit's Age is lb's alone
        self.collapse_timeout = top.collapse_timeout
        self.wait_timeout = wait  # a lookup, a collapsed wait, or a revalidation
        self.revalidator = Revalidator(services, s, self.strip, self.strip_hit)
        # Primary keys of plain requests by Host, then target (the scheme is the listener's,
        # whose chain this filter is in), unless keys also hold request headers or cookies
        # (see _plain_key). Two lookups, not one by a tuple made, hashed and compared per hit.
        self._keys: dict[bytes | None, dict[bytes, str]] = {}
        self._key_count = 0
        self._remember_keys = not (s.key_headers or s.key_cookies)
        # The hits' count, kept here (ResponseCache.counter); the other results' (MISS,
        # BYPASS...) by result, each taken when first counted.
        self._hits = self._cache.counter((route, HIT))
        self._counts: dict[bytes, Count] = {}

    @property
    def cache(self) -> ResponseCache:
        return self._cache

    # Request phase ---------------------------------------------------------------------------

    def on_request(self, session: Session) -> RequestResult:
        head = session.head
        assert head is not None
        method = head.method
        if method != "GET" and method != "HEAD":
            state = CacheState(None, BYPASS)
            state.unsafe = method not in SAFE_METHODS
            set_state(session, state)
            return None
        if not _plain(head.index):
            if not request_is_cacheable(head, self.settings):
                set_state(session, CacheState(None, BYPASS))
                return None
            primary = primary_key(head, session.proto.decode(), self.settings)
            return self._lookup(session, head, primary, self.cache.get_local(primary))
        # The fast path: a plain request (no directives, no conditionals) for a fresh entry
        # of the in-process tier is answered here, with no per-request state: it is counted
        # now, as nothing is left for the later phases to do.
        host = head.index.get(b"host")
        targets = self._keys.get(host)
        key = targets.get(head.target) if targets is not None else None
        if key is None:
            key = self._plain_key(session, head, host)
        if not key:
            set_state(session, CacheState(None, BYPASS))
            return None
        cache = self._cache
        found = cache.local.get(key)
        if isinstance(found, Entry):
            age = fresh_age(found.meta, time.time())
            if age is not None:
                self._hits.n += 1
                return hit(found, age, self.strip_hit)
        return self._lookup(session, head, key, found)

    def _plain_key(self, session: Session, head: RequestHead, host: bytes | None) -> str:
        """The primary key of a plain request, "" when it may not use the cache (an
        absolute-form target naming another host than Host). Both depend only on the scheme,
        `host` (the Host field) and target then: remembered by those, unless keys hold more."""
        key = ""
        if request_is_cacheable(head, self.settings):
            key = primary_key(head, session.proto.decode(), self.settings)
        if self._remember_keys and len(head.target) <= _MAX_REMEMBERED_TARGET:
            if self._key_count >= _MAX_KEYS:
                self._keys.clear()  # many URLs: start again rather than keep an LRU per request
                self._key_count = 0
            targets = self._keys.get(host)
            if targets is None:
                targets = self._keys[host] = {}
            targets[head.target] = key
            self._key_count += 1
        return key

    def _lookup(
        self, session: Session, head: RequestHead, key: str, found: Entry | bytes | None
    ) -> RequestResult:
        """A cacheable request the fast path did not answer; `found`: the local tier's value
        under its primary key."""
        state = CacheState(key)
        state.directives = request_directives(head)
        set_state(session, state)
        cache = self.cache
        found = self._local(state, head, cache, found)
        if isinstance(found, Entry):
            result = self._decide(session, state, found)
            if result is not None:
                return result
        elif cache.passes.get(key, 0.0) > time.monotonic():
            return None  # lately not storable: straight to the server, not behind the others
        elif cache.shared is not None:
            return self._lookup_shared(session, state)
        return self._miss(session, state)

    def _local(
        self,
        state: CacheState,
        head: RequestHead,
        cache: ResponseCache,
        found: Entry | bytes | None,
    ) -> Entry | None:
        """The entry for this request in the local tier, given what is under its primary key:
        an entry, or a variants record (bytes: the entry is under a variant key)."""
        if isinstance(found, bytes):
            vary = decode_variants(found)
            if vary is None:
                return None
            state.stored_key = variant_store_key(state.key or "", variant_key(vary, head))
            found = cache.get_local(state.stored_key)
        return found if isinstance(found, Entry) else None

    def _decide(self, session: Session, state: CacheState, entry: Entry) -> RequestResult:
        """What a matching entry means for this request; None: a miss."""
        now = time.time()
        decision = lookup_decision(entry.meta, state.directives, self.settings, now)
        head = session.head
        assert head is not None
        if decision is Decision.FRESH:
            return serve(head, state, entry, HIT, now, self.strip_hit)
        if decision is Decision.STALE_WHILE_REVALIDATE:
            self.revalidator.refresh(session, state, entry)
            return serve(head, state, entry, STALE, now, self.strip_hit)
        if decision is Decision.REVALIDATE:
            return self.revalidator.revalidate(session, state, entry)
        if decision is Decision.GATEWAY_TIMEOUT:
            return only_if_cached()
        return None

    def _miss(self, session: Session, state: CacheState) -> RequestResult:
        if state.directives.only_if_cached:
            return only_if_cached()
        flight = self.cache.begin_flight(state.key or "")
        if flight is not None:
            return self._after_flight(session, state, flight)
        state.flight = True
        return None

    async def _lookup_shared(self, session: Session, state: CacheState) -> Answer | None:
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
                return only_if_cached()
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
        self, session: Session, state: CacheState, flight: asyncio.Future[None]
    ) -> Answer | None:
        """Another request of this process fetches the same URL: wait for it, look again."""
        try:
            await asyncio.wait_for(asyncio.shield(flight), self.collapse_timeout)
        except TimeoutError:
            return None
        head = session.head
        assert head is not None
        state.stored_key = state.key
        found = self._local(state, head, self.cache, self.cache.get_local(state.key or ""))
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

    # Response phase --------------------------------------------------------------------------

    def on_response_head(self, session: Session, head: ResponseHead, from_server: bool) -> None:
        if not from_server:
            return  # lb's own answers: the cache's carry their X-Cache already
        state = state_of(session)
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
        head.remove_fields(self._strip_names)

    def on_response_body(self, session: Session, data: bytes) -> bytes:
        state = state_of(session)
        if state is not None and state.capture is not None:
            state.captured += len(data)
            if state.captured > self.settings.max_object_size:
                state.capture = None  # streams on, not stored
            else:
                state.capture.append(data)
        return data

    def on_response_end(self, session: Session) -> None:
        state = state_of(session)
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
            store_collected(self.cache, self.settings, request, state, got, time.time())

    def on_log(self, session: Session) -> None:
        state = state_of(session)
        if state is None:
            return
        cache = self._cache
        counter = self._counts.get(state.result)
        if counter is None:
            counter = self._counts[state.result] = cache.counter((self.route, state.result))
        counter.n += 1
        if state.flight and state.key is not None:
            cache.end_flight(state.key)
        if state.token:
            cache.unlock(state.key or "", state.token)

    def on_wait_timeout(self, session: Session) -> Answer | None:
        state = state_of(session)
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
