"""Cache policy (lb.core.cache_*) as tables of cases; each names its rule and cites the RFC
section it checks.

RFC 9111 sections are written "§n"; other RFCs by number. All times are Unix seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lb.core.cache_fields import (
    format_http_date,
    normalize_field_value,
    parse_cache_control,
    parse_http_date,
    parse_targeted_field,
)
from lb.core.cache_freshness import (
    Decision,
    current_age,
    fresh_age,
    freshness_lifetime,
    lookup_decision,
    may_serve_stale_on_error,
)
from lb.core.cache_keys import (
    invalidates,
    invalidation_targets,
    primary_key,
    uri_key,
    variant_key,
)
from lb.core.cache_policy import CacheSettings, StoredMeta, fields_to_strip
from lb.core.cache_request import (
    NO_DIRECTIVES,
    RequestDirectives,
    is_plain,
    request_directives,
    request_is_cacheable,
)
from lb.core.cache_storing import headers_never_stored, storable, stored_meta, vary_names
from lb.core.cache_validation import (
    client_conditional_matches,
    conditional_request_fields,
    freshen,
)
from lb.core.http import RequestHead, ResponseHead

NOW = 1_700_000_000.0
DATE = format_http_date(NOW)
S = CacheSettings()
Fields = Sequence[tuple[bytes, bytes]]


def req(method: str = "GET", target: bytes = b"/p", headers: Fields = ()) -> RequestHead:
    return RequestHead(method, target, "1.1", [(b"Host", b"example.com"), *headers])


def resp(status: int = 200, headers: Fields = ()) -> ResponseHead:
    return ResponseHead(status, b"", "1.1", list(headers), True, None, False)


def date(offset: float) -> bytes:
    return format_http_date(NOW + offset)


# --- parsing -----------------------------------------------------------------------------

PARSE_CACHE_CONTROL = [
    # §5.2: names are case-insensitive; arguments are tokens or quoted-strings.
    pytest.param(b"Max-Age=60, PUBLIC", {"max-age": "60", "public": None}, id="case-insensitive"),
    pytest.param(b'max-age="60"', {"max-age": "60"}, id="quoted-argument-accepted"),
    pytest.param(b"max-age=abc", {"max-age": "abc"}, id="invalid-kept-for-4.2.1"),
    # §4.2.1: duplicates: "either the first occurrence should be used or ... stale".
    pytest.param(b"max-age=60, max-age=60", {"max-age": "60"}, id="duplicate-same-value"),
    pytest.param(b"max-age=60, max-age=70", {"max-age": ""}, id="duplicate-conflict-invalid"),
    # §5.2.2.7: field-name forms merge; the unqualified form (most restrictive) wins.
    pytest.param(b'private="a", private="b"', {"private": "a, b"}, id="private-qualified-merged"),
    pytest.param(b'private="a", private', {"private": None}, id="private-unqualified-wins"),
    pytest.param(b'private="set-cookie, x"', {"private": "set-cookie, x"}, id="comma-in-quotes"),
    # RFC 9110 §5.6.1: empty list members are ignored; garbage members are skipped.
    pytest.param(b", ,no-store,, ", {"no-store": None}, id="empty-members"),
    pytest.param(b'no-cache, x"y, public', {"no-cache": None, "public": None}, id="garbage"),
    pytest.param(b'max-age="5', {"max-age": ""}, id="unterminated-quote-invalid"),
]


@pytest.mark.parametrize(("value", "expected"), PARSE_CACHE_CONTROL)
def test_parse_cache_control(value, expected):
    assert parse_cache_control(value) == expected


PARSE_TARGETED = [
    # RFC 9213 §2.1: a Structured Field Dictionary (RFC 8941 §4.2.2).
    pytest.param(b"max-age=60, must-revalidate", {"max-age": "60", "must-revalidate": None}),
    pytest.param(b'private="set-cookie"', {"private": "set-cookie"}, id="sf-string"),
    pytest.param(b"no-store=?0, max-age=5", {"max-age": "5"}, id="sf-false-is-absent"),
    pytest.param(b"max-age=5;x=1", {"max-age": "5"}, id="parameters-ignored"),
    pytest.param(b"max-age=1, max-age=2", {"max-age": "2"}, id="sf-duplicate-last-wins"),
    # RFC 9213 §2.1: a decimal max-age is not consumed as a number (kept, invalid).
    pytest.param(b"max-age=1.5", {"max-age": "1.5"}, id="decimal-kept-invalid"),
    # RFC 9213 §2.2: invalid or empty fields are ignored (None: fall back).
    pytest.param(b"", None, id="empty"),
    pytest.param(b"Max-Age=1", None, id="uppercase-key-invalid"),
    pytest.param(b"max-age=1,", None, id="trailing-comma-invalid"),
    pytest.param(b'private="a', None, id="unterminated-string-invalid"),
]


@pytest.mark.parametrize(("value", "expected"), PARSE_TARGETED)
def test_parse_targeted_field(value, expected):
    assert parse_targeted_field(value) == expected


HTTP_DATES = [
    # RFC 9110 §5.6.7: all three formats MUST be accepted.
    pytest.param(b"Sun, 06 Nov 1994 08:49:37 GMT", 784111777.0, id="imf-fixdate"),
    pytest.param(b"Sunday, 06-Nov-94 08:49:37 GMT", 784111777.0, id="rfc850"),
    pytest.param(b"Sun Nov  6 08:49:37 1994", 784111777.0, id="asctime"),
    # §5.3: "invalid date formats, especially the value '0'" are in the past (None here).
    pytest.param(b"0", None, id="zero"),
    pytest.param(b"-1", None, id="negative"),
    pytest.param(b"Sun, 32 Nov 1994 08:49:37 GMT", None, id="day-out-of-range"),
    pytest.param(b"Sun, 06 Foo 1994 08:49:37 GMT", None, id="bad-month"),
]


@pytest.mark.parametrize(("value", "expected"), HTTP_DATES)
def test_parse_http_date(value, expected):
    assert parse_http_date(value, NOW) == expected


# --- request side ------------------------------------------------------------------------

REQUEST_CACHEABLE = [
    # §2 / RFC 9110 §9.3.2: GET, and HEAD answered from a stored GET.
    pytest.param("GET", b"/p", [], True, id="get"),
    pytest.param("HEAD", b"/p", [], True, id="head"),
    pytest.param("POST", b"/p", [], False, id="post"),
    pytest.param("OPTIONS", b"/p", [], False, id="options"),
    # §4.3.2: If-Match / If-Unmodified-Since "are not applicable to a cache": bypass.
    pytest.param("GET", b"/p", [(b"If-Match", b'"a"')], False, id="if-match-bypass"),
    pytest.param("GET", b"/p", [(b"Range", b"bytes=0-1")], False, id="range-bypass"),
    # §4.3.2: If-None-Match is evaluated by the cache: no bypass.
    pytest.param("GET", b"/p", [(b"If-None-Match", b'"a"')], True, id="if-none-match-ok"),
    # RFC 9112 §3.2.2: an absolute-form target must agree with Host (key vs route).
    pytest.param("GET", b"http://example.com/p", [], True, id="absolute-same-host"),
    pytest.param("GET", b"http://evil.test/p", [], False, id="absolute-other-host"),
]


@pytest.mark.parametrize(("method", "target", "headers", "expected"), REQUEST_CACHEABLE)
def test_request_is_cacheable(method, target, headers, expected):
    assert request_is_cacheable(req(method, target, headers), S) is expected


REQUEST_DIRECTIVES = [
    pytest.param([], RequestDirectives(), id="none"),
    pytest.param([(b"Cache-Control", b"no-cache")], RequestDirectives(no_cache=True)),  # §5.2.1.4
    pytest.param([(b"Cache-Control", b"no-store")], RequestDirectives(no_store=True)),  # §5.2.1.5
    pytest.param(
        [(b"Cache-Control", b"only-if-cached")],
        RequestDirectives(only_if_cached=True),
        id="only-if-cached",  # §5.2.1.7
    ),
    pytest.param([(b"Cache-Control", b"max-age=0")], RequestDirectives(max_age=0.0)),  # §5.2.1.1
    # An invalid request max-age is read strictly (0), not ignored.
    pytest.param([(b"Cache-Control", b"max-age=x")], RequestDirectives(max_age=0.0), id="bad"),
    # §5.2.1.2: max-stale without a value accepts any staleness.
    pytest.param(
        [(b"Cache-Control", b"max-stale")], RequestDirectives(max_stale=math.inf), id="max-stale"
    ),
    pytest.param([(b"Cache-Control", b"min-fresh=5")], RequestDirectives(min_fresh=5.0)),
    # §5.4: Pragma: no-cache counts only when Cache-Control is absent.
    pytest.param([(b"Pragma", b"no-cache")], RequestDirectives(no_cache=True), id="pragma"),
    pytest.param(
        [(b"Pragma", b"no-cache"), (b"Cache-Control", b"max-age=5")],
        RequestDirectives(max_age=5.0),
        id="pragma-ignored-with-cache-control",
    ),
]


@pytest.mark.parametrize(("headers", "expected"), REQUEST_DIRECTIVES)
def test_request_directives(headers, expected):
    assert request_directives(req(headers=headers)) == expected


PLAIN = [
    pytest.param([], True, id="no-fields"),
    pytest.param([(b"User-Agent", b"wrk"), (b"Accept", b"*/*")], True, id="ordinary-fields"),
    pytest.param([(b"Cache-Control", b"max-age=5")], False, id="cache-control"),  # §5.2.1
    pytest.param([(b"Pragma", b"no-cache")], False, id="pragma"),  # §5.4
    pytest.param([(b"If-None-Match", b'"a"')], False, id="if-none-match"),  # §4.3.2
    pytest.param([(b"if-modified-since", DATE)], False, id="if-modified-since"),  # §4.3.2
    pytest.param([(b"If-Match", b'"a"')], False, id="if-match"),
    pytest.param([(b"Range", b"bytes=0-1")], False, id="range"),
]


@pytest.mark.parametrize(("headers", "expected"), PLAIN)
def test_is_plain(headers, expected):
    # A plain request asks nothing of the cache: its directives are the defaults, and it is
    # cacheable as any GET is (the filter's fast path relies on both).
    head = req(headers=headers)
    assert is_plain(head) is expected
    if expected:
        assert request_directives(head) is NO_DIRECTIVES and request_is_cacheable(head, S)


# --- storing -----------------------------------------------------------------------------

CC = b"Cache-Control"
STORABLE = [
    # (request method, request headers, status, response headers, settings, reason)
    pytest.param("GET", [], 200, [(CC, b"max-age=60")], S, "ok", id="max-age"),
    # §3: a heuristically cacheable status (RFC 9110 §15.1) needs no explicit freshness...
    pytest.param("GET", [], 404, [(b"ETag", b'"a"')], S, "ok", id="heuristic-status"),
    # ...other statuses do.
    pytest.param("GET", [], 302, [(b"ETag", b'"a"')], S, "no freshness", id="302-no-freshness"),
    pytest.param("GET", [], 302, [(CC, b"max-age=5")], S, "ok", id="302-explicit"),
    pytest.param("GET", [], 500, [(CC, b"max-age=5")], S, "ok", id="500-explicit"),
    # §3: "the response status code is final"; 206 needs ranges (§3.3), 304 freshens.
    pytest.param("GET", [], 206, [(CC, b"max-age=60")], S, "status", id="206-not-stored"),
    pytest.param("GET", [], 304, [(CC, b"max-age=60")], S, "status", id="304-not-stored"),
    pytest.param("GET", [], 103, [(CC, b"max-age=60")], S, "status", id="1xx-not-stored"),
    # RFC 9110 §9.3.2: HEAD responses are not stored (a later GET would find no body).
    pytest.param("HEAD", [], 200, [(CC, b"max-age=60")], S, "method", id="head-not-stored"),
    pytest.param("POST", [], 200, [(CC, b"max-age=60")], S, "method", id="post-not-stored"),
    # §5.2.2.5 response no-store; §5.2.1.5 request no-store.
    pytest.param("GET", [], 200, [(CC, b"no-store, max-age=60")], S, "no-store", id="no-store"),
    pytest.param(
        "GET",
        [(CC, b"no-store")],
        200,
        [(CC, b"max-age=60")],
        S,
        "request no-store",
        id="request-no-store",
    ),
    # §5.2.2.3: must-understand with an understood status ignores no-store...
    pytest.param(
        "GET",
        [],
        200,
        [(CC, b"must-understand, no-store, max-age=6")],
        S,
        "ok",
        id="must-understand-understood",
    ),
    # ...and with a status lb does not understand, refuses.
    pytest.param(
        "GET",
        [],
        299,
        [(CC, b"must-understand, no-store, max-age=6")],
        S,
        "must-understand",
        id="must-understand-unknown-status",
    ),
    # §5.2.2.7: a shared cache "MUST NOT store" private; s-maxage does not change that.
    pytest.param(
        "GET", [], 200, [(CC, b"private, s-maxage=60")], S, "private", id="s-maxage+private"
    ),
    # §3.5: Authorization: only with public, s-maxage or must-revalidate.
    pytest.param(
        "GET",
        [(b"Authorization", b"Bearer x")],
        200,
        [(CC, b"max-age=60")],
        S,
        "authorization",
        id="authorization-refused",
    ),
    pytest.param(
        "GET",
        [(b"Authorization", b"Bearer x")],
        200,
        [(CC, b"public, max-age=60")],
        S,
        "ok",
        id="authorization+public",
    ),
    pytest.param(
        "GET",
        [(b"Authorization", b"Bearer x")],
        200,
        [(CC, b"s-maxage=60")],
        S,
        "ok",
        id="authorization+s-maxage",
    ),
    pytest.param(
        "GET",
        [(b"Authorization", b"Bearer x")],
        200,
        [(CC, b"must-revalidate, max-age=9")],
        S,
        "ok",
        id="authorization+must-revalidate",
    ),
    # lb policy (RFC 9111 lets Set-Cookie be cached): refused unless the route allows it.
    pytest.param(
        "GET",
        [],
        200,
        [(CC, b"max-age=60"), (b"Set-Cookie", b"a=1")],
        S,
        "set-cookie",
        id="set-cookie-refused",
    ),
    pytest.param(
        "GET",
        [],
        200,
        [(CC, b"max-age=60"), (b"Set-Cookie", b"a=1")],
        CacheSettings(allow_set_cookie=True),
        "ok",
        id="set-cookie-allowed",
    ),
    # §4.1: Vary: * "always fails to match": never reusable, so not stored.
    pytest.param("GET", [], 200, [(CC, b"max-age=60"), (b"Vary", b"*")], S, "vary *", id="vary-*"),
    pytest.param(
        "GET",
        [],
        200,
        [(CC, b"max-age=60"), (b"Content-Length", b"2000000")],
        S,
        "too large",
        id="too-large",
    ),
    # §4.2.1: lifetime 0 and no validator and no stale-if-error: reusable never.
    pytest.param("GET", [], 200, [(CC, b"max-age=0")], S, "never reusable", id="max-age-0"),
    pytest.param(
        "GET", [], 200, [(CC, b"max-age=0"), (b"ETag", b'"a"')], S, "ok", id="max-age-0+etag"
    ),
    # §5.2.2.4: no-cache is stored, and revalidated on every use.
    pytest.param("GET", [], 200, [(CC, b"no-cache"), (b"ETag", b'"a"')], S, "ok", id="no-cache"),
    # RFC 9213 §2.2: the targeted fields win over Cache-Control, lb's own first.
    pytest.param(
        "GET",
        [],
        200,
        [(CC, b"private"), (b"CDN-Cache-Control", b"max-age=60")],
        S,
        "ok",
        id="cdn-cache-control-overrides-private",
    ),
    pytest.param(
        "GET",
        [],
        200,
        [
            (CC, b"max-age=60"),
            (b"CDN-Cache-Control", b"max-age=60"),
            (b"LB-Cache-Control", b"no-store"),
        ],
        S,
        "no-store",
        id="lb-field-first",
    ),
    pytest.param(
        "GET",
        [],
        200,
        [(CC, b"no-store"), (b"CDN-Cache-Control", b"max-age=1.5, x=")],
        S,
        "no-store",
        id="invalid-targeted-falls-back",
    ),
]


@pytest.mark.parametrize(
    ("method", "req_headers", "status", "headers", "settings", "reason"), STORABLE
)
def test_storable(method, req_headers, status, headers, settings, reason):
    result = storable(req(method, headers=req_headers), resp(status, headers), settings, NOW)
    assert result.reason == reason
    assert bool(result) is (reason == "ok")


def test_private_with_field_names_stores_the_rest():
    # §5.2.2.7: qualified private: "MUST NOT store the specified field names".
    r = resp(200, [(CC, b'private="x-user", max-age=60'), (b"X-User", b"ann")])
    result = storable(req(), r, S, NOW)
    assert result and b"x-user" in result.strip


def test_private_set_cookie_is_stripped_not_refused():
    # §5.2.2.7: private="set-cookie": store the response, without its Set-Cookie.
    r = resp(200, [(CC, b'private="Set-Cookie", max-age=60'), (b"Set-Cookie", b"s=1")])
    result = storable(req(), r, S, NOW)
    assert result and b"set-cookie" in result.strip


NEVER_REUSABLE = [
    # Storable by §3, but usable only after a revalidation it has no validator for.
    pytest.param([(CC, b"no-cache, max-age=60")], False, id="no-cache-no-validator"),
    # RFC 5861 §4: stale-if-error makes a stale copy useful...
    pytest.param([(CC, b"max-age=0, stale-if-error=60")], True, id="stale-if-error"),
    # ...unless must-revalidate forbids serving it stale (§4.2.4).
    pytest.param([(CC, b"max-age=0, must-revalidate, stale-if-error=60")], False, id="mr"),
]


@pytest.mark.parametrize(("headers", "stored"), NEVER_REUSABLE)
def test_never_reusable(headers, stored):
    assert bool(storable(req(), resp(200, headers), S, NOW)) is stored


def test_headers_never_stored():
    # §3.1 / RFC 9110 §7.6.1: hop-by-hop, those Connection names, proxy-specific fields.
    r = resp(200, [(b"Connection", b"close, X-Hop"), (b"Proxy-Authenticate", b"Basic")])
    names = headers_never_stored(r)
    assert {b"connection", b"x-hop", b"keep-alive", b"transfer-encoding"} <= names
    assert b"proxy-authenticate" in names and b"cache-control" not in names


def test_fields_to_strip():
    # RFC 9213: the fields targeted at lb are for lb, not for clients.
    assert fields_to_strip(S) == {b"lb-cache-control", b"cdn-cache-control", b"cache-tag"}
    kept = CacheSettings(strip_cdn_cache_control=False, lb_field=b"X-LB-CC")
    assert fields_to_strip(kept) == {b"x-lb-cc", b"cache-tag"}


# --- freshness ---------------------------------------------------------------------------

D = (b"Date", DATE)
FRESHNESS = [
    # §4.2.1 order for a shared cache: s-maxage, max-age, Expires - Date.
    pytest.param(200, [D, (CC, b"max-age=60, s-maxage=10")], S, 10, id="s-maxage-first"),
    pytest.param(200, [D, (CC, b"max-age=60"), (b"Expires", date(999))], S, 60, id="max-age"),
    pytest.param(200, [D, (b"Expires", date(30))], S, 30, id="expires-minus-date"),
    # §4.2.1: without Date, Expires minus the time received.
    pytest.param(200, [(b"Expires", date(30))], S, 30, id="expires-no-date"),
    pytest.param(200, [D, (b"Expires", date(-30))], S, 0, id="expires-past"),
    # §5.3: "invalid date formats, especially the value '0'" are "already expired".
    pytest.param(200, [D, (b"Expires", b"0")], S, 0, id="expires-0"),
    pytest.param(200, [D, (b"Expires", b"tomorrow")], S, 0, id="expires-invalid"),
    pytest.param(
        200, [D, (b"Expires", date(30)), (b"Expires", date(60))], S, 0, id="expires-twice"
    ),
    # §4.2.1: invalid freshness information: "consider ... to be stale".
    pytest.param(200, [D, (CC, b"max-age=abc")], S, 0, id="max-age-invalid"),
    pytest.param(200, [D, (CC, b"max-age=-5")], S, 0, id="max-age-negative"),
    pytest.param(200, [D, (CC, b"max-age=60, max-age=70")], S, 0, id="max-age-conflict"),
    pytest.param(200, [D, (CC, b"max-age=60"), (CC, b"max-age=60")], S, 60, id="max-age-twice"),
    # §1.2.2: delta-seconds overflow is 2^31.
    pytest.param(200, [D, (CC, b"max-age=99999999999999")], S, 2**31, id="max-age-overflow"),
    # RFC 9213 §2.2: a targeted field also makes Expires ignored.
    pytest.param(
        200,
        [D, (b"CDN-Cache-Control", b"must-revalidate"), (b"Expires", date(60))],
        S,
        0,
        id="targeted-ignores-expires",
    ),
    pytest.param(
        200, [D, (CC, b"max-age=5"), (b"LB-Cache-Control", b"max-age=50")], S, 50, id="lb-field"
    ),
    # §4.2.2: heuristics only when enabled, the status allows it, and nothing explicit.
    pytest.param(200, [D, (b"Last-Modified", date(-1000))], S, 0, id="no-heuristic-by-default"),
    pytest.param(
        200,
        [D, (b"Last-Modified", date(-1000))],
        CacheSettings(heuristic=True),
        100,
        id="heuristic-10-percent",
    ),
    pytest.param(
        200,
        [D, (b"Last-Modified", date(-(10**8)))],
        CacheSettings(heuristic=True),
        86400,
        id="heuristic-capped",
    ),
    pytest.param(
        302,
        [D, (b"Last-Modified", date(-1000))],
        CacheSettings(heuristic=True),
        0,
        id="heuristic-status-only",
    ),
    pytest.param(
        200,
        [D, (CC, b"max-age=5"), (b"Last-Modified", date(-1000))],
        CacheSettings(heuristic=True, default_ttl=30),
        5,
        id="explicit-beats-heuristic",
    ),
    # default_ttl: only when the response says nothing about freshness (DESIGN: headers win).
    pytest.param(200, [D], CacheSettings(default_ttl=30), 30, id="default-ttl"),
    pytest.param(200, [D, (CC, b"max-age=5")], CacheSettings(default_ttl=30), 5, id="ttl-lose"),
    pytest.param(500, [D], CacheSettings(default_ttl=30), 0, id="default-ttl-not-for-500"),
]


@pytest.mark.parametrize(("status", "headers", "settings", "expected"), FRESHNESS)
def test_freshness_lifetime(status, headers, settings, expected):
    assert freshness_lifetime(resp(status, headers), settings, NOW) == expected


# --- age ---------------------------------------------------------------------------------


def meta(**kw: Any) -> StoredMeta:
    """A response stored at NOW, 60 s fresh, changed by `kw`."""
    base = StoredMeta(
        request_time=NOW, response_time=NOW, date_value=NOW, age_value=0.0, freshness_lifetime=60.0
    )
    return replace(base, **kw)


AGES = [
    # §4.2.3: current_age = max(apparent_age, age_value + response_delay) + resident_time.
    pytest.param(meta(), NOW + 10, 10, id="resident-time"),
    pytest.param(meta(date_value=NOW - 5), NOW, 5, id="apparent-age"),
    pytest.param(meta(age_value=20.0), NOW, 20, id="age-header"),
    pytest.param(meta(age_value=20.0, request_time=NOW - 2), NOW, 22, id="age+response-delay"),
    pytest.param(meta(date_value=NOW - 30, age_value=20.0), NOW, 30, id="apparent-beats-age"),
    # Clock skew: a Date after response_time gives apparent_age 0, never negative.
    pytest.param(meta(date_value=NOW + 100), NOW, 0, id="date-in-future"),
    # A clock stepping back: resident_time is 0, not negative.
    pytest.param(meta(), NOW - 50, 0, id="clock-back"),
]


@pytest.mark.parametrize(("m", "now", "expected"), AGES)
def test_current_age(m, now, expected):
    assert current_age(m, now) == expected


def test_stored_meta_reads_the_head():
    r = resp(
        200,
        [
            (b"Date", date(-5)),
            (b"Age", b"3"),
            (CC, b"max-age=60, stale-while-revalidate=30"),
            (b"ETag", b'W/"v1"'),
            (b"Last-Modified", date(-100)),
            (b"Vary", b"Accept-Encoding, accept-language"),
            (b"Cache-Tag", b"product, p-1"),
        ],
    )
    m = stored_meta(req(), r, S, NOW - 1, NOW)
    assert m.date_value == NOW - 5 and m.age_value == 3 and m.freshness_lifetime == 60
    assert m.stale_while_revalidate == 30 and m.stale_if_error == 0
    assert m.etag == b'W/"v1"' and m.last_modified == date(-100)
    assert m.vary == (b"accept-encoding", b"accept-language")
    assert m.tags == ("product", "p-1")
    assert current_age(m, NOW) == 5  # apparent age (5) beats Age + delay (3 + 1)
    assert StoredMeta.from_dict(m.to_dict()) == m


META_FLAGS = [
    # §5.2.2.8 proxy-revalidate and §5.2.2.10 s-maxage mean must-revalidate for lb.
    pytest.param(b"max-age=5, must-revalidate", "must_revalidate", True),
    pytest.param(b"max-age=5, proxy-revalidate", "must_revalidate", True),
    pytest.param(b"s-maxage=5", "must_revalidate", True),
    pytest.param(b"max-age=5", "must_revalidate", False),
    # §5.2.2.4: the qualified no-cache form is read as the unqualified one (stricter).
    pytest.param(b'no-cache="set-cookie"', "no_cache", True),
]


@pytest.mark.parametrize(("cc", "flag", "expected"), META_FLAGS)
def test_stored_meta_flags(cc, flag, expected):
    assert getattr(stored_meta(req(), resp(200, [(CC, cc)]), S, NOW, NOW), flag) is expected


def test_invalid_age_header_reads_as_stale():
    # §5.1 Age is delta-seconds; one that does not parse says nothing about age: stale.
    m = stored_meta(req(), resp(200, [(CC, b"max-age=60"), (b"Age", b"soon")]), S, NOW, NOW)
    assert lookup_decision(m, RequestDirectives(), S, NOW) is not Decision.FRESH


def test_route_stale_windows_apply_when_the_response_has_none():
    # §4.2.4: stale serving allowed by "configuration in accordance with an out-of-band
    # contract"; the response's own directive wins when present.
    settings = CacheSettings(stale_while_revalidate=10, stale_if_error=20)
    m = stored_meta(req(), resp(200, [(CC, b"max-age=5")]), settings, NOW, NOW)
    assert (m.stale_while_revalidate, m.stale_if_error) == (10, 20)
    m = stored_meta(req(), resp(200, [(CC, b"max-age=5, stale-if-error=0")]), settings, NOW, NOW)
    assert m.stale_if_error == 0


# --- lookup ------------------------------------------------------------------------------

R = RequestDirectives
ETAG = {"etag": b'"v1"'}
LOOKUP = [
    # (stored meta or None, request directives, settings, seconds after storing, decision)
    pytest.param(None, R(), S, 0, Decision.MISS, id="nothing-stored"),
    # §5.2.1.7: only-if-cached with nothing usable: 504.
    pytest.param(None, R(only_if_cached=True), S, 0, Decision.GATEWAY_TIMEOUT, id="oic-miss"),
    # §4.2: fresh while age < freshness lifetime.
    pytest.param(meta(), R(), S, 59, Decision.FRESH, id="fresh"),
    pytest.param(meta(**ETAG), R(), S, 60, Decision.REVALIDATE, id="stale-etag"),
    pytest.param(meta(last_modified=DATE), R(), S, 61, Decision.REVALIDATE, id="stale-lm"),
    pytest.param(meta(), R(), S, 61, Decision.MISS, id="stale-no-validator"),
    pytest.param(meta(**ETAG), R(only_if_cached=True), S, 61, Decision.GATEWAY_TIMEOUT),
    pytest.param(meta(), R(only_if_cached=True), S, 1, Decision.FRESH, id="oic-fresh"),
    # §5.2.2.4: response no-cache: always validated.
    pytest.param(meta(no_cache=True, **ETAG), R(), S, 0, Decision.REVALIDATE, id="no-cache"),
    # §5.2.1.4 / §5.2.1.1: the client's no-cache and max-age=0, unless the route ignores them.
    pytest.param(meta(**ETAG), R(no_cache=True), S, 1, Decision.REVALIDATE, id="client-nc"),
    pytest.param(meta(**ETAG), R(max_age=0), S, 1, Decision.REVALIDATE, id="client-max-age-0"),
    pytest.param(meta(**ETAG), R(max_age=10), S, 5, Decision.FRESH, id="client-max-age-ok"),
    pytest.param(
        meta(**ETAG),
        R(no_cache=True),
        CacheSettings(honour_client_no_cache=False),
        1,
        Decision.FRESH,
        id="client-no-cache-ignored",
    ),
    # §5.2.1.3: min-fresh: fresh for at least that long still.
    pytest.param(meta(**ETAG), R(min_fresh=30), S, 40, Decision.REVALIDATE, id="min-fresh"),
    # RFC 5861 §3: within stale-while-revalidate: serve stale, refresh in the background.
    pytest.param(
        meta(stale_while_revalidate=30, **ETAG),
        R(),
        S,
        80,
        Decision.STALE_WHILE_REVALIDATE,
        id="swr-inside",
    ),
    pytest.param(
        meta(stale_while_revalidate=30, **ETAG),
        R(),
        S,
        91,
        Decision.REVALIDATE,
        id="swr-outside",
    ),
    # §4.2.4: must-revalidate (and s-maxage, proxy-revalidate) forbid stale serving.
    pytest.param(
        meta(stale_while_revalidate=30, must_revalidate=True, **ETAG),
        R(),
        S,
        80,
        Decision.REVALIDATE,
        id="swr-vs-must-revalidate",
    ),
    pytest.param(
        meta(stale_while_revalidate=30, no_cache=True, **ETAG),
        R(),
        S,
        1,
        Decision.REVALIDATE,
        id="swr-vs-no-cache",
    ),
    # §5.2.1.1: a client max-age also bounds stale-while-revalidate.
    pytest.param(
        meta(stale_while_revalidate=30, **ETAG),
        R(max_age=10),
        S,
        80,
        Decision.REVALIDATE,
        id="swr-vs-client-max-age",
    ),
    # §5.2.1.2 / §4.2.4: the client's max-stale permits stale, unless must-revalidate.
    pytest.param(meta(**ETAG), R(max_stale=math.inf), S, 500, Decision.STALE_WHILE_REVALIDATE),
    pytest.param(meta(**ETAG), R(max_stale=10), S, 75, Decision.REVALIDATE, id="max-stale-past"),
    pytest.param(
        meta(must_revalidate=True, **ETAG),
        R(max_stale=math.inf),
        S,
        61,
        Decision.REVALIDATE,
        id="max-stale-vs-must-revalidate",
    ),
]


@pytest.mark.parametrize(("m", "directives", "settings", "after", "expected"), LOOKUP)
def test_lookup_decision(m, directives, settings, after, expected):
    assert lookup_decision(m, directives, settings, NOW + after) is expected


STALE_ON_ERROR = [
    # RFC 5861 §4: stale-if-error window, counted past the freshness lifetime.
    pytest.param(meta(stale_if_error=60), 100, True, id="inside"),
    pytest.param(meta(stale_if_error=60), 121, False, id="outside"),
    pytest.param(meta(), 30, True, id="still-fresh"),
    pytest.param(meta(), 61, False, id="no-window"),
    # §4.2.4 / §5.2.2.2: must-revalidate and no-cache forbid it.
    pytest.param(meta(stale_if_error=60, must_revalidate=True), 100, False, id="must-revalidate"),
    pytest.param(meta(stale_if_error=60, no_cache=True), 10, False, id="no-cache"),
]


@pytest.mark.parametrize(("m", "after", "expected"), STALE_ON_ERROR)
def test_may_serve_stale_on_error(m, after, expected):
    assert may_serve_stale_on_error(m, NOW + after) is expected


# --- validation --------------------------------------------------------------------------


def test_conditional_request_fields():
    # §4.3.1: "MUST send the relevant entity tags"; "SHOULD send the Last-Modified value".
    m = meta(etag=b'W/"v1"', last_modified=DATE)
    assert conditional_request_fields(m) == [
        (b"if-none-match", b'W/"v1"'),
        (b"if-modified-since", DATE),
    ]
    assert conditional_request_fields(meta()) == []


CLIENT_CONDITIONALS = [
    # §4.3.2 / RFC 9110 §13.1.2: If-None-Match with the weak comparison.
    pytest.param([(b"If-None-Match", b'"v1"')], meta(etag=b'"v1"'), True, id="inm-match"),
    pytest.param([(b"If-None-Match", b'W/"v1"')], meta(etag=b'"v1"'), True, id="inm-weak"),
    pytest.param([(b"If-None-Match", b'"x", "v1"')], meta(etag=b'W/"v1"'), True, id="inm-list"),
    pytest.param([(b"If-None-Match", b'"v2"')], meta(etag=b'"v1"'), False, id="inm-differs"),
    pytest.param([(b"If-None-Match", b"*")], meta(), True, id="inm-star"),
    pytest.param([(b"If-None-Match", b'"v1"')], meta(), False, id="inm-no-stored-etag"),
    # RFC 9110 §13.1.3: If-Modified-Since only without If-None-Match.
    pytest.param(
        [(b"If-None-Match", b'"v2"'), (b"If-Modified-Since", DATE)],
        meta(etag=b'"v1"', last_modified=date(-10)),
        False,
        id="ims-ignored-with-inm",
    ),
    pytest.param([(b"If-Modified-Since", DATE)], meta(last_modified=date(-10)), True, id="ims"),
    pytest.param(
        [(b"If-Modified-Since", date(-20))],
        meta(last_modified=date(-10)),
        False,
        id="ims-modified",
    ),
    # §4.3.2: without Last-Modified, the stored Date.
    pytest.param([(b"If-Modified-Since", DATE)], meta(date_value=NOW - 1), True, id="ims-date"),
    pytest.param([(b"If-Modified-Since", b"yesterday")], meta(), False, id="ims-invalid"),
    pytest.param([], meta(etag=b'"v1"'), False, id="no-precondition"),
]


@pytest.mark.parametrize(("headers", "m", "expected"), CLIENT_CONDITIONALS)
def test_client_conditional_matches(headers, m, expected):
    assert client_conditional_matches(req(headers=headers), m) is expected


STORED: list[tuple[bytes, bytes]] = [
    (b"Content-Type", b"text/html"),
    (b"Date", date(-100)),
    (b"Age", b"40"),
    (CC, b"max-age=60"),
    (b"ETag", b'"v1"'),
    (b"Content-Length", b"5"),
    (b"X-Old", b"kept"),
]
FRESHEN = [
    # §3.2 / §4.3.4: the 304's fields replace the stored ones; its Date too; stored Age goes.
    pytest.param(
        [(b"Date", DATE), (CC, b"max-age=120"), (b"ETag", b'"v1"')],
        {b"date": [DATE], b"cache-control": [b"max-age=120"], b"x-old": [b"kept"]},
        id="replaced",
    ),
    # §3.2: "The Content-Length header field" is not updated; nor Set-Cookie (lb); the 304
    # without Date: the time received (RFC 9110 §6.6.1).
    pytest.param(
        [(b"Content-Length", b"0"), (b"Set-Cookie", b"s=1")],
        {b"date": [DATE], b"content-length": [b"5"], b"age": None, b"set-cookie": None},
        id="exceptions",
    ),
    pytest.param([(b"Age", b"7"), (b"Date", DATE)], {b"age": [b"7"]}, id="age-from-304"),
    pytest.param([(b"ETag", b'W/"v1"')], {b"etag": [b'W/"v1"']}, id="weak-etag-selects"),
    # §4.3.4: a 304 with another strong validator does not select the stored response.
    pytest.param([(b"ETag", b'"v2"')], None, id="other-etag"),
]


@pytest.mark.parametrize(("not_modified", "expected"), FRESHEN)
def test_freshen(not_modified, expected):
    merged = freshen(STORED, not_modified, NOW)
    if expected is None:
        assert merged is None
        return
    assert merged is not None
    for name, values in expected.items():
        got = [v for n, v in merged if n.lower() == name]
        assert got == (values or []), name


def test_freshened_entry_is_fresh_again():
    # §4.3.4: after the 304 the entry's age restarts from the 304's Date.
    m = stored_meta(req(), resp(200, STORED), S, NOW - 200, NOW - 200)
    assert lookup_decision(m, R(), S, NOW) is Decision.REVALIDATE
    merged = freshen(STORED, [(b"Date", DATE)], NOW)
    assert merged is not None
    m2 = stored_meta(req(), resp(200, merged), S, NOW, NOW)
    assert lookup_decision(m2, R(), S, NOW + 1) is Decision.FRESH


# --- keys --------------------------------------------------------------------------------


def key(target: bytes = b"/p", headers: Fields = (), settings=S, method="GET") -> str:
    return primary_key(req(method, target, headers), "https", settings)


def test_primary_key_shape():
    # §2: method and target URI; GET and HEAD share entries (RFC 9110 §9.3.2).
    assert key(b"/p?a=1") == "GET https://example.com/p?a=1"
    assert key(method="HEAD") == key()
    assert primary_key(req(), "http", S) != key()


SAME_KEY = [
    pytest.param(b"/p?b=2&a=1", b"/p?a=1&b=2", CacheSettings(key_query="sort"), True),
    pytest.param(b"/p?b=2&a=1", b"/p?a=1&b=2", S, False, id="keep-order-matters"),
    pytest.param(b"/p?x=1", b"/p", CacheSettings(key_query="ignore"), True, id="ignore"),
    # Repeated names keep their relative order when sorted: it can be significant.
    pytest.param(b"/p?a=2&a=1", b"/p?a=1&a=2", CacheSettings(key_query="sort"), False),
    # The path as sent: /a%2Fb is not /a/b.
    pytest.param(b"/a%2Fb", b"/a/b", S, False, id="encoded-slash"),
    pytest.param(b"https://example.com/p", b"/p", S, True, id="absolute-form"),
]


@pytest.mark.parametrize(("a", "b", "settings", "same"), SAME_KEY)
def test_primary_key_query_and_path(a, b, settings, same):
    assert (key(a, settings=settings) == key(b, settings=settings)) is same


def test_primary_key_host_normalised():
    # RFC 9110 §4.2.3: the default port and case do not make another origin.
    a = RequestHead("GET", b"/p", "1.1", [(b"Host", b"EXAMPLE.com:443")])
    assert primary_key(a, "https", S) == key()


def test_primary_key_configured_headers_and_cookies_are_digested():
    settings = CacheSettings(key_headers=(b"x-tenant",), key_cookies=("plan",))
    a = key(headers=[(b"X-Tenant", b"t1"), (b"Cookie", b"plan=pro; sid=secret")], settings=settings)
    b = key(headers=[(b"X-Tenant", b"t1"), (b"Cookie", b"sid=other; plan=pro")], settings=settings)
    c = key(headers=[(b"X-Tenant", b"t2"), (b"Cookie", b"plan=pro")], settings=settings)
    d = key(headers=[(b"Cookie", b"plan=pro")], settings=settings)
    e = key(headers=[(b"X-Tenant", b""), (b"Cookie", b"plan=pro")], settings=settings)
    assert a == b and len({a, c, d, e}) == 4  # absent differs from empty
    assert "t1" not in a and "pro" not in a
    assert invalidates(uri_key("https", "example.com", b"/p", settings), a)


VARY = [
    pytest.param([(b"Vary", b"Accept-Encoding")], (b"accept-encoding",)),
    pytest.param(
        [(b"Vary", b"b, A"), (b"Vary", b" a ")], (b"a", b"b"), id="lines-merged-sorted-dedup"
    ),
    pytest.param([], (), id="none"),
    pytest.param([(b"Vary", b"accept, *")], None, id="star"),  # §4.1: never matches
]


@pytest.mark.parametrize(("headers", "expected"), VARY)
def test_vary_names(headers, expected):
    assert vary_names(resp(200, headers)) == expected


AE = (b"accept-encoding",)
VARIANTS = [
    # §4.1: match after "adding or removing whitespace" and "combining multiple header
    # field lines"; an absent field "can only match" an absent one.
    pytest.param(
        AE, [(b"Accept-Encoding", b"gzip,br")], [(b"Accept-Encoding", b"gzip , br")], True
    ),
    pytest.param(
        AE,
        [(b"Accept-Encoding", b"gzip, br")],
        [(b"Accept-Encoding", b"gzip"), (b"Accept-Encoding", b"br")],
        True,
        id="lines-combined",
    ),
    pytest.param(AE, [(b"Accept-Encoding", b"gzip")], [(b"Accept-Encoding", b"br")], False),
    pytest.param(AE, [], [(b"Accept-Encoding", b"")], False, id="absent-vs-empty"),
    pytest.param(AE, [], [], True, id="both-absent"),
    pytest.param(
        (b"x",), [(b"X", b'"a b"')], [(b"X", b'"ab"')], False, id="quoted-whitespace-kept"
    ),
    pytest.param((), [(b"A", b"1")], [(b"A", b"2")], True, id="no-vary"),
]


@pytest.mark.parametrize(("vary", "a", "b", "same"), VARIANTS)
def test_variant_key(vary, a, b, same):
    assert (variant_key(vary, req(headers=a)) == variant_key(vary, req(headers=b))) is same


INVALIDATION = [
    # §4.4: unsafe method + non-error status: the target URI...
    pytest.param("POST", 201, [], ["GET https://example.com/p?x=1"], id="post"),
    pytest.param("PURGEX", 200, [], ["GET https://example.com/p?x=1"], id="unknown-method"),
    # ...not after an error, nor for a safe method.
    pytest.param("POST", 500, [], [], id="error-status"),
    pytest.param("GET", 200, [], [], id="safe-method"),
    # ...and Location / Content-Location on the same origin only.
    pytest.param(
        "PUT",
        200,
        [(b"Location", b"/q"), (b"Content-Location", b"https://example.com/r?s=1")],
        [
            "GET https://example.com/p?x=1",
            "GET https://example.com/q",
            "GET https://example.com/r?s=1",
        ],
        id="location-same-origin",
    ),
    pytest.param(
        "DELETE",
        204,
        [(b"Location", b"https://other.test/q"), (b"Location", b"http://example.com/q")],
        ["GET https://example.com/p?x=1"],
        id="other-origin-ignored",
    ),
]


@pytest.mark.parametrize(("method", "status", "headers", "expected"), INVALIDATION)
def test_invalidation_targets(method, status, headers, expected):
    request = req(method, b"/p?x=1")
    assert invalidation_targets(request, resp(status, headers), "https", S) == expected


def test_invalidation_from_an_absolute_form_target():
    # §4.4 with RFC 9112 §3.2.2: a relative Location resolves against the target URI.
    request = req("POST", b"https://example.com/a/b")
    got = invalidation_targets(request, resp(303, [(b"Location", b"c")]), "https", S)
    assert got == ["GET https://example.com/a/b", "GET https://example.com/a/c"]


def test_invalidates_matches_whole_uris_only():
    target = "GET https://example.com/p"
    assert invalidates(target, target) and invalidates(target, target + " #abc")
    assert not invalidates(target, "GET https://example.com/p2")
    assert not invalidates(target, "GET https://example.com/p?x=1")


# --- properties --------------------------------------------------------------------------

times = st.floats(min_value=0, max_value=4e9, allow_nan=False)


@given(times, times, times, st.floats(0, 2**31), times)
def test_current_age_never_negative(request_time, response_time, date_value, age_value, now):
    m = meta(
        request_time=request_time,
        response_time=response_time,
        date_value=date_value,
        age_value=age_value,
    )
    assert current_age(m, now) >= 0


@given(
    times,
    times,
    times,
    st.floats(0, 2**31),
    st.floats(0, 2**31),
    st.booleans(),
    st.booleans(),
    st.floats(0, 1e6),
    times,
)
def test_fresh_age_is_lookup_decision_fresh(
    request_time, response_time, date_value, age_value, lifetime, no_cache, must, swr, now
):
    # The filter's fast path (fresh_age) and the full decision agree for a plain request,
    # whether or not the route honours the client's directives.
    m = meta(
        request_time=request_time,
        response_time=response_time,
        date_value=date_value,
        age_value=age_value,
        freshness_lifetime=lifetime,
        no_cache=no_cache,
        must_revalidate=must,
        stale_while_revalidate=swr,
        etag=b'"e"',
    )
    for settings in (S, CacheSettings(honour_client_no_cache=False)):
        fresh = lookup_decision(m, NO_DIRECTIVES, settings, now) is Decision.FRESH
        assert (fresh_age(m, now) is not None) is fresh
    age = fresh_age(m, now)
    assert age is None or age == current_age(m, now)


header_values = st.binary(max_size=40)


@given(header_values, header_values, header_values, st.sampled_from([200, 302, 404, 500]))
def test_freshness_lifetime_never_negative_or_raises(cc, expires, modified, status):
    settings = CacheSettings(heuristic=True)
    r = resp(status, [(CC, cc), (b"Expires", expires), (b"Last-Modified", modified)])
    assert 0 <= freshness_lifetime(r, settings, NOW) <= 2**31


@given(header_values)
def test_parsers_never_raise(value):
    parse_cache_control(value)
    parse_targeted_field(value)
    parse_http_date(value)
    assert normalize_field_value(normalize_field_value(value)) == normalize_field_value(value)
