"""HTTP cache policy for lb's shared response cache (sans-IO: values in, decisions out): its
settings, what it keeps beside a stored response, and how it reads a response's directives.

Theory of operation. lb is a *shared* cache (RFC 9111 §1) in front of servers its operator
runs. The rules live in one module per concern; the cache filter asks them, in order:

1. `cache_request.request_is_cacheable(head, settings)`: may the cache be consulted at all
   (else BYPASS)?
2. `cache_keys.primary_key(head, scheme, settings)`, then for an entry found there
   `cache_keys.variant_key(meta.vary, head)`: which stored response matches (§2, §4.1).
3. `cache_freshness.lookup_decision(meta, request_directives(head), settings, now)`: FRESH
   (HIT), STALE_WHILE_REVALIDATE (STALE, refresh in the background), REVALIDATE (send
   `cache_validation.conditional_request_fields(meta)`), MISS, or GATEWAY_TIMEOUT
   (only-if-cached). A FRESH or STALE entry answers 304 itself when
   `cache_validation.client_conditional_matches`.
4. On the server's response: `cache_storing.storable(...)`; if so keep `stored_meta(...)` with
   the head less `Storability.strip`. A 304 to a revalidation: `cache_validation.freshen(...)`,
   then `stored_meta` again from the freshened head. An error or no answer:
   `cache_freshness.may_serve_stale_on_error`.
5. Any response to an unsafe method: purge `cache_keys.invalidation_targets(...)` (§4.4).
6. Every response lb sends from the cache or on from a server loses `fields_to_strip`.

Invariants: no function of the policy reads a clock (time is always `now`, Unix seconds);
nothing raises on bad header values (invalid freshness reads as stale, §4.2.1); ages and
lifetimes are never negative. Which field rules lb: its own `settings.lb_field`, else
CDN-Cache-Control, else Cache-Control and Expires (RFC 9213 §2.2: `response_directives`).
Partial content (206) and Range requests are not cached: storing them needs range merging
(§3.3), which lb does not implement.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final, Literal, Protocol

from lb.core.cache_fields import (
    Directives,
    delta_seconds,
    parse_cache_control,
    parse_targeted_field,
)
from lb.core.http import FieldsByName, fields_by_name, remember

__all__ = [
    "CDN_CACHE_CONTROL",
    "ERROR_STATUSES",
    "SAFE_METHODS",
    "CacheSettings",
    "ResponseLike",
    "StoredHead",
    "StoredMeta",
    "fields_to_strip",
    "response_directives",
    "stale_window",
]

CDN_CACHE_CONTROL = b"cdn-cache-control"
# RFC 5861 §4: "an error is any situation that would result in a 500, 502, 503, or 504".
ERROR_STATUSES = frozenset({500, 502, 503, 504})
# RFC 9110 §9.2.1 safe methods; any other method (known or not) invalidates (§4.4).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class ResponseLike(Protocol):
    """A response head: `lb.core.http.ResponseHead`, or a stored entry's status and fields."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> list[tuple[bytes, bytes]]: ...
    @property
    def by_name(self) -> FieldsByName:
        """`headers` by lower-case name (`lb.core.http.fields_by_name`), made once."""
        ...


class StoredHead:
    """A stored (or freshened) response's status and fields, as the rules read a response."""

    __slots__ = ("_by_name", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.headers = headers
        self._by_name: FieldsByName | None = None

    @property
    def by_name(self) -> FieldsByName:
        if self._by_name is None:
            self._by_name = fields_by_name(self.headers)
        return self._by_name


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """A route's cache knobs (YAML `routes[].cache`). Response headers always win over them."""

    default_ttl: float | None = None  # freshness when the response gives none (as §4.2.2)
    heuristic: bool = False  # 10% of the Last-Modified age, at most a day (§4.2.2)
    stale_while_revalidate: float = 0.0  # when the response has no such directive
    stale_if_error: float = 0.0  # when the response has no such directive
    honour_client_no_cache: bool = True  # request no-cache, Pragma, max-age, min-fresh...
    allow_set_cookie: bool = False  # store responses carrying Set-Cookie
    lb_field: bytes = b"lb-cache-control"  # lb's own targeted field (RFC 9213 §2)
    strip_cdn_cache_control: bool = True  # False when a CDN in front of lb reads it
    key_query: Literal["keep", "sort", "ignore"] = "keep"
    key_headers: tuple[bytes, ...] = ()  # lower-case request field names in the key
    key_cookies: tuple[str, ...] = ()  # request cookie names in the key
    tag_header: bytes = b"cache-tag"  # comma-separated tags, for purge by tag
    max_object_size: int = 1 << 20


@dataclass(frozen=True, slots=True)
class StoredMeta:
    """What is kept beside a stored response to decide later without reparsing its head
    (`cache_storing.stored_meta` makes it). Times are Unix seconds; `to_dict`/`from_dict`
    give a JSON-ready form for stores."""

    request_time: float
    response_time: float
    date_value: float  # Date, or response_time when absent/invalid (RFC 9110 §6.6.1)
    age_value: float  # Age as received
    freshness_lifetime: float
    no_cache: bool = False  # always revalidate (§5.2.2.4)
    must_revalidate: bool = False  # no stale serving: must-/proxy-revalidate, s-maxage
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    etag: bytes | None = None
    last_modified: bytes | None = None
    vary: tuple[bytes, ...] = ()
    tags: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name in ("etag", "last_modified"):
            if d[name] is not None:
                d[name] = d[name].decode("latin-1")
        d["vary"] = [v.decode("latin-1") for v in self.vary]
        d["tags"] = list(self.tags)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StoredMeta:
        d = dict(d)
        for name in ("etag", "last_modified"):
            if d.get(name) is not None:
                d[name] = d[name].encode("latin-1")
        d["vary"] = tuple(v.encode("latin-1") for v in d.get("vary", ()))
        d["tags"] = tuple(d.get("tags", ()))
        return cls(**d)


def fields_to_strip(settings: CacheSettings) -> frozenset[bytes]:
    """Fields meant for lb's cache alone, removed from every response lb sends on: its own
    targeted field, the tag field, and CDN-Cache-Control unless a CDN in front reads it."""
    names = {settings.lb_field.lower(), settings.tag_header.lower()}
    if settings.strip_cdn_cache_control:
        names.add(CDN_CACHE_CONTROL)
    return frozenset(names)


def response_directives(fields: FieldsByName, settings: CacheSettings) -> tuple[Directives, bool]:
    """The directives lb obeys in a response's `fields` (`ResponseLike.by_name`), and whether they
    came from a targeted field (read them, never change them: Cache-Control's are shared by the
    responses that send the same value). RFC 9213 §2.2: the cache "MUST select the first (in target
    list order) field with a valid, non-empty value" and then "MUST ignore the Cache-Control and
    Expires header fields"; lb's target list is its own field, then CDN-Cache-Control."""
    for name in (settings.lb_field.lower(), CDN_CACHE_CONTROL):
        values = fields.get(name)
        if values:
            parsed = parse_targeted_field(b", ".join(values))
            if parsed is not None:
                return parsed, True
    cc = fields.get(b"cache-control")
    if not cc:
        return {}, False
    value = b", ".join(cc)
    d = _CACHE_CONTROLS.get(value)
    if d is None:
        d = remember(_CACHE_CONTROLS, value, parse_cache_control(value), _MAX_KEPT_VALUE)
    return d, False


# Cache-Control values as parsed: a site's servers send a few values again and again
# ("no-store", "public, max-age=60"), so most responses find theirs here rather than run the
# directive parser. Shared: the directives a rule gets are read, never changed.
_CACHE_CONTROLS: Final[dict[bytes, Directives]] = {}
_MAX_KEPT_VALUE: Final = 256


def stale_window(d: Directives, name: str, default: float) -> float:
    """A stale-* window (RFC 5861): the response's directive when present (invalid: 0), else
    the route's setting (an out-of-band permission, §4.2.4)."""
    if name not in d:
        return max(0.0, default)
    value = delta_seconds(d[name])
    return 0.0 if value is None else float(value)
