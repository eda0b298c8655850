"""The answers the cache filter gives from a stored entry: the stored response with its Age
and X-Cache (HIT, STALE, REVALIDATED), a 304 to the client's own conditional request, and the
504 of only-if-cached with nothing usable stored.

An entry's fields are rendered to bytes once, on its first hit (`Entry.rendered`), without
the fields a hit must not repeat: lb's targeted fields, a server's own X-Cache, and the
stored Age (a hit's Age is lb's alone, RFC 9111 §4.2.3, computed per answer).
"""

from __future__ import annotations

from collections.abc import Collection

from lb.core.cache_entry import Entry
from lb.core.cache_freshness import current_age
from lb.core.cache_validation import client_conditional_matches
from lb.core.errors import Reason
from lb.core.http import RequestHead
from lb.filters.cache_state import MISS, CacheState
from lb.proxy.http.pipeline import Answer

__all__ = ["hit", "only_if_cached", "serve"]

# Fields a 304 carries from the 200 it stands for (RFC 9110 §15.4.5).
_NOT_MODIFIED_FIELDS = frozenset(
    {b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary"}
)


def serve(
    request: RequestHead,
    state: CacheState,
    entry: Entry,
    result: bytes,
    now: float,
    strip_hit: Collection[bytes],
) -> Answer:
    """`entry` as the answer to `request`, X-Cache `result`; `strip_hit`: the stored fields a
    hit leaves out (Age among them)."""
    state.result = result
    age = b"%d" % int(current_age(entry.meta, now))
    if client_conditional_matches(request, entry.meta):
        fields = [f for f in entry.headers if f[0].lower() in _NOT_MODIFIED_FIELDS]
        fields += [(b"age", age), (b"x-cache", result)]
        return Answer(304, b"Not Modified", fields)
    raw = b"%s\r\nage: %s\r\nx-cache: %s" % (_rendered(entry, strip_hit), age, result)
    return Answer(entry.status, entry.reason, None, entry.body, raw=raw, dated=entry.dated)


def hit(entry: Entry, age: float, strip_hit: Collection[bytes]) -> Answer:
    """A fresh `entry`, `age` seconds old, as the answer to a request with no conditional of
    its own (`cache_request.is_plain`): what `serve` gives it with X-Cache HIT, with one
    format of bytes per answer."""
    seconds = int(age)
    if seconds != entry.hit_age:  # (Age is in whole seconds: the same fields all second)
        rendered = entry.rendered or _rendered(entry, strip_hit)
        # %s only: compiled, that is one concatenation; a %d would be a generic format call.
        entry.hit_fields = b"%s\r\nage: %s\r\nx-cache: HIT" % (rendered, str(seconds).encode())
        entry.hit_age = seconds
    return Answer(
        entry.status, entry.reason, None, entry.body, raw=entry.hit_fields, dated=entry.dated
    )


def _rendered(entry: Entry, strip_hit: Collection[bytes]) -> bytes:
    rendered = entry.rendered
    if rendered is None:  # once per entry: the fields a hit sends, as bytes
        entry.rendered = rendered = b"".join(
            [b"\r\n%s: %s" % f for f in entry.headers if f[0].lower() not in strip_hit]
        )
        entry.dated = any(name.lower() == b"date" for name, _ in entry.headers)
    return rendered


def only_if_cached() -> Answer:
    # RFC 9111 §5.2.1.7: only-if-cached and nothing usable stored: 504.
    answer = Answer.refuse(Reason.backend_timeout, "only-if-cached: not in the cache")
    answer.fields.append((b"x-cache", MISS))
    return answer
