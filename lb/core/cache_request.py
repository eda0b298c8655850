"""The request side of the cache policy (sans-IO): whether a request may use the cache at all,
and what its own Cache-Control asks of it (RFC 9111 §5.2.1, §5.4).

A request the cache may not answer (`request_is_cacheable` false) goes to the server as is,
and its response is not stored. `request_directives` never raises: an invalid number reads
the strict way (0), so a client asking for something gets at least what it asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from lb.core.cache_fields import delta_seconds, normal_authority, parse_cache_control
from lb.core.cache_policy import CacheSettings
from lb.core.http import RequestHead

__all__ = [
    "NOT_PLAIN",
    "NO_DIRECTIVES",
    "RequestDirectives",
    "is_plain",
    "request_directives",
    "request_is_cacheable",
]

# Request preconditions a cache does not evaluate (§4.3.2: If-Match and If-Unmodified-Since
# "are not applicable to a cache"), and Range (not implemented): such requests bypass.
_BYPASS_REQUEST_FIELDS = (b"if-match", b"if-unmodified-since", b"if-range", b"range")
# A request with none of these asks nothing of the cache: no directives of its own (§5.2.1,
# and Pragma, §5.4), no precondition (§4.3.2), no Range.
NOT_PLAIN: Final = frozenset(
    (b"cache-control", b"pragma", b"if-none-match", b"if-modified-since", *_BYPASS_REQUEST_FIELDS)
)


@dataclass(frozen=True, slots=True)
class RequestDirectives:
    """The request's Cache-Control (RFC 9111 §5.2.1); seconds are None when absent."""

    no_cache: bool = False
    no_store: bool = False
    only_if_cached: bool = False
    max_age: float | None = None
    max_stale: float | None = None  # inf for a bare max-stale ("any staleness")
    min_fresh: float | None = None


NO_DIRECTIVES = RequestDirectives()


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


def is_plain(head: RequestHead) -> bool:
    """Whether the request carries none of the fields that change what the cache does with
    it: then its directives are `NO_DIRECTIVES`, the cache answers no precondition of its
    own, and whether it is cacheable depends only on its method, target and Host. Most
    requests are plain: the cache filter's fast path takes only those."""
    return head.index.keys().isdisjoint(NOT_PLAIN)


def request_directives(head: RequestHead) -> RequestDirectives:
    """RFC 9111 §5.2.1, and §5.4: without Cache-Control, "Pragma: no-cache" is no-cache."""
    cc = head.index.get(b"cache-control")
    if cc is None:
        pragma = head.index.get(b"pragma")
        if pragma is None:
            return NO_DIRECTIVES  # the common request: nothing to parse
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
