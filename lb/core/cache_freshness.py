"""Freshness (sans-IO): how long a response stays fresh, how old a stored one is, and what a
lookup does with it: serve, serve stale, revalidate, or go to the server (RFC 9111 §4.2,
§5.2, and RFC 5861's stale-while-revalidate and stale-if-error).

`freshness_lifetime` reads a response once, when it is stored; the rest reads only the
`StoredMeta` kept beside it, so a hit never parses a header. Ages and lifetimes are never
negative, and a clock that steps back never makes a response younger than it was received.
"""

from __future__ import annotations

from enum import Enum

from lb.core.cache_fields import (
    DELTA_MAX,
    date_value,
    delta_seconds,
    first_value,
    parse_http_date,
)
from lb.core.cache_policy import CacheSettings, ResponseLike, StoredMeta, response_directives
from lb.core.cache_request import RequestDirectives

__all__ = [
    "HEURISTIC_STATUSES",
    "Decision",
    "current_age",
    "fresh_age",
    "freshness_lifetime",
    "lookup_decision",
    "may_serve_stale_on_error",
]

# §4.2.2: "a typical setting of this fraction might be 10%"; capped so a page unchanged for
# years is still checked daily.
HEURISTIC_FRACTION = 0.1
HEURISTIC_MAX = 86400.0
# RFC 9110 §15.1: "heuristically cacheable" status codes. 206 is left out: lb stores no
# partial content (lb.core.cache_policy).
HEURISTIC_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})


class Decision(Enum):
    FRESH = "fresh"  # serve the entry: X-Cache HIT
    STALE_WHILE_REVALIDATE = "stale"  # serve it (X-Cache STALE), refresh in the background
    REVALIDATE = "revalidate"  # send a conditional request, serve the entry on a 304
    MISS = "miss"  # forward as is; the entry (if any) cannot be used or validated
    GATEWAY_TIMEOUT = "only-if-cached"  # answer 504: only-if-cached and no usable entry


def freshness_lifetime(response: ResponseLike, settings: CacheSettings, now: float) -> float:
    """§4.2.1, for a shared cache, in this order: s-maxage, max-age, Expires minus Date
    (Date absent: `now`, the time received). Then, when the response gives none of these and
    its status is heuristically cacheable: `settings.default_ttl`, or if `settings.heuristic`
    a tenth of the time since Last-Modified, at most a day (§4.2.2). Invalid values
    (max-age=abc, conflicting duplicates, Expires: 0) give 0: already stale."""
    fields = response.by_name
    d, targeted = response_directives(fields, settings)
    for name in ("s-maxage", "max-age"):
        if name in d:
            value = delta_seconds(d[name])
            return 0.0 if value is None else float(value)
    if not targeted and b"expires" in fields:
        # RFC 9213 §2.2: a cache using a targeted field ignores Expires as well.
        values = fields[b"expires"]
        expires = parse_http_date(values[0], now) if len(set(values)) == 1 else None
        if expires is None:
            # §5.3: "invalid date formats, especially the value '0'" mean "already expired".
            return 0.0
        date = date_value(fields, now)
        return max(0.0, min(expires - date, float(DELTA_MAX)))
    if response.status not in HEURISTIC_STATUSES:
        return 0.0
    if settings.default_ttl is not None:
        return max(0.0, settings.default_ttl)
    if settings.heuristic:
        modified = parse_http_date(first_value(fields, b"last-modified"), now)
        if modified is not None:
            since = date_value(fields, now) - modified
            return max(0.0, min(since * HEURISTIC_FRACTION, HEURISTIC_MAX))
    return 0.0


def current_age(meta: StoredMeta, now: float) -> float:
    """§4.2.3, each term clamped at 0 so a clock that steps back never makes age negative:

    apparent_age = max(0, response_time - date_value)
    response_delay = response_time - request_time
    corrected_age_value = age_value + response_delay
    corrected_initial_age = max(apparent_age, corrected_age_value)
    resident_time = now - response_time
    current_age = corrected_initial_age + resident_time
    """
    # Comparisons rather than max(): this runs on every hit, and they cost a quarter as much.
    response_time = meta.response_time
    apparent_age = response_time - meta.date_value
    response_delay = response_time - meta.request_time
    corrected_age_value = meta.age_value + (response_delay if response_delay > 0.0 else 0.0)
    corrected_initial_age = (
        corrected_age_value if corrected_age_value > apparent_age else apparent_age
    )
    if corrected_initial_age < 0.0:
        corrected_initial_age = 0.0
    resident_time = now - response_time
    return corrected_initial_age + (resident_time if resident_time > 0.0 else 0.0)


def lookup_decision(
    meta: StoredMeta | None,
    directives: RequestDirectives,
    settings: CacheSettings,
    now: float,
) -> Decision:
    """What to do with a matching stored response (None: there is none)."""
    if meta is None:
        return Decision.GATEWAY_TIMEOUT if directives.only_if_cached else Decision.MISS

    def forward() -> Decision:
        # §5.2.1.7 only-if-cached: "respond ... with a 504 (Gateway Timeout)" rather than
        # contact the server. Otherwise revalidate when there is a validator to send.
        if directives.only_if_cached:
            return Decision.GATEWAY_TIMEOUT
        if meta.etag is not None or meta.last_modified is not None:
            return Decision.REVALIDATE
        return Decision.MISS

    if meta.no_cache:
        return forward()  # §5.2.2.4: not reused "without successful validation"
    client = settings.honour_client_no_cache
    if client and directives.no_cache:
        return forward()  # §5.2.1.4
    age = current_age(meta, now)
    lifetime = meta.freshness_lifetime
    if client and directives.max_age is not None and age > directives.max_age:
        return forward()  # §5.2.1.1: the client wants a response no older than this
    if age < lifetime:  # §4.2: fresh while its age has not yet exceeded its lifetime
        if client and directives.min_fresh is not None and lifetime - age < directives.min_fresh:
            return forward()  # §5.2.1.3: "still fresh for at least" min-fresh seconds
        return Decision.FRESH
    if meta.must_revalidate:
        # §4.2.4: no stale response when "prohibited by ... must-revalidate ... an
        # applicable s-maxage or proxy-revalidate response directive".
        return forward()
    staleness = age - lifetime
    if staleness < meta.stale_while_revalidate:
        return Decision.STALE_WHILE_REVALIDATE  # RFC 5861 §3
    if client and directives.max_stale is not None and staleness <= directives.max_stale:
        # §4.2.4: stale is allowed when "explicitly permitted by the client" (max-stale).
        return Decision.STALE_WHILE_REVALIDATE
    return forward()


def fresh_age(meta: StoredMeta, now: float) -> float | None:
    """The current age of a stored response that may answer as is a request with no
    directives of its own, else None: `lookup_decision(meta, NO_DIRECTIVES, ...)` is FRESH
    exactly when this is not None. The test of a hit, done once per hit."""
    if meta.no_cache:
        return None  # §5.2.2.4: not reused "without successful validation"
    age = current_age(meta, now)
    return age if age < meta.freshness_lifetime else None  # §4.2


def may_serve_stale_on_error(meta: StoredMeta, now: float) -> bool:
    """Whether the stored response may answer when the server errs (`ERROR_STATUSES`) or
    cannot be reached: RFC 5861 §4 stale-if-error, within its window. Never after no-cache
    or must-revalidate (§4.2.4); for those, when the server cannot be reached, §5.2.2.2 says
    the cache "MUST generate a 504 (Gateway Timeout) response"."""
    if meta.no_cache or meta.must_revalidate:
        return False
    staleness = current_age(meta, now) - meta.freshness_lifetime
    return staleness < meta.stale_if_error or staleness < 0
