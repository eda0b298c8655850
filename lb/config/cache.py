"""The response cache in the config: a route's `cache` (what it keeps, what the response
headers leave open) and the top-level `cache` (the store every cached route shares)."""

from __future__ import annotations

from typing import Literal

from lb.config.base import Duration, Model, Size


class CacheKey(Model):
    """What tells apart the requests a route's cache keeps apart, beyond method and URL."""

    query: Literal["keep", "sort", "ignore"] = "keep"  # the query string as sent, sorted, none
    headers: list[str] = []  # request fields whose values are part of the key
    cookies: list[str] = []  # request cookies whose values are part of the key


class RouteCache(Model):
    """A route's `cache`: the response headers (RFC 9111) decide; these fill in."""

    default_ttl: Duration | None = None  # freshness when the response gives none
    heuristic: bool = False  # 10% of the Last-Modified age (at most a day) when none is given
    stale_while_revalidate: Duration = 0.0  # when the response does not say
    stale_if_error: Duration = 0.0  # when the response does not say
    client_no_cache: Literal["honour", "ignore"] = "honour"  # request no-cache / max-age=0
    allow_set_cookie: bool = False  # store responses that set cookies
    key: CacheKey = CacheKey()


class CacheConfig(Model):
    """The top-level `cache`: the store every cached route shares."""

    max_memory: Size = 64 * 1024 * 1024  # the in-process tier (the whole cache without redis)
    local_ttl: Duration = 5.0  # with redis: the most an entry stays in the in-process tier
    max_object_size: Size = 1024 * 1024  # larger responses stream on, not stored
    compress: bool = True  # zlib the bodies stored in redis
    lb_field: str = "LB-Cache-Control"  # lb's own targeted Cache-Control (RFC 9213 style)
    tag_header: str = "Cache-Tag"  # comma-separated tags, for purge by tag
    collapse_timeout: Duration = 2.0  # how long concurrent misses wait for the first one
