"""The bytes lb sends on (sans-IO): a request as its server gets it, a response head as its
client gets it. Hop-by-hop fields are removed (RFC 9110 §7.6.1) and the forwarding fields set
(DESIGN.md, "On the wire": X-Forwarded-For, -Proto, -Host, X-Request-ID). Also the request ids
lb gives requests that come without one, and chunked framing for bodies it re-frames.
"""

from __future__ import annotations

import os
import re
import time
from typing import Final

from lb.core.cache_fields import format_http_date
from lb.core.http import (
    FORWARDING,
    HOP_BY_HOP,
    RequestHead,
    ResponseHead,
    field_tokens,
    keep,
    lower_name,
)

# A Final alias: compiled code holds it in a C static, not a module-attribute lookup per call.
now: Final = time.time

_DROP_TO_SERVER: Final = HOP_BY_HOP | FORWARDING
_DROP_TO_CLIENT: Final = HOP_BY_HOP | {b"x-request-id"}
_DROP_NAMES: Final = frozenset(name.decode("latin-1") for name in _DROP_TO_CLIENT)


class _RequestIds:
    """Unique per process without a syscall or uuid4 per request: a random prefix and a
    counter, in decimal (one bytes format once compiled: %s and %d are direct; hex is not)."""

    def __init__(self) -> None:
        self.prefix = b""
        self.issued = 0
        self.reseed()

    def reseed(self) -> None:
        self.prefix = os.urandom(4).hex().encode() + b"-"
        self.issued = 0

    def next(self) -> bytes:
        self.issued += 1
        return b"%s%d" % (self.prefix, self.issued)


_request_ids: Final = _RequestIds()


def new_request_id() -> bytes:
    return _request_ids.next()


def reseed_request_ids() -> None:
    """Called in each worker after fork, so siblings never share a prefix."""
    _request_ids.reseed()


_REQUEST_ID: Final = re.compile(rb"[\x21-\x7e]{1,200}")


def valid_request_id(value: bytes) -> bool:
    """A client's X-Request-ID is kept only if it is short visible ASCII (no log injection)."""
    return _REQUEST_ID.fullmatch(value) is not None


def request_to_server(
    head: RequestHead,
    client_ip: str,
    proto: bytes,
    request_id: bytes,
    upgrade: bool,
    client_subject: tuple[bytes, bytes | None] | None = None,
    default_host: bytes = b"",
) -> bytes:
    """The request head as lb sends it to a server. Framing: Content-Length when the client
    gave one, chunked when it sent chunked (lb re-encodes each chunk it forwards).

    `client_subject` is (lower-case header name, the verified client certificate's subject or
    None): whatever the client sent under that name is dropped, so only lb can set it.

    `default_host`: the Host sent for a request that has none (HTTP/1.0 may omit it, but lb
    speaks HTTP/1.1 to servers, where it is required: RFC 9112 §3.2); the address the client
    reached, as §3.3 reconstructs a target URI from "the default name configured for the
    server instance". No X-Forwarded-Host then: the client named no host."""
    drop = _DROP_TO_SERVER
    tokens = head.connection_tokens
    if tokens and not tokens <= _COMMON_CONNECTION_TOKENS:
        drop = drop | tokens
    if client_subject is not None:
        drop = drop | {client_subject[0]}
    index = head.index
    # (One %s-format per field: a single copy once compiled, where `+` made three.)
    fields = b"".join(
        [
            b"%s: %s\r\n" % (name, value)
            for name, value in head.headers
            if lower_name(name) not in drop
        ]
    )
    xff = index.get(b"x-forwarded-for")
    ip = client_ip.encode()
    host = index.get(b"host")
    framing = b""  # (with the client certificate's subject first, when there is one)
    if client_subject is not None and client_subject[1] is not None:
        framing = b"%s: %s\r\n" % client_subject
    if host is None:
        framing += b"host: %s\r\n" % default_host
    if head.chunked:
        framing += b"transfer-encoding: chunked\r\n"
    elif head.content_length is not None:
        framing += b"content-length: %d\r\n" % head.content_length
    if upgrade:
        framing += b"connection: upgrade\r\nupgrade: %s\r\n" % index[b"upgrade"]
    # One format for the whole head: this runs once per request on the hot path.
    return (
        b"%s %s HTTP/1.1\r\n%sx-forwarded-for: %s\r\nx-forwarded-proto: %s\r\n"
        b"%sx-request-id: %s\r\n%s\r\n"
        % (
            head.method.encode(),
            head.target,
            fields,
            xff + b", " + ip if xff else ip,
            proto,
            b"x-forwarded-host: %s\r\n" % host if host is not None else b"",
            request_id,
            framing,
        )
    )


_COMMON_CONNECTION_TOKENS: Final = frozenset({b"keep-alive", b"close", b"upgrade"})


def response_to_client(
    head: ResponseHead,
    request_id: bytes,
    *,
    chunked: bool,
    close: bool,
    extra: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
) -> bytes:
    """The response head as lb sends it to the client, then `body` (lb's own answer: one
    copy, not a head and a concatenation). `chunked` re-frames a body whose end the client
    could not otherwise find (close-delimited or chunked upstream)."""
    forward = head.forward
    if forward is None:
        forward = _forwarded_to_client(head.headers)
    status = head.status
    if status == 101:
        upgrade = [b"upgrade: %s\r\n" % v for n, v in head.headers if n.lower() == b"upgrade"]
        framing = b"connection: upgrade\r\n" + b"".join(upgrade)
    elif chunked:
        framing = b"transfer-encoding: chunked\r\n"
    elif head.content_length is not None:
        framing = _content_length(head.content_length)
    else:
        framing = b""
    tail = b"".join([b"%s: %s\r\n" % (name, value) for name, value in extra]) if extra else b""
    if not head.dated and _lacks_date(forward):
        # RFC 9110 §6.6.1: "A recipient with a clock that receives a response message without a
        # Date header field MUST add one if the message is cached or forwarded downstream."
        tail = _date_field() + tail
    if close and status != 101:
        tail += b"connection: close\r\n"
    # One format for the whole head: this runs once per response on the hot path.
    return b"HTTP/1.1 %d %s%s\r\n%sx-request-id: %s\r\n%s\r\n%s" % (
        status,
        head.reason,
        forward,
        framing,
        request_id,
        tail,
        body,
    )


# Content-Length fields by length (lb.core.http.keep bounds it): a site's responses come in
# few sizes, each then formatted once (the int's formatting is most of the field).
_CONTENT_LENGTHS: Final[dict[int, bytes]] = {}


def _content_length(length: int) -> bytes:
    field = _CONTENT_LENGTHS.get(length)
    if field is None:
        field = keep(_CONTENT_LENGTHS, length, b"content-length: %d\r\n" % length)
    return field


def _lacks_date(fields: bytes) -> bool:
    """No Date among the rendered fields. Searched as latin-1 text: mypyc calls str's `in`
    directly, where bytes' find() costs a method lookup and argument parsing (and bytes `in`
    bytes first tries the needle as an int, raising and dropping a TypeError)."""
    text = fields.decode("latin-1")
    return "\r\nDate:" not in text and "\r\ndate:" not in text and "\r\ndate:" not in text.lower()


_date_second = -1
_date_bytes = b""


def _date_field() -> bytes:
    """b"date: <IMF-fixdate>\r\n" for now, formatted once a second."""
    global _date_second, _date_bytes
    second = int(now())
    if second != _date_second:
        _date_second = second
        _date_bytes = b"date: " + format_http_date(second) + b"\r\n"
    return _date_bytes


def _forwarded_to_client(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The fields of a response head that go on to the client, each as b"\r\nName: value"."""
    drop = _DROP_TO_CLIENT
    # Found first: Connection may come after the fields it names (RFC 9110 §7.6.1). The
    # length test spares a lower() per field.
    for name, value in headers:
        if len(name) == 10 and name.lower() == b"connection":
            tokens = field_tokens(value) - _COMMON_CONNECTION_TOKENS
            if tokens:
                drop = drop | tokens
    return b"".join(
        [b"\r\n%s: %s" % (name, value) for name, value in headers if name.lower() not in drop]
    )


# By length, the first letters (in both cases) of `_DROP_TO_CLIENT`'s names of that length:
# most fields are told apart by length and first letter alone, by an index and a search of a
# few letters, with no slice, lower() or set lookup (Content-Type has x-request-id's length,
# Set-Cookie Connection's). (The block is scanned as latin-1 text: mypyc calls str's find,
# lower and split directly, where bytes' go through a method lookup and argument parsing.)
def _first_letters(length: int) -> str:
    letters = "".join({chr(name[0]) for name in _DROP_TO_CLIENT if len(name) == length})
    return letters + letters.upper()


_DROP_FIRSTS: Final = tuple(
    _first_letters(n) for n in range(max(len(name) for name in _DROP_TO_CLIENT) + 1)
)
_COMMON_TOKENS: Final = frozenset(t.decode("latin-1") for t in _COMMON_CONNECTION_TOKENS)


def scan_response_fields(
    raw: bytes, text: str | None = None
) -> tuple[bytes | None, int | None, bool]:
    """For a parser that keeps a response's field block as it arrived (`raw`, every field as
    b"\r\nName: value") and has validated it (CRLF line ends, no obs-fold, no space before a
    colon, one Content-Length: llhttp's strict mode): the fields to forward to the client as
    they are, or None when Connection names further fields to drop (`response_to_client`
    then filters `headers`); the Content-Length; whether the body is chunked.

    Per field, two searches (its colon, its end: the LF, as a validated block has no other,
    which a one-letter search finds faster than CRLF) and a test of its length and first
    letter; a field that passes is compared with the names of that length. What is forwarded
    is `raw` without the dropped lines, cut by offset: a regex over the block cost four times
    as much, a split into lines or a search per listed name (nine) more than this. `text`:
    `raw` as latin-1 text, when the caller has it already."""
    if text is None:
        text = raw.decode("latin-1")
    size = len(text)
    pieces: list[bytes] | None = None  # the kept parts of `raw`, once a field is dropped
    kept_from = 0  # where the part of `raw` not yet dropped or kept begins
    content_length = None
    chunked = False
    rebuild = False
    firsts = _DROP_FIRSTS
    longest = len(firsts)
    end = 0  # each field begins at the CRLF that ends the line before it
    while end < size:
        start = end
        end = text.find("\n", start + 2) - 1  # (CR LF: llhttp refuses a bare CR or LF)
        if end < 0:
            end = size
        n = text.find(":", start + 2, end) - start - 2  # the name's length
        if not 0 < n < longest:
            continue
        first = firsts[n]
        if not first or text[start + 2] not in first:
            continue
        name = text[start + 2 : start + 2 + n]
        value_at = start + 3 + n
        if n == 14:
            if not _is(name, "Content-Length", "content-length"):
                continue
            content_length = int(text[value_at:end])
        elif n == 10:
            if _is(name, "Connection", "connection"):
                value = text[value_at:end]
                if value != " keep-alive" and value != " close":  # (what most servers send)
                    value = value.strip(" \t").lower()
                    if value not in _COMMON_TOKENS and (
                        field_tokens(value.encode("latin-1")) - _COMMON_CONNECTION_TOKENS
                    ):
                        rebuild = True
            elif not _is(name, "Keep-Alive", "keep-alive"):
                continue
        elif n == 17:
            if not _is(name, "Transfer-Encoding", "transfer-encoding"):
                continue
            # The last field's last coding decides (llhttp refuses chunked before another).
            chunked = text[value_at:end].rstrip(" \t").lower().endswith("chunked")
        elif name.lower() not in _DROP_NAMES:
            continue
        if pieces is None:
            pieces = []
        if start > kept_from:
            pieces.append(raw[kept_from:start])
        kept_from = end
    if pieces is None:
        return raw, None, False
    if rebuild:
        return None, content_length, chunked
    if kept_from < size:
        pieces.append(raw[kept_from:])
    return b"".join(pieces), content_length, chunked


def _is(name: str, usual: str, lower: str) -> bool:
    """`name` is `lower` in any case: compared first as servers usually spell it (as RFC 9110
    does, or in lower case), which makes no string, unlike lower()."""
    return name in (usual, lower) or name.lower() == lower


def informational_to_client(head: ResponseHead) -> bytes:
    """A 1xx other than 101 (e.g. 100 Continue, 103 Early Hints), passed on as it came."""
    parts = [b"HTTP/1.1 %d %s\r\n" % (head.status, head.reason)]
    for name, value in head.headers:
        if name.lower() not in HOP_BY_HOP:
            parts.append(b"%s: %s\r\n" % (name, value))
    parts.append(b"\r\n")
    return b"".join(parts)


def encode_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK: Final = b"0\r\n\r\n"
