"""The server name (SNI) of a TLS ClientHello, sans-IO, and routing by it without terminating TLS.

A tcp listener with `routes: [{match: {sni: ...}, pool}]` reads the client's first bytes, finds
the name the client asked for (RFC 6066 §3, the server_name extension) and forwards everything,
those bytes included, to the pool of the first matching route.

`parse_client_hello(data)` looks at the bytes received so far and returns:

- `None`: a valid beginning of a ClientHello; call again with more bytes;
- a `ClientHello` whose `server_name` is the name (lowercase, no trailing dot) or None when the
  client sent no server_name extension;
- or raises `ClientHelloError` (not TLS at all, or a malformed or oversized hello).

A ClientHello may span several TLS records (RFC 8446 §5.1: "handshake messages MAY be
fragmented across several records"); they are joined. Invariant: at most `MAX_HELLO` bytes are
ever needed, so a caller's buffer stays bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_HELLO",
    "ClientHello",
    "ClientHelloError",
    "SniRoutes",
    "parse_client_hello",
    "sni_matches",
]

CONTENT_HANDSHAKE = 22
HANDSHAKE_CLIENT_HELLO = 1
EXT_SERVER_NAME = 0
NAME_TYPE_HOST = 0
# A ClientHello with a post-quantum key share is ~1.8 KiB; 64 KiB leaves room for big ones.
MAX_HELLO = 64 * 1024
_MAX_RECORD = 16384 + 2048  # RFC 8446 §5.1 (TLSPlaintext) plus RFC 5246's expansion allowance


class ClientHelloError(ValueError):
    """The bytes are not a TLS ClientHello lb can read; the message says why."""


@dataclass(frozen=True, slots=True)
class ClientHello:
    server_name: str | None


def parse_client_hello(data: bytes) -> ClientHello | None:
    if not data:
        return None
    if data[0] != CONTENT_HANDSHAKE:
        raise ClientHelloError(f"not a TLS handshake: the connection starts with {data[:8]!r}")
    message = bytearray()
    pos = 0
    while True:
        if len(data) < pos + 5:
            if len(data) > pos and data[pos] != CONTENT_HANDSHAKE:
                raise ClientHelloError("the ClientHello is interrupted by another record type")
            return None
        kind, major, size = data[pos], data[pos + 1], int.from_bytes(data[pos + 3 : pos + 5])
        if kind != CONTENT_HANDSHAKE:
            raise ClientHelloError("the ClientHello is interrupted by another record type")
        if major != 3:
            raise ClientHelloError(f"not TLS: record version {major}.{data[pos + 2]}")
        if size == 0 or size > _MAX_RECORD:
            raise ClientHelloError(f"TLS record of {size} bytes")
        end = pos + 5 + size
        if len(data) < end:
            # Enough of the first record to check the message type early, before waiting.
            if not message and len(data) > pos + 5 and data[pos + 5] != HANDSHAKE_CLIENT_HELLO:
                raise ClientHelloError(f"first handshake message is type {data[pos + 5]}")
            return None
        message += data[pos + 5 : end]
        pos = end
        if len(message) < 4:
            continue
        if message[0] != HANDSHAKE_CLIENT_HELLO:
            raise ClientHelloError(f"first handshake message is type {message[0]}, not 1")
        length = int.from_bytes(message[1:4])
        if length > MAX_HELLO:
            raise ClientHelloError(f"ClientHello of {length} bytes is too long")
        if len(message) >= 4 + length:
            return ClientHello(_server_name(bytes(message[4 : 4 + length])))


class _Reader:
    """Length-prefixed fields of a handshake body; ClientHelloError when one runs past the end."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise ClientHelloError("truncated ClientHello")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size))

    def vector(self, size: int) -> bytes:
        return self.take(self.number(size))

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def _server_name(body: bytes) -> str | None:
    # RFC 8446 §4.1.2: legacy_version, random, legacy_session_id<0..32>,
    # cipher_suites<2..2^16-2>, legacy_compression_methods<1..2^8-1>, extensions<8..2^16-1>.
    r = _Reader(body)
    r.take(2 + 32)
    r.vector(1)
    r.vector(2)
    r.vector(1)
    if r.left == 0:
        return None  # an SSLv3-style hello without extensions
    extensions = _Reader(r.vector(2))
    while extensions.left:
        kind = extensions.number(2)
        data = extensions.vector(2)
        if kind != EXT_SERVER_NAME:
            continue
        # RFC 6066 §3: ServerNameList<1..2^16-1> of {name_type, HostName<1..2^16-1>}.
        names = _Reader(_Reader(data).vector(2))
        while names.left:
            name_type = names.number(1)
            name = names.vector(2)
            if name_type == NAME_TYPE_HOST:
                try:
                    text = name.decode("ascii")
                except UnicodeDecodeError:
                    raise ClientHelloError("server_name is not ASCII") from None
                return text.lower().rstrip(".") or None
        return None
    return None


def sni_matches(pattern: str, name: str) -> bool:
    """`a.example.com` matches itself; `*.example.com` one or more labels before
    `.example.com` (as route `host` matching does). Case-insensitive."""
    pattern = pattern.lower()
    if pattern.startswith("*."):
        suffix = pattern[1:]
        return name.endswith(suffix) and len(name) > len(suffix)
    return name == pattern


class SniRoutes:
    """A tcp listener's routes by server name: first match wins, else the default pool."""

    __slots__ = ("default", "routes")

    def __init__(self, routes: Sequence[tuple[str, str]], default: str | None) -> None:
        self.routes = [(pattern.lower(), pool) for pattern, pool in routes]
        self.default = default

    def pool_for(self, server_name: str | None) -> str | None:
        if server_name is not None:
            for pattern, pool in self.routes:
                if sni_matches(pattern, server_name):
                    return pool
        return self.default

    def __repr__(self) -> str:
        return f"<SniRoutes {self.routes!r} default={self.default!r}>"
