"""Validation (sans-IO): the conditional request lb sends to revalidate a stored response
(RFC 9111 §4.3.1), the client's own conditionals lb answers from one (§4.3.2), and the stored
head a 304 freshens (§4.3.4).

A 304 that names other validators than the stored response's does not freshen it (`freshen`
gives None): the response is then fetched anew, never served with the wrong head.
"""

from __future__ import annotations

from lb.core.cache_fields import (
    fields_by_name,
    first_value,
    format_http_date,
    opaque_tag,
    parse_entity_tags,
    parse_http_date,
)
from lb.core.cache_policy import StoredHead, StoredMeta
from lb.core.cache_storing import headers_never_stored
from lb.core.http import RequestHead

__all__ = [
    "CONDITIONAL_FIELDS",
    "client_conditional_matches",
    "conditional_request_fields",
    "freshen",
]

# The client's own preconditions: a filter removes them when it revalidates with its own.
CONDITIONAL_FIELDS = frozenset(
    {b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since", b"if-range"}
)


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
    old, new = fields_by_name(stored), fields_by_name(not_modified)
    new_etags = parse_entity_tags(first_value(new, b"etag", b""))
    old_etags = parse_entity_tags(first_value(old, b"etag", b""))
    if new_etags:
        if not old_etags or opaque_tag(new_etags[0]) != opaque_tag(old_etags[0]):
            return None
    elif (
        b"last-modified" in new
        and b"last-modified" in old
        and parse_http_date(new[b"last-modified"][0]) != parse_http_date(old[b"last-modified"][0])
    ):
        return None
    skip = headers_never_stored(StoredHead(304, not_modified)) | {b"set-cookie"}
    updates = [(n, v) for n, v in not_modified if n.lower() not in skip]
    replaced = {n.lower() for n, _ in updates} | {b"age", b"date"}
    merged = [(n, v) for n, v in stored if n.lower() not in replaced] + updates
    if b"date" not in new:
        merged.append((b"date", format_http_date(received_at)))
    return merged
