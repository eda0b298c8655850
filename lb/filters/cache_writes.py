"""Keeping responses: a whole response (collected while it streamed to its client, or by one
of the filter's own calls) becomes an `Entry` in the cache, under its key, for as long as it
may still serve.

An entry is kept past its freshness while it may still answer: within its stale windows, or,
with a validator, for revalidation. A URL whose responses vary keeps a variants record under
its primary key and each variant under its own key (lb.core.cache_entry). Every entry is
tagged with its URI, its path and each directory above it, so a §4.4 invalidation or a purge
by path or prefix is a purge by tag.
"""

from __future__ import annotations

from lb.cache.cache import URI_TAG, ResponseCache, path_tags
from lb.core.cache_entry import Entry, encode_variants, variant_store_key
from lb.core.cache_keys import variant_key
from lb.core.cache_policy import CacheSettings, StoredHead
from lb.core.cache_storing import storable, stored_meta
from lb.core.http import RequestHead
from lb.filters.cache_state import CacheState
from lb.proxy.http.collect import Collected

__all__ = ["put", "store_collected"]


def store_collected(
    cache: ResponseCache,
    settings: CacheSettings,
    request: RequestHead,
    state: CacheState,
    got: Collected,
    now: float,
) -> None:
    """Store the whole response `got` to `request`, if it may be stored (RFC 9111 §3)."""
    assert got.head is not None
    verdict = storable(request, got.head, settings, now)
    if not verdict:
        return
    fields = [f for f in got.head.headers if f[0].lower() not in verdict.strip]
    response = StoredHead(got.head.status, fields)
    meta = stored_meta(request, response, settings, state.request_time, now)
    entry = Entry(meta, got.head.status, got.head.reason, tuple(fields), got.body)
    put(cache, state, entry, request)


def put(cache: ResponseCache, state: CacheState, entry: Entry, request: RequestHead) -> None:
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
    if meta.vary:
        cache.put(state.key, encode_variants(meta.vary), ttl, tags)
        key = variant_store_key(state.key, variant_key(meta.vary, request))
        cache.put(key, entry, ttl, tags)
    else:
        cache.put(state.key, entry, ttl, tags)
