"""Cache keys (sans-IO): which stored response a request may use, and which ones a write
to the origin invalidates.

An entry lives under a *primary key* (RFC 9111 §2: "at a minimum, the request method and
target URI"), and within it under a *variant key* made from the request fields the response
named in Vary (§4.1). Keys are readable up to the URI ("GET https://host/path?query"), so a
purge by host, path or prefix can find them; anything taken from request fields (configured
key headers and cookies, Vary values) goes in as a digest, never in clear.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urljoin, urlsplit

from lb.core.cache_fields import normal_authority, normalize_field_value
from lb.core.cache_policy import SAFE_METHODS, CacheSettings, ResponseLike
from lb.core.http import RequestHead

__all__ = ["invalidates", "invalidation_targets", "primary_key", "uri_key", "variant_key"]


def uri_key(scheme: str, authority: str, target: bytes, settings: CacheSettings) -> str:
    """The target URI part of a primary key (§2: "at a minimum, the request method and
    target URI"): "GET scheme://authority/path?query". GET and HEAD share it (a GET entry
    answers HEAD). The path is kept as sent (undecoded: /a%2Fb is not /a/b); the query as
    `settings.key_query` says."""
    raw = target.decode("latin-1")
    if raw[:1] != "/":
        split = urlsplit(raw)
        raw = (split.path or "/") + ("?" + split.query if split.query else "")
    path, _, query = raw.partition("?")
    if settings.key_query == "ignore":
        query = ""
    elif settings.key_query == "sort" and query:
        # A stable sort by name: values of a repeated name keep their order (it can matter).
        query = "&".join(sorted(query.split("&"), key=lambda p: p.partition("=")[0]))
    host = normal_authority(scheme, authority)
    return f"GET {scheme}://{host}{path}" + (f"?{query}" if query else "")


def primary_key(head: RequestHead, scheme: str, settings: CacheSettings) -> str:
    """The key a request's entries are stored under: `uri_key`, then, when the route keys on
    request headers or cookies, " #" and a digest of their values (never the values
    themselves: a session cookie must not show in a store's key list)."""
    key = uri_key(scheme, head.index.get(b"host", b"").decode("latin-1"), head.target, settings)
    if not settings.key_headers and not settings.key_cookies:
        return key
    h = hashlib.sha256()
    for name in settings.key_headers:
        _digest_field(h, b"h:" + name, head.index.get(name))
    for cookie in settings.key_cookies:
        value = head.cookie(cookie)
        _digest_field(h, b"c:" + cookie.encode(), None if value is None else value.encode())
    return f"{key} #{h.hexdigest()[:32]}"


def invalidates(target: str, key: str) -> bool:
    """Whether purging `target` (from `invalidation_targets` or `uri_key`) removes the entry
    stored under primary key `key`: the same URI, whatever its header/cookie digest."""
    return key == target or key.startswith(target + " #")


def variant_key(vary: tuple[bytes, ...], head: RequestHead) -> str:
    """The secondary key (§4.1): a digest of the request's values of the Vary fields, "" when
    there are none. Two requests match when their values differ only in whitespace or in
    being split across field lines (`head.index` joins them with ", "); a field absent
    "can only match another request if it is also absent there"."""
    if not vary:
        return ""
    h = hashlib.sha256()
    for name in vary:
        value = head.index.get(name)
        _digest_field(h, name, None if value is None else normalize_field_value(value))
    return h.hexdigest()[:32]


def _digest_field(h: Any, name: bytes, value: bytes | None) -> None:
    # Length-prefixed, so no value can pose as another field; absent differs from empty.
    h.update(b"%d:%s" % (len(name), name))
    h.update(b"-;" if value is None else b"%d:%s;" % (len(value), value))


def invalidation_targets(
    request: RequestHead, response: ResponseLike, scheme: str, settings: CacheSettings
) -> list[str]:
    """§4.4: after a non-error response (2xx, 3xx) to an unsafe method, "a cache MUST
    invalidate the target URI", and lb also does so for the Location and Content-Location
    URIs, but only on the same origin ("MUST NOT ... if the origin ... differs"). Each target
    is a `uri_key`; `invalidates(target, key)` tells which stored keys it removes."""
    if request.method in SAFE_METHODS or not 200 <= response.status < 400:
        return []
    authority = request.index.get(b"host", b"").decode("latin-1")
    targets = [uri_key(scheme, authority, request.target, settings)]
    target = request.target.decode("latin-1")
    # Relative references resolve against the target URI (absolute-form: the target itself).
    base = target if target[:1] != "/" else f"{scheme}://{authority}{target}"
    origin = (scheme, normal_authority(scheme, authority))
    for name, value in response.headers:
        if name.lower() not in (b"location", b"content-location"):
            continue
        uri = urlsplit(urljoin(base, value.decode("latin-1").strip()))
        if (uri.scheme, normal_authority(uri.scheme, uri.netloc)) == origin:
            named = (uri.path or "/") + ("?" + uri.query if uri.query else "")
            key = uri_key(scheme, authority, named.encode("latin-1"), settings)
            if key not in targets:
                targets.append(key)
    return targets
