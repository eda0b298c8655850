"""HTTP/1.1 message heads as lb sees them (sans-IO): `RequestHead` and `ResponseHead`.

Theory of operation: a parser adapter (lb.protocols) turns bytes into a `RequestHead` or
`ResponseHead` and calls `lb.core.framing.check_request_framing` before any byte of the message
may reach a server. After that the framing is known to be unambiguous (RFC 9112 §6): exactly
one of no body, a single numeric Content-Length, or a final `chunked` coding. The proxy shell
then asks `lb.core.forwarding` for the bytes to send on. Here: the heads, what routes match on
(host, path, cookies), and the names that are for one hop only.
"""

from __future__ import annotations

from typing import Final, Protocol, TypeVar
from urllib.parse import unquote

# RFC 9110 §7.6.1: "Connection" and the fields it lists are for this hop only, as are these
# legacy names a proxy must not forward. Content-Length and Transfer-Encoding are dropped too,
# because lb re-frames every body it forwards.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    }
)
# Set by lb itself; whatever the client sent under these names is replaced (XFF is appended to).
FORWARDING: Final = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-request-id"}
)

# What a header name or a Host field becomes, by the bytes received: clients send the same few
# names and hosts again and again, so most are found here rather than lower-cased (a method
# call, once compiled), decoded and cut at the port each time; and a name found here is one
# object whose hash is kept, for the index and every lookup in it. Bounded: cleared when full
# (a client inventing names costs a lower() each, as before), and long values are not kept.
_NAMES: Final[dict[bytes, bytes]] = {}
_HOSTS: Final[dict[bytes, str]] = {}
_MAX_MEMO: Final = 512
_K = TypeVar("_K")
_V = TypeVar("_V")
_MAX_MEMO_NAME: Final = 64
_MAX_MEMO_HOST: Final = 270  # a DNS name (253), a port, brackets


def lower_name(name: bytes) -> bytes:
    """A header name, lower case. A name with an underscore is never kept: RequestHead's
    `underscored` takes a name found here for one without."""
    lname = _NAMES.get(name)
    if lname is None:
        lname = name.lower()
        if b"_" not in name:
            remember(_NAMES, name, lname, _MAX_MEMO_NAME)
    return lname


def host_of(raw: bytes) -> str:
    """A Host field's name, lower case and without the port, as routes match it."""
    host = _HOSTS.get(raw)
    if host is None:
        host = remember(_HOSTS, raw, _strip_port(raw.decode("latin-1").lower()), _MAX_MEMO_HOST)
    return host


def remember(memo: dict[bytes, _V], key: bytes, value: _V, longest: int) -> _V:
    """`value`, kept under `key` unless the key is longer than `longest` (a bounded memo for
    values worked out from bytes a client sent)."""
    return keep(memo, key, value) if len(key) <= longest else value


def keep(memo: dict[_K, _V], key: _K, value: _V) -> _V:
    """`value`, kept under `key`; the memo starts again when full (at _MAX_MEMO keys), rather
    than pay for an LRU on every lookup."""
    if len(memo) >= _MAX_MEMO:
        memo.clear()
    memo[key] = value
    return value


# RFC 9110 §9.2.2: methods a proxy may retry on its own without changing what the user meant.
IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


class RequestHead:
    """A parsed request line and header block. `headers` keeps names as received (case and
    order) for forwarding; `index` maps lower-cased names to values for matching, repeated
    fields joined as RFC 9110 §5.3 allows (Cookie with "; ", RFC 6265 §5.4). `host` and `path`
    are worked out when first asked for: a route that matches on neither never pays for them."""

    __slots__ = (
        "_host",
        "_path",
        "chunked",
        "connection_tokens",
        "content_length",
        "headers",
        "index",
        "keep_alive",
        "method",
        "repeated",
        "target",
        "version",
    )

    def __init__(
        self, method: str, target: bytes, version: str, headers: list[tuple[bytes, bytes]]
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        index, repeated = _index(headers)
        self.index = index
        self.repeated = repeated  # names seen more than once, for check_request_framing
        connection = index.get(b"connection")
        self.connection_tokens = _NO_TOKENS if connection is None else field_tokens(connection)
        if version == "1.1":
            self.keep_alive = b"close" not in self.connection_tokens
        else:
            self.keep_alive = b"keep-alive" in self.connection_tokens
        self._host: str | None = None
        self._path: str | None = None
        self.content_length: int | None = None
        self.chunked = False

    @property
    def host(self) -> str:
        """The Host header's name, lower case and without the port, as routes match it."""
        host = self._host
        if host is None:
            host = self._host = host_of(self.index.get(b"host", b""))
        return host

    @property
    def path(self) -> str:
        """The target's path, as routes match it (see `_path_of`)."""
        path = self._path
        if path is None:
            path = self._path = _path_of(self.target)
        return path

    @property
    def upgrade(self) -> bytes | None:
        """The protocol asked for (e.g. b"websocket") when this is an Upgrade request."""
        if b"upgrade" in self.connection_tokens:
            return self.index.get(b"upgrade")
        return None

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def underscored(self) -> list[bytes]:
        """Names of fields with an underscore (`Transfer_Encoding`), which some servers read
        as their dashed twin (CGI maps both to HTTP_TRANSFER_ENCODING): nginx ignores them by
        default. A name the header-name memo holds has none (see `lower_name`), and usually
        all of them are there: a lookup each, whose hash the index's build already took."""
        names = _NAMES
        if all(name in names for name, _ in self.headers):
            return []
        return [name for name, _ in self.headers if b"_" in name]

    def drop_fields(self, names: list[bytes]) -> None:
        """Remove the fields called `names` (as received) before anything reads the head."""
        drop = set(names)
        self.headers = [f for f in self.headers if f[0] not in drop]
        self.index, self.repeated = _index(self.headers)

    def cookie(self, name: str) -> str | None:
        raw = self.index.get(b"cookie")
        if raw is None:
            return None
        for part in raw.decode("latin-1").split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                return value
        return None

    def __repr__(self) -> str:
        return f"<RequestHead {self.method} {self.target!r} HTTP/{self.version} host={self.host!r}>"


def _index(headers: list[tuple[bytes, bytes]]) -> tuple[dict[bytes, bytes], list[bytes] | None]:
    """Lower-cased name -> value, repeated fields joined; and the names seen more than once."""
    # The common case, no field repeated, in one comprehension; the loop only otherwise.
    index = {lower_name(name): value for name, value in headers}
    repeated: list[bytes] | None = None
    if len(index) != len(headers):
        index = {}
        repeated = []
        for name, value in headers:
            lname = lower_name(name)
            prev = index.get(lname)
            if prev is None:
                index[lname] = value
            else:
                index[lname] = prev + (b"; " if lname == b"cookie" else b", ") + value
                repeated.append(lname)
    return index, repeated


class FieldsByName(Protocol):
    """A head's field values by lower-case name, in the order they came: a dict
    (`fields_by_name`), or a raw block's `RawFields`."""

    def get(self, lname: bytes, /) -> list[bytes] | None: ...
    def __contains__(self, lname: object, /) -> bool: ...
    def __getitem__(self, lname: bytes, /) -> list[bytes]: ...


class ResponseHead:
    """A parsed status line and header block. A parser that keeps the block as it arrived
    (httptools) gives `raw`, every field as b"\r\nName: value", and `forward`, those fields
    without the hop-by-hop ones (`scan_response_fields`): the head then goes on to the client
    without a Python step per field, and `headers` is built from `raw` only if asked for."""

    __slots__ = (
        "_by_name",
        "_headers",
        "chunked",
        "content_length",
        "dated",
        "forward",
        "keep_alive",
        "raw",
        "reason",
        "status",
        "version",
    )

    def __init__(
        self,
        status: int,
        reason: bytes,
        version: str,
        headers: list[tuple[bytes, bytes]] | None,
        keep_alive: bool,
        content_length: int | None,
        chunked: bool,
        raw: bytes | None = None,
        forward: bytes | None = None,
        dated: bool = False,
    ) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self._headers = headers  # None: parsed from `raw` when first asked for
        self._by_name: FieldsByName | None = None
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.chunked = chunked
        self.raw = raw
        self.forward = forward
        # Known to hold a Date field (the parser or the cache saw it): the head goes on
        # without searching for one. False: not known, searched (forwarding.response_to_client).
        self.dated = dated

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = self._headers
        if headers is None:
            headers = self._headers = _fields_of(self.raw or b"")
        return headers

    @property
    def by_name(self) -> FieldsByName:
        """The fields' values by lower-case name, in the order they came: what the cache's
        rules read (several times for one response), made once. A raw block never split is
        searched by name instead (`RawFields`): it then stays forwardable as it came."""
        by_name = self._by_name
        if by_name is None:
            headers = self._headers
            by_name = RawFields(self.raw or b"") if headers is None else fields_by_name(headers)
            self._by_name = by_name
        return by_name

    def has_field(self, lname: bytes) -> bool:
        """Whether a field named `lname` (lower case) is present."""
        return lname in self.by_name

    def set_field(self, name: bytes, value: bytes) -> None:
        """Replace every field called `name` (any case) with one: a filter rewriting the head.
        The head is then forwarded from `headers`, not from the raw block."""
        self.remove_field(name.lower())
        self.headers.append((name, value))
        self._by_name = None

    def remove_field(self, lname: bytes) -> None:
        """Drop every field called `lname` (lower case)."""
        self._headers = [f for f in self.headers if f[0].lower() != lname]
        self._by_name = None
        self.forward = None
        self.dated = False

    def remove_fields(self, lnames: frozenset[bytes]) -> None:
        """Drop every field whose lower-case name is in `lnames`, in one pass over the fields.
        Usually none is there, which `by_name` tells first: a raw block that was never split
        then stays forwardable as it came."""
        by_name = self._by_name
        if by_name is None and self._headers is None and self.raw is not None:
            by_name = self.by_name  # (searched by name, not split)
        if by_name is not None:
            for lname in lnames:
                if lname in by_name:
                    break
            else:
                return
        headers = self.headers
        kept = [f for f in headers if f[0].lower() not in lnames]
        if len(kept) != len(headers):
            self._headers = kept
            self._by_name = None
            self.forward = None
            self.dated = False

    def __repr__(self) -> str:
        return f"<ResponseHead {self.status} cl={self.content_length} chunked={self.chunked}>"


def _fields_of(raw: bytes) -> list[tuple[bytes, bytes]]:
    """A raw field block (every field as b"\r\nName: value") as (name, value) pairs."""
    fields = []
    for line in raw.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        fields.append((name, value.strip(b" \t")))
    return fields


class RawFields:
    """A raw field block's values by lower-case name (`FieldsByName`), each found when asked
    for: the cache's rules read a few names of a response, and a search for each in the block
    (lower-cased once) costs a fraction of splitting every field into a dict."""

    __slots__ = ("_low", "_raw")

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._low = raw.decode("latin-1").lower()  # (str: searched by direct calls)

    def get(self, lname: bytes, /) -> list[bytes] | None:
        needle = _FIELD_STARTS.get(lname)
        if needle is None:
            needle = remember(_FIELD_STARTS, lname, f"\r\n{lname.decode('latin-1')}:", 64)
        low = self._low
        at = low.find(needle)
        if at < 0:
            return None
        values: list[bytes] = []
        while at >= 0:
            start = at + len(needle)
            end = low.find("\r\n", start)
            if end < 0:
                end = len(low)
            values.append(self._raw[start:end].strip(b" \t"))
            at = low.find(needle, end)
        return values

    def __contains__(self, lname: object, /) -> bool:
        return isinstance(lname, bytes) and self.get(lname) is not None

    def __getitem__(self, lname: bytes, /) -> list[bytes]:
        values = self.get(lname)
        if values is None:
            raise KeyError(lname)
        return values


# What RawFields searches for, by name: b"etag" -> "\r\netag:".
_FIELD_STARTS: Final[dict[bytes, str]] = {}


def fields_by_name(headers: list[tuple[bytes, bytes]]) -> dict[bytes, list[bytes]]:
    """A head's field values by lower-case name, in the order they came."""
    fields: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        lname = lower_name(name)
        values = fields.get(lname)
        if values is None:
            fields[lname] = [value]
        else:
            values.append(value)
    return fields


def response_has_body(method: str, status: int) -> bool:
    """RFC 9112 §6.3: no body after HEAD, 1xx, 204 and 304 whatever the headers say."""
    return not (method == "HEAD" or status < 200 or status in (204, 304))


_NO_TOKENS: Final[frozenset[bytes]] = frozenset()


# The Connection values clients send on most requests, as they write them, already split: a
# new connection per request (`Connection: close`) would otherwise split and lower each one.
_COMMON_VALUES: Final[dict[bytes, frozenset[bytes]]] = {
    spelled: frozenset({spelled.lower()})
    for spelled in (b"close", b"Close", b"keep-alive", b"Keep-Alive", b"upgrade", b"Upgrade")
}


def field_tokens(value: bytes | None) -> frozenset[bytes]:
    if not value:
        return frozenset()
    common = _COMMON_VALUES.get(value)
    if common is not None:
        return common
    return frozenset(t.strip().lower() for t in value.split(b",") if t.strip())


def _strip_port(host: str) -> str:
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    colon = host.rfind(":")  # (no rpartition: its tuple and three strings cost twice this)
    return host[:colon] if colon > 0 and host[colon + 1 :].isdigit() else host


def _path_of(target: bytes) -> str:
    """The path matched by routes: without query, percent-decoded. An absolute-form target
    (RFC 9112 §3.2.2) is reduced to its path."""
    t = target.decode("latin-1")
    if t[:1] == "/" and "?" not in t and "%" not in t:
        return t  # origin-form with nothing to strip: most requests
    if t.startswith(("http://", "https://")):
        slash = t.find("/", t.find("//") + 2)
        t = t[slash:] if slash != -1 else "/"
    q = t.find("?")
    if q != -1:
        t = t[:q]
    return unquote(t) if "%" in t else t
