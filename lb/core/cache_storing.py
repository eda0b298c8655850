"""What the cache stores (sans-IO): whether a response may be stored (RFC 9111 §3), which of
its fields are left out (§3.1), which request fields it varies on (§4.1), and the
`StoredMeta` kept beside it.

`storable` answers with a `Storability` whose `reason` names the rule that refused, for logs
and tests. Beyond the RFC, lb refuses by default what a shared cache may store but should
rarely (Set-Cookie), what it could never reuse (no validator and no freshness), and what is
over the route's `max_object_size`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from lb.core.cache_fields import (
    DELTA_MAX,
    date_value,
    delta_seconds,
    first_value,
    parse_entity_tags,
)
from lb.core.cache_freshness import HEURISTIC_STATUSES, freshness_lifetime
from lb.core.cache_policy import (
    CacheSettings,
    ResponseLike,
    StoredMeta,
    response_directives,
    stale_window,
)
from lb.core.cache_request import request_directives
from lb.core.http import HOP_BY_HOP, RequestHead

__all__ = ["Storability", "headers_never_stored", "storable", "stored_meta", "vary_names"]

# Final status codes whose caching rules lb implements (for must-understand, §5.2.2.3): those
# RFC 9110 §15 defines, less 206 (ranges) and 304 (it updates an entry, it is not one).
UNDERSTOOD_STATUSES = frozenset(
    {200, 201, 202, 203, 204, 205, 300, 301, 302, 303, 307, 308}
    | set(range(400, 418))
    | {421, 422, 426}
    | set(range(500, 506))
)
# §3.1: fields "specific to the proxy ... MUST NOT be stored"; X-Request-ID is per exchange.
_PROXY_SPECIFIC = frozenset({b"proxy-authenticate", b"proxy-authentication-info", b"x-request-id"})
_NEVER_STORED = HOP_BY_HOP | _PROXY_SPECIFIC


@dataclass(frozen=True, slots=True)
class Storability:
    """Whether to store a response; `reason` names the rule (for logs and tests); `strip`
    the fields to leave out of the stored head."""

    store: bool
    reason: str
    strip: frozenset[bytes] = frozenset()

    def __bool__(self) -> bool:
        return self.store


# Each refusal made once: a frozen dataclass is slow to make (a generic setattr per field),
# and a URL whose responses are never storable (an API's no-store) is refused per response.
_REFUSED: Final = {
    reason: Storability(False, reason)
    for reason in (
        "method",
        "status",
        "request no-store",
        "must-understand",
        "no-store",
        "private",
        "authorization",
        "set-cookie",
        "vary *",
        "too large",
        "no freshness",
        "never reusable",
    )
}


def vary_names(response: ResponseLike) -> tuple[bytes, ...] | None:
    """The request fields a response varies on, lower case, sorted, deduplicated; None for
    "Vary: *", which "always fails to match" (§4.1), so such a response is never stored."""
    names: set[bytes] = set()
    for value in response.by_name.get(b"vary") or ():
        for part in value.split(b","):
            part = part.strip(b" \t").lower()
            if part == b"*":
                return None
            if part:
                names.add(part)
    return tuple(sorted(names))


def headers_never_stored(response: ResponseLike) -> frozenset[bytes]:
    """§3.1: hop-by-hop fields and those Connection names (RFC 9110 §7.6.1), and fields
    "specific to the proxy" (Proxy-Authenticate, Proxy-Authentication-Info). Content-Length
    too: lb frames a stored body itself."""
    connection = response.by_name.get(b"connection")
    if not connection:
        return _NEVER_STORED
    names = set(_NEVER_STORED)
    for value in connection:
        names.update(t.strip(b" \t").lower() for t in value.split(b",") if t.strip())
    return frozenset(names)


def storable(
    request: RequestHead, response: ResponseLike, settings: CacheSettings, now: float
) -> Storability:
    """Whether a shared cache may store this response (§3), and lb wants to."""
    if request.method != "GET":
        # HEAD responses are not stored: a GET after them would find no body.
        return _REFUSED["method"]
    status = response.status
    if status < 200 or status == 206 or status == 304:
        # §3: "the response status code is final"; 206 needs ranges, 304 freshens (§4.3.4).
        return _REFUSED["status"]
    fields = response.by_name
    d, targeted = response_directives(fields, settings)
    if request_directives(request).no_store:
        # §5.2.1.5: "MUST NOT store any part of either this request or any response to it".
        return _REFUSED["request no-store"]
    if "must-understand" in d:
        # §5.2.2.3: store only if the status is understood, and then "ignore no-store".
        if status not in UNDERSTOOD_STATUSES:
            return _REFUSED["must-understand"]
    elif "no-store" in d:
        return _REFUSED["no-store"]  # §5.2.2.5
    private = d.get("private", False)
    if private is None or private == "":
        return _REFUSED["private"]  # §5.2.2.7: a shared cache "MUST NOT store"
    if b"authorization" in request.index and not (
        "public" in d or "s-maxage" in d or "must-revalidate" in d
    ):
        # §3.5: only with "must-revalidate, public, and s-maxage" may a shared cache reuse it.
        return _REFUSED["authorization"]
    # §5.2.2.7: the qualified form: "a shared cache MUST NOT store the specified field
    # names", but may store the rest.
    unshared = frozenset(
        n.strip().lower().encode("latin-1")
        for n in (private.split(",") if isinstance(private, str) else ())
        if n.strip()
    )
    if b"set-cookie" in fields and b"set-cookie" not in unshared and not settings.allow_set_cookie:
        # Not an RFC rule (§7.3 lets Set-Cookie be cached): lb refuses by default, since a
        # cookie stored once is sent to every client.
        return _REFUSED["set-cookie"]
    vary = vary_names(response)
    if vary is None:
        return _REFUSED["vary *"]  # §4.1: never matches, so never reusable
    length = delta_seconds(first_value(fields, b"content-length", b"").decode("latin-1"))
    if length is not None and length > settings.max_object_size:
        return _REFUSED["too large"]
    # §3: it needs public, an explicit lifetime, or a heuristically cacheable status (as
    # default_ttl counts as a heuristic, it applies to those statuses only).
    explicit = "public" in d or "max-age" in d or "s-maxage" in d
    explicit = explicit or (not targeted and b"expires" in fields)
    if not explicit and status not in HEURISTIC_STATUSES:
        return _REFUSED["no freshness"]
    if not (b"etag" in fields or b"last-modified" in fields):
        # Without a validator it can only be reused unvalidated: fresh, or stale on error.
        # When neither can happen, storing it would be waste.
        fresh = freshness_lifetime(response, settings, now) > 0
        on_error = stale_window(d, "stale-if-error", settings.stale_if_error) > 0 and not (
            "must-revalidate" in d or "proxy-revalidate" in d or "s-maxage" in d
        )
        if "no-cache" in d or not (fresh or on_error):
            return _REFUSED["never reusable"]
    return Storability(True, "ok", headers_never_stored(response) | unshared)


def stored_meta(
    request: RequestHead,
    response: ResponseLike,
    settings: CacheSettings,
    request_time: float,
    response_time: float,
) -> StoredMeta:
    """The `StoredMeta` of a response being stored (or freshened), given when its request
    was sent and when it was received (§4.2.3's request_time and response_time)."""
    fields = response.by_name
    d, _ = response_directives(fields, settings)
    age = first_value(fields, b"age")
    age_value = 0.0
    if age is not None:
        value = delta_seconds(age.decode("latin-1").strip())
        # An Age that does not parse tells nothing about how old the response is: stale.
        age_value = float(DELTA_MAX if value is None else value)
    tags = tuple(
        t.strip()
        for v in fields.get(settings.tag_header.lower()) or ()
        for t in v.decode("latin-1").split(",")
        if t.strip()
    )
    etags = parse_entity_tags(first_value(fields, b"etag", b""))
    return StoredMeta(
        request_time=request_time,
        response_time=response_time,
        date_value=date_value(fields, response_time),
        age_value=age_value,
        freshness_lifetime=freshness_lifetime(response, settings, response_time),
        no_cache="no-cache" in d,  # qualified no-cache read as unqualified: stricter
        # §5.2.2.8 proxy-revalidate is must-revalidate for a shared cache; §5.2.2.10
        # s-maxage "also implies the semantics of proxy-revalidate".
        must_revalidate="must-revalidate" in d or "proxy-revalidate" in d or "s-maxage" in d,
        stale_while_revalidate=stale_window(
            d, "stale-while-revalidate", settings.stale_while_revalidate
        ),
        stale_if_error=stale_window(d, "stale-if-error", settings.stale_if_error),
        etag=etags[0] if etags else None,
        last_modified=first_value(fields, b"last-modified"),
        vary=vary_names(response) or (),
        tags=tags,
    )
