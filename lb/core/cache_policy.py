"""HTTP cache policy for lb's shared response cache (sans-IO: values in, decisions out).

Theory of operation. lb is a *shared* cache (RFC 9111 §1) in front of servers its operator
runs. The cache filter asks this module, in order:

1. `request_is_cacheable(head, settings)`: may the cache be consulted at all (else BYPASS)?
2. `cache_keys.primary_key(head, scheme, settings)`, then for an entry found there
   `cache_keys.variant_key(meta.vary, head)`: which stored response matches (§2, §4.1).
3. `lookup_decision(meta, request_directives(head), settings, now)`: FRESH (HIT),
   STALE_WHILE_REVALIDATE (STALE, refresh in the background), REVALIDATE (send
   `conditional_request_fields(meta)`), MISS, or GATEWAY_TIMEOUT (only-if-cached).
   A FRESH or STALE entry answers 304 itself when `client_conditional_matches`.
4. On the server's response: `storable(...)`; if so keep `stored_meta(...)` with the head
   less `Storability.strip`. A 304 to a revalidation: `freshen(...)`, then `stored_meta`
   again from the freshened head. An error or no answer: `may_serve_stale_on_error`.
5. Any response to an unsafe method: purge `cache_keys.invalidation_targets(...)` (§4.4).
6. Every response lb sends from the cache or on from a server loses `fields_to_strip`.

Invariants: no function here reads a clock (time is always `now`, Unix seconds); nothing
raises on bad header values (invalid freshness reads as stale, §4.2.1); ages and lifetimes
are never negative. Which field rules lb: its own `settings.lb_field`, else CDN-Cache-Control,
else Cache-Control and Expires (RFC 9213 §2.2). Partial content (206) and Range requests are
not cached: storing them needs range merging (§3.3), which lb does not implement.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from lb.core.cache_fields import (
    DELTA_MAX,
    Directives,
    delta_seconds,
    format_http_date,
    normal_authority,
    opaque_tag,
    parse_cache_control,
    parse_entity_tags,
    parse_http_date,
    parse_targeted_field,
)
from lb.core.http import HOP_BY_HOP, RequestHead

__all__ = [
    "ERROR_STATUSES",
    "CacheSettings",
    "Decision",
    "RequestDirectives",
    "ResponseLike",
    "Storability",
    "StoredMeta",
    "client_conditional_matches",
    "conditional_request_fields",
    "current_age",
    "fields_to_strip",
    "freshen",
    "freshness_lifetime",
    "headers_never_stored",
    "lookup_decision",
    "may_serve_stale_on_error",
    "parse_cache_control",
    "request_directives",
    "request_is_cacheable",
    "storable",
    "stored_meta",
    "vary_names",
]

CDN_CACHE_CONTROL = b"cdn-cache-control"
# §4.2.2: "a typical setting of this fraction might be 10%"; capped so a page unchanged for
# years is still checked daily.
HEURISTIC_FRACTION = 0.1
HEURISTIC_MAX = 86400.0
# RFC 9110 §15.1: "heuristically cacheable" status codes. 206 is left out: see the module doc.
HEURISTIC_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
# Final status codes whose caching rules lb implements (for must-understand, §5.2.2.3): those
# RFC 9110 §15 defines, less 206 (ranges) and 304 (it updates an entry, it is not one).
UNDERSTOOD_STATUSES = frozenset(
    {200, 201, 202, 203, 204, 205, 300, 301, 302, 303, 307, 308}
    | set(range(400, 418))
    | {421, 422, 426}
    | set(range(500, 506))
)
# RFC 5861 §4: "an error is any situation that would result in a 500, 502, 503, or 504".
ERROR_STATUSES = frozenset({500, 502, 503, 504})
# RFC 9110 §9.2.1 safe methods; any other method (known or not) invalidates (§4.4).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# §3.1: fields "specific to the proxy ... MUST NOT be stored"; X-Request-ID is per exchange.
_PROXY_SPECIFIC = frozenset({b"proxy-authenticate", b"proxy-authentication-info", b"x-request-id"})
# Request preconditions a cache does not evaluate (§4.3.2: If-Match and If-Unmodified-Since
# "are not applicable to a cache"), and Range (not implemented): such requests bypass.
_BYPASS_REQUEST_FIELDS = (b"if-match", b"if-unmodified-since", b"if-range", b"range")
# The client's own preconditions: a filter removes them when it revalidates with its own.
CONDITIONAL_FIELDS = frozenset(
    {b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since", b"if-range"}
)


class ResponseLike(Protocol):
    """A response head: `lb.core.http.ResponseHead`, or a stored entry's status and fields."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> list[tuple[bytes, bytes]]: ...


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


class Decision(Enum):
    FRESH = "fresh"  # serve the entry: X-Cache HIT
    STALE_WHILE_REVALIDATE = "stale"  # serve it (X-Cache STALE), refresh in the background
    REVALIDATE = "revalidate"  # send a conditional request, serve the entry on a 304
    MISS = "miss"  # forward as is; the entry (if any) cannot be used or validated
    GATEWAY_TIMEOUT = "only-if-cached"  # answer 504: only-if-cached and no usable entry


@dataclass(frozen=True, slots=True)
class RequestDirectives:
    """The request's Cache-Control (RFC 9111 §5.2.1); seconds are None when absent."""

    no_cache: bool = False
    no_store: bool = False
    only_if_cached: bool = False
    max_age: float | None = None
    max_stale: float | None = None  # inf for a bare max-stale ("any staleness")
    min_fresh: float | None = None


@dataclass(frozen=True, slots=True)
class Storability:
    """Whether to store a response; `reason` names the rule (for logs and tests); `strip`
    the fields to leave out of the stored head."""

    store: bool
    reason: str
    strip: frozenset[bytes] = frozenset()

    def __bool__(self) -> bool:
        return self.store


@dataclass(frozen=True, slots=True)
class StoredMeta:
    """What is kept beside a stored response to decide later without reparsing its head.
    Times are Unix seconds; `to_dict`/`from_dict` give a JSON-ready form for stores."""

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


# --- request side -----------------------------------------------------------------------


def request_is_cacheable(head: RequestHead, settings: CacheSettings) -> bool:
    """Whether the cache may answer this request or store its response: GET, and HEAD (which
    a stored GET answers, RFC 9110 §9.3.2), without preconditions the cache cannot evaluate,
    without Range, and with an absolute-form target (RFC 9112 §3.2.2) naming the same host
    as Host, so the key and the route cannot disagree."""
    if head.method != "GET" and head.method != "HEAD":
        return False
    index = head.index
    if any(name in index for name in _BYPASS_REQUEST_FIELDS):
        return False
    target = head.target
    if target[:1] != b"/":
        split = urlsplit(target.decode("latin-1"))
        host = index.get(b"host", b"").decode("latin-1")
        if split.scheme not in ("http", "https") or normal_authority(
            split.scheme, split.netloc
        ) != normal_authority(split.scheme, host):
            return False
    return True


def request_directives(head: RequestHead) -> RequestDirectives:
    """RFC 9111 §5.2.1, and §5.4: without Cache-Control, "Pragma: no-cache" is no-cache."""
    cc = head.index.get(b"cache-control")
    if cc is None:
        pragma = head.index.get(b"pragma")
        if pragma is None:
            return _NO_DIRECTIVES  # the common request: nothing to parse
        return RequestDirectives(no_cache=b"no-cache" in pragma.lower())
    d = parse_cache_control(cc)

    def seconds(name: str) -> float | None:
        if name not in d:
            return None
        value = delta_seconds(d[name])
        # An invalid value asks for something: read it the strict way (0), not as absent.
        return 0.0 if value is None else float(value)

    max_stale = seconds("max-stale")
    if "max-stale" in d and d["max-stale"] is None:
        max_stale = float("inf")  # §5.2.1.2: "no value ... will accept a stale response"
    return RequestDirectives(
        no_cache="no-cache" in d,
        no_store="no-store" in d,
        only_if_cached="only-if-cached" in d,
        max_age=seconds("max-age"),
        max_stale=max_stale,
        min_fresh=seconds("min-fresh"),
    )


_NO_DIRECTIVES = RequestDirectives()


# --- storing ----------------------------------------------------------------------------


def vary_names(response: ResponseLike) -> tuple[bytes, ...] | None:
    """The request fields a response varies on, lower case, sorted, deduplicated; None for
    "Vary: *", which "always fails to match" (§4.1), so such a response is never stored."""
    names: set[bytes] = set()
    for name, value in response.headers:
        if name.lower() == b"vary":
            for part in value.split(b","):
                part = part.strip(b" \t").lower()
                if part == b"*":
                    return None
                if part:
                    names.add(part)
    return tuple(sorted(names))


def fields_to_strip(settings: CacheSettings) -> frozenset[bytes]:
    """Fields meant for lb's cache alone, removed from every response lb sends on: its own
    targeted field, the tag field, and CDN-Cache-Control unless a CDN in front reads it."""
    names = {settings.lb_field.lower(), settings.tag_header.lower()}
    if settings.strip_cdn_cache_control:
        names.add(CDN_CACHE_CONTROL)
    return frozenset(names)


def headers_never_stored(response: ResponseLike) -> frozenset[bytes]:
    """§3.1: hop-by-hop fields and those Connection names (RFC 9110 §7.6.1), and fields
    "specific to the proxy" (Proxy-Authenticate, Proxy-Authentication-Info). Content-Length
    too: lb frames a stored body itself."""
    names = set(HOP_BY_HOP | _PROXY_SPECIFIC)
    for name, value in response.headers:
        if name.lower() == b"connection":
            names.update(t.strip(b" \t").lower() for t in value.split(b",") if t.strip())
    return frozenset(names)


def storable(
    request: RequestHead, response: ResponseLike, settings: CacheSettings, now: float
) -> Storability:
    """Whether a shared cache may store this response (§3), and lb wants to."""
    if request.method != "GET":
        # HEAD responses are not stored: a GET after them would find no body.
        return Storability(False, "method")
    status = response.status
    if status < 200 or status == 206 or status == 304:
        # §3: "the response status code is final"; 206 needs ranges, 304 freshens (§4.3.4).
        return Storability(False, "status")
    d, targeted = _response_directives(response, settings)
    if request_directives(request).no_store:
        # §5.2.1.5: "MUST NOT store any part of either this request or any response to it".
        return Storability(False, "request no-store")
    if "must-understand" in d:
        # §5.2.2.3: store only if the status is understood, and then "ignore no-store".
        if status not in UNDERSTOOD_STATUSES:
            return Storability(False, "must-understand")
    elif "no-store" in d:
        return Storability(False, "no-store")  # §5.2.2.5
    private = d.get("private", False)
    if private is None or private == "":
        return Storability(False, "private")  # §5.2.2.7: a shared cache "MUST NOT store"
    if b"authorization" in request.index and not (
        "public" in d or "s-maxage" in d or "must-revalidate" in d
    ):
        # §3.5: only with "must-revalidate, public, and s-maxage" may a shared cache reuse it.
        return Storability(False, "authorization")
    # §5.2.2.7: the qualified form: "a shared cache MUST NOT store the specified field
    # names", but may store the rest.
    unshared = frozenset(
        n.strip().lower().encode("latin-1")
        for n in (private.split(",") if isinstance(private, str) else ())
        if n.strip()
    )
    fields = _fields(response)
    if b"set-cookie" in fields and b"set-cookie" not in unshared and not settings.allow_set_cookie:
        # Not an RFC rule (§7.3 lets Set-Cookie be cached): lb refuses by default, since a
        # cookie stored once is sent to every client.
        return Storability(False, "set-cookie")
    vary = vary_names(response)
    if vary is None:
        return Storability(False, "vary *")  # §4.1: never matches, so never reusable
    length = delta_seconds(_first(fields, b"content-length", b"").decode("latin-1"))
    if length is not None and length > settings.max_object_size:
        return Storability(False, "too large")
    # §3: it needs public, an explicit lifetime, or a heuristically cacheable status (as
    # default_ttl counts as a heuristic, it applies to those statuses only).
    explicit = "public" in d or "max-age" in d or "s-maxage" in d
    explicit = explicit or (not targeted and b"expires" in fields)
    if not explicit and status not in HEURISTIC_STATUSES:
        return Storability(False, "no freshness")
    if not (b"etag" in fields or b"last-modified" in fields):
        # Without a validator it can only be reused unvalidated: fresh, or stale on error.
        # When neither can happen, storing it would be waste.
        fresh = freshness_lifetime(response, settings, now) > 0
        on_error = _window(d, "stale-if-error", settings.stale_if_error) > 0 and not (
            "must-revalidate" in d or "proxy-revalidate" in d or "s-maxage" in d
        )
        if "no-cache" in d or not (fresh or on_error):
            return Storability(False, "never reusable")
    return Storability(True, "ok", headers_never_stored(response) | unshared)


def freshness_lifetime(response: ResponseLike, settings: CacheSettings, now: float) -> float:
    """§4.2.1, for a shared cache, in this order: s-maxage, max-age, Expires minus Date
    (Date absent: `now`, the time received). Then, when the response gives none of these and
    its status is heuristically cacheable: `settings.default_ttl`, or if `settings.heuristic`
    a tenth of the time since Last-Modified, at most a day (§4.2.2). Invalid values
    (max-age=abc, conflicting duplicates, Expires: 0) give 0: already stale."""
    d, targeted = _response_directives(response, settings)
    for name in ("s-maxage", "max-age"):
        if name in d:
            value = delta_seconds(d[name])
            return 0.0 if value is None else float(value)
    fields = _fields(response)
    if not targeted and b"expires" in fields:
        # RFC 9213 §2.2: a cache using a targeted field ignores Expires as well.
        values = fields[b"expires"]
        expires = parse_http_date(values[0], now) if len(set(values)) == 1 else None
        if expires is None:
            # §5.3: "invalid date formats, especially the value '0'" mean "already expired".
            return 0.0
        date = _date_value(fields, now)
        return max(0.0, min(expires - date, float(DELTA_MAX)))
    if response.status not in HEURISTIC_STATUSES:
        return 0.0
    if settings.default_ttl is not None:
        return max(0.0, settings.default_ttl)
    if settings.heuristic:
        modified = parse_http_date(_first(fields, b"last-modified"), now)
        if modified is not None:
            since = _date_value(fields, now) - modified
            return max(0.0, min(since * HEURISTIC_FRACTION, HEURISTIC_MAX))
    return 0.0


def stored_meta(
    request: RequestHead,
    response: ResponseLike,
    settings: CacheSettings,
    request_time: float,
    response_time: float,
) -> StoredMeta:
    """The `StoredMeta` of a response being stored (or freshened), given when its request
    was sent and when it was received (§4.2.3's request_time and response_time)."""
    d, _ = _response_directives(response, settings)
    fields = _fields(response)
    age = _first(fields, b"age")
    age_value = 0.0
    if age is not None:
        value = delta_seconds(age.decode("latin-1").strip())
        # An Age that does not parse tells nothing about how old the response is: stale.
        age_value = float(DELTA_MAX if value is None else value)
    tags = tuple(
        t.strip()
        for v in fields.get(settings.tag_header.lower(), ())
        for t in v.decode("latin-1").split(",")
        if t.strip()
    )
    etags = parse_entity_tags(_first(fields, b"etag", b""))
    return StoredMeta(
        request_time=request_time,
        response_time=response_time,
        date_value=_date_value(fields, response_time),
        age_value=age_value,
        freshness_lifetime=freshness_lifetime(response, settings, response_time),
        no_cache="no-cache" in d,  # qualified no-cache read as unqualified: stricter
        # §5.2.2.8 proxy-revalidate is must-revalidate for a shared cache; §5.2.2.10
        # s-maxage "also implies the semantics of proxy-revalidate".
        must_revalidate="must-revalidate" in d or "proxy-revalidate" in d or "s-maxage" in d,
        stale_while_revalidate=_window(
            d, "stale-while-revalidate", settings.stale_while_revalidate
        ),
        stale_if_error=_window(d, "stale-if-error", settings.stale_if_error),
        etag=etags[0] if etags else None,
        last_modified=_first(fields, b"last-modified"),
        vary=vary_names(response) or (),
        tags=tags,
    )


# --- serving ----------------------------------------------------------------------------


def current_age(meta: StoredMeta, now: float) -> float:
    """§4.2.3, each term clamped at 0 so a clock that steps back never makes age negative:

    apparent_age = max(0, response_time - date_value)
    response_delay = response_time - request_time
    corrected_age_value = age_value + response_delay
    corrected_initial_age = max(apparent_age, corrected_age_value)
    resident_time = now - response_time
    current_age = corrected_initial_age + resident_time
    """
    apparent_age = max(0.0, meta.response_time - meta.date_value)
    response_delay = max(0.0, meta.response_time - meta.request_time)
    corrected_initial_age = max(apparent_age, meta.age_value + response_delay)
    return corrected_initial_age + max(0.0, now - meta.response_time)


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


def may_serve_stale_on_error(meta: StoredMeta, now: float) -> bool:
    """Whether the stored response may answer when the server errs (`ERROR_STATUSES`) or
    cannot be reached: RFC 5861 §4 stale-if-error, within its window. Never after no-cache
    or must-revalidate (§4.2.4); for those, when the server cannot be reached, §5.2.2.2 says
    the cache "MUST generate a 504 (Gateway Timeout) response"."""
    if meta.no_cache or meta.must_revalidate:
        return False
    staleness = current_age(meta, now) - meta.freshness_lifetime
    return staleness < meta.stale_if_error or staleness < 0


def conditional_request_fields(meta: StoredMeta) -> list[tuple[bytes, bytes]]:
    """The preconditions of a revalidation (§4.3.1): the cache "MUST send the relevant entity
    tags" (If-None-Match) and "SHOULD send the Last-Modified value" (If-Modified-Since).
    They replace the client's own (`CONDITIONAL_FIELDS`)."""
    fields = []
    if meta.etag is not None:
        fields.append((b"if-none-match", meta.etag))
    if meta.last_modified is not None:
        fields.append((b"if-modified-since", meta.last_modified))
    return fields


def client_conditional_matches(request: RequestHead, meta: StoredMeta) -> bool:
    """Whether to answer the client's own precondition with 304 from a usable stored
    response (§4.3.2, evaluated as RFC 9110 §13.2.2 orders them). If-None-Match uses "the
    weak comparison function"; If-Modified-Since only without If-None-Match, against
    Last-Modified, else the stored Date."""
    index = request.index
    inm = index.get(b"if-none-match")
    if inm is not None:
        if inm.strip() == b"*":
            return True  # RFC 9110 §13.1.2: false when "any current representation" exists
        if meta.etag is None:
            return False
        ours = opaque_tag(meta.etag)
        return any(opaque_tag(tag) == ours for tag in parse_entity_tags(inm))
    since = parse_http_date(index.get(b"if-modified-since"))
    if since is None:
        return False  # RFC 9110 §13.1.3: ignore an invalid date
    modified = parse_http_date(meta.last_modified)
    if modified is None:
        modified = meta.date_value
    return modified <= since  # not modified since: the condition is false, hence 304


def freshen(
    stored: list[tuple[bytes, bytes]],
    not_modified: list[tuple[bytes, bytes]],
    received_at: float,
) -> list[tuple[bytes, bytes]] | None:
    """The stored head updated by a 304 (§4.3.4 and §3.2), or None when the 304 does not
    select the stored response (its validators differ: fetch it anew). Every field of the 304
    replaces the stored ones of that name, except Content-Length, the fields never stored,
    and Set-Cookie (a 304 to one client's revalidation must not hand its cookie to all).
    The Date and Age are the 304's: the freshened response is as old as the 304 says, so a
    stored Age goes, and without a Date in the 304 the time it was received becomes the
    Date (RFC 9110 §6.6.1). A 304 without validators is taken to select the stored response:
    it answers lb's own conditional request, which named that response's validators (and
    RFC 9110 §15.4.5 has the server repeat an ETag it would have sent)."""
    old, new = _fields_of(stored), _fields_of(not_modified)
    new_etags = parse_entity_tags(_first(new, b"etag", b""))
    old_etags = parse_entity_tags(_first(old, b"etag", b""))
    if new_etags:
        if not old_etags or opaque_tag(new_etags[0]) != opaque_tag(old_etags[0]):
            return None
    elif (
        b"last-modified" in new
        and b"last-modified" in old
        and parse_http_date(new[b"last-modified"][0]) != parse_http_date(old[b"last-modified"][0])
    ):
        return None
    skip = headers_never_stored(_Head(304, not_modified)) | {b"set-cookie"}
    updates = [(n, v) for n, v in not_modified if n.lower() not in skip]
    replaced = {n.lower() for n, _ in updates} | {b"age", b"date"}
    merged = [(n, v) for n, v in stored if n.lower() not in replaced] + updates
    if b"date" not in new:
        merged.append((b"date", format_http_date(received_at)))
    return merged


# --- helpers ----------------------------------------------------------------------------


class _Head:
    __slots__ = ("headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.headers = headers


def _fields_of(headers: list[tuple[bytes, bytes]]) -> dict[bytes, list[bytes]]:
    fields: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        fields.setdefault(name.lower(), []).append(value)
    return fields


def _fields(response: ResponseLike) -> dict[bytes, list[bytes]]:
    return _fields_of(response.headers)


def _first(fields: dict[bytes, list[bytes]], name: bytes, default: Any = None) -> Any:
    values = fields.get(name)
    return values[0] if values else default


def _response_directives(
    response: ResponseLike, settings: CacheSettings
) -> tuple[Directives, bool]:
    """The directives lb obeys, and whether they came from a targeted field. RFC 9213 §2.2:
    the cache "MUST select the first (in target list order) field with a valid, non-empty
    value" and then "MUST ignore the Cache-Control and Expires header fields"; lb's target
    list is its own field, then CDN-Cache-Control."""
    fields = _fields(response)
    for name in (settings.lb_field.lower(), CDN_CACHE_CONTROL):
        values = fields.get(name)
        if values:
            parsed = parse_targeted_field(b", ".join(values))
            if parsed is not None:
                return parsed, True
    cc = fields.get(b"cache-control")
    return (parse_cache_control(b", ".join(cc)) if cc else {}), False


def _window(d: Directives, name: str, default: float) -> float:
    """A stale-* window: the response's directive when present (invalid: 0), else the
    route's setting (an out-of-band permission, §4.2.4)."""
    if name not in d:
        return max(0.0, default)
    value = delta_seconds(d[name])
    return 0.0 if value is None else float(value)


def _date_value(fields: dict[bytes, list[bytes]], received: float) -> float:
    values = fields.get(b"date")
    date = parse_http_date(values[0], received) if values and len(set(values)) == 1 else None
    return received if date is None else date
