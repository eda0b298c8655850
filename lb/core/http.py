"""HTTP/1.1 message heads as lb sees them, and the rules applied to them (sans-IO).

Theory of operation: a parser adapter (lb.protocols) turns bytes into a `RequestHead` or
`ResponseHead` and calls `check_request_framing` before any byte of the message may reach a
server. After that the framing is known to be unambiguous (RFC 9112 §6): exactly one of no
body, a single numeric Content-Length, or a final `chunked` coding. The proxy shell then asks
this module for the bytes to send on: hop-by-hop headers removed (RFC 9110 §7.6.1) and the
forwarding headers set (DESIGN.md, "On the wire").
"""

from __future__ import annotations

import os
import re
from itertools import count
from urllib.parse import unquote

from lb.core.errors import HTTPError, Reason

# RFC 9110 §7.6.1: "Connection" and the fields it lists are for this hop only, as are these
# legacy names a proxy must not forward. Content-Length and Transfer-Encoding are dropped too,
# because lb re-frames every body it forwards.
HOP_BY_HOP = frozenset(
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
FORWARDING = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-request-id"}
)
_DROP_TO_SERVER = HOP_BY_HOP | FORWARDING
_DROP_TO_CLIENT = HOP_BY_HOP | {b"x-request-id"}

# RFC 9110 §9.2.2: methods a proxy may retry on its own without changing what the user meant.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


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
        self.connection_tokens = _NO_TOKENS if connection is None else _tokens(connection)
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
            raw = self.index.get(b"host", b"")
            host = self._host = _strip_port(raw.decode("latin-1").lower())
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
        default. One bytes search over the joined names when there are none, the usual case."""
        if b"_" not in b"".join(self.index):
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
    index = {name.lower(): value for name, value in headers}
    repeated: list[bytes] | None = None
    if len(index) != len(headers):
        index = {}
        repeated = []
        for name, value in headers:
            lname = name.lower()
            prev = index.get(lname)
            if prev is None:
                index[lname] = value
            else:
                index[lname] = prev + (b"; " if lname == b"cookie" else b", ") + value
                repeated.append(lname)
    return index, repeated


class ResponseHead:
    """A parsed status line and header block. A parser that keeps the block as it arrived
    (httptools) gives `raw`, every field as b"\r\nName: value", and `forward`, those fields
    without the hop-by-hop ones (`scan_response_fields`): the head then goes on to the client
    without a Python step per field, and `headers` is built from `raw` only if asked for."""

    __slots__ = (
        "_headers",
        "chunked",
        "content_length",
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
    ) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self._headers = headers  # None: parsed from `raw` when first asked for
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.chunked = chunked
        self.raw = raw
        self.forward = forward

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = self._headers
        if headers is None:
            headers = self._headers = _fields_of(self.raw or b"")
        return headers

    def has_field(self, lname: bytes) -> bool:
        """Whether a field named `lname` (lower case) is present."""
        if self._headers is None and self.raw is not None:
            return b"\r\n" + lname + b":" in self.raw.lower()
        return any(name.lower() == lname for name, _ in self.headers)

    def set_field(self, name: bytes, value: bytes) -> None:
        """Replace every field called `name` (any case) with one: a filter rewriting the head.
        The head is then forwarded from `headers`, not from the raw block."""
        self.remove_field(name.lower())
        self.headers.append((name, value))

    def remove_field(self, lname: bytes) -> None:
        """Drop every field called `lname` (lower case)."""
        self._headers = [f for f in self.headers if f[0].lower() != lname]
        self.forward = None

    def __repr__(self) -> str:
        return f"<ResponseHead {self.status} cl={self.content_length} chunked={self.chunked}>"


def check_request_framing(head: RequestHead) -> None:
    """RFC 9112 §6.1-§6.3 and §3.2, applied strictly: anything a server behind lb could read
    differently from lb is refused (request smuggling). Raises HTTPError(bad_request)."""
    if head.version != "1.1" and head.version != "1.0":
        # HTTP/0.9 (llhttp's reading of a request line without a version), "HTTP/2.0" (an h2
        # preface sent in clear) and the like: lb would forward them as HTTP/1.1.
        raise HTTPError(Reason.bad_request, f"unsupported HTTP version {head.version}")
    repeated = head.repeated
    if repeated is not None:
        for name in (b"content-length", b"transfer-encoding", b"host"):
            if name in repeated:
                raise HTTPError(Reason.bad_request, f"more than one {name.decode()} header")
    index = head.index
    te = index.get(b"transfer-encoding")
    cl = index.get(b"content-length")
    if te is not None:
        if cl is not None:
            # §6.1: "a server MAY reject a request that contains both ... and ought to".
            raise HTTPError(Reason.bad_request, "both Content-Length and Transfer-Encoding")
        if head.version != "1.1":
            raise HTTPError(Reason.bad_request, "Transfer-Encoding in an HTTP/1.0 request")
        check_transfer_coding(te)
        head.chunked = True
    elif cl is not None:
        stripped = cl.strip(b" \t")
        if not stripped.isdigit() or len(stripped) > 18:
            raise HTTPError(Reason.bad_request, "invalid Content-Length")
        head.content_length = int(stripped)
    # §3.2: "A server MUST respond with a 400 ... to any HTTP/1.1 request message that lacks a
    # Host header field and to any request message that contains more than one" (above).
    if b"host" not in index and head.version == "1.1":
        raise HTTPError(Reason.bad_request, "missing Host header")
    target = head.target
    if target[:1] != b"/" and target != b"*":
        _absolute_form(head)


def check_transfer_coding(value: bytes) -> None:
    """A request's Transfer-Encoding must be exactly `chunked`, the one coding lb decodes.

    RFC 9112 §6.3: "If a Transfer-Encoding header field is present in a request and the
    chunked transfer coding is not the final encoding, ... the server MUST respond with the
    400 (Bad Request) status code and then close the connection" (so: chunked first, or
    twice). §6.1: "A server that receives a request message with a transfer coding it does
    not understand SHOULD respond with 501 (Not Implemented)": any other coding (gzip,
    identity, a parameter) gets 501, and the connection closes too, as its body cannot be
    framed. (Read strictly, §6.3 would make a lone `gzip` a 400; 501 names the cause, as
    nginx does.)"""
    codings = [c.strip(b" \t").lower() for c in value.split(b",")]
    codings = [c for c in codings if c]  # RFC 9110 §5.6.1.2: empty list elements are ignored
    if codings == [b"chunked"]:
        return
    if not codings:
        raise HTTPError(Reason.bad_request, "empty Transfer-Encoding")
    if b"chunked" in codings[:-1]:
        raise HTTPError(Reason.bad_request, "Transfer-Encoding with chunked not last, or twice")
    unknown = ", ".join(c.decode("latin-1") for c in codings if c != b"chunked")
    raise HTTPError(Reason.not_implemented, f"Transfer-Encoding {unknown} is not supported")


# RFC 9112 §3.2.2 absolute-form: an http(s) URI. The authority is host[:port] without
# userinfo (RFC 9110 §4.2.4: "treat its presence as an error").
_ABSOLUTE_FORM = re.compile(
    rb"(?i:https?)://((?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%!$&'()*+,;=-]+)(?::[0-9]*)?)([/?][^#]*)?"
)


def _absolute_form(head: RequestHead) -> None:
    """RFC 9112 §3.2.2: "When a proxy receives a request with an absolute-form of
    request-target, the proxy MUST ignore the received Host header field (if any) and instead
    replace it with the host information of the request-target. A proxy that forwards such a
    request MUST generate a new Host field value based on the received request-target rather
    than forward the received Host field value." So the target's authority becomes the Host
    that routes match and the server gets, and the target goes on in origin-form."""
    m = _ABSOLUTE_FORM.fullmatch(head.target)
    if m is None:
        raise HTTPError(Reason.bad_request, "request target is neither a path nor an http(s) URI")
    authority, rest = m.group(1), m.group(2) or b"/"
    head.target = rest if rest[:1] == b"/" else b"/" + rest  # "http://a?q" -> "/?q"
    head._path = None
    head._host = None
    headers = head.headers
    for i, (name, _) in enumerate(headers):
        if name.lower() == b"host":
            headers[i] = (name, authority)
            break
    else:
        headers.insert(0, (b"Host", authority))
    head.index[b"host"] = authority


_FORBIDDEN_IN_HEAD = (b"\0",)


def check_raw_head(raw: bytes) -> None:
    """For parsers more lenient than llhttp (h11): the head bytes, up to and including the
    blank line, must use CRLF only, have no obs-fold (RFC 9112 §5.2), and no NUL."""
    if raw.count(b"\n") != raw.count(b"\r\n") or raw.count(b"\r") != raw.count(b"\r\n"):
        raise HTTPError(Reason.bad_request, "bare CR or LF in request head")
    if b"\r\n " in raw or b"\r\n\t" in raw:
        raise HTTPError(Reason.bad_request, "obs-fold line folding in request head")
    for bad in _FORBIDDEN_IN_HEAD:
        if bad in raw:
            raise HTTPError(Reason.bad_request, "NUL byte in request head")
    for byte in raw:
        if byte < 0x20 and byte not in (0x09, 0x0A, 0x0D):
            raise HTTPError(Reason.bad_request, "control character in request head")


_id_prefix = os.urandom(4).hex()
_id_counter = count(1)


_id_format = b"%s-%%x" % _id_prefix.encode()


def new_request_id() -> bytes:
    """Unique per process without a syscall or uuid4 per request: random prefix + counter."""
    return _id_format % next(_id_counter)


def reseed_request_ids() -> None:
    """Called in each worker after fork, so siblings never share a prefix."""
    global _id_prefix, _id_counter, _id_format
    _id_prefix = os.urandom(4).hex()
    _id_counter = count(1)
    _id_format = b"%s-%%x" % _id_prefix.encode()


_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,200}")


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
    fields = b"".join([b"%s: %s\r\n" % f for f in head.headers if f[0].lower() not in drop])
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


_COMMON_CONNECTION_TOKENS = frozenset({b"keep-alive", b"close", b"upgrade"})


def response_to_client(
    head: ResponseHead,
    request_id: bytes,
    *,
    chunked: bool,
    close: bool,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> bytes:
    """The response head as lb sends it to the client. `chunked` re-frames a body whose end
    the client could not otherwise find (close-delimited or chunked upstream)."""
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
        framing = b"content-length: %d\r\n" % head.content_length
    else:
        framing = b""
    tail = b"".join([b"%s: %s\r\n" % field for field in extra]) if extra else b""
    if close and status != 101:
        tail += b"connection: close\r\n"
    # One format for the whole head: this runs once per response on the hot path.
    return b"HTTP/1.1 %d %s%s\r\n%sx-request-id: %s\r\n%s\r\n" % (
        status,
        head.reason,
        forward,
        framing,
        request_id,
        tail,
    )


def _forwarded_to_client(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The fields of a response head that go on to the client, each as b"\r\nName: value"."""
    drop = _DROP_TO_CLIENT
    # Found first: Connection may come after the fields it names (RFC 9110 §7.6.1). The
    # length test spares a lower() per field.
    for name, value in headers:
        if len(name) == 10 and name.lower() == b"connection":
            tokens = _tokens(value) - _COMMON_CONNECTION_TOKENS
            if tokens:
                drop = drop | tokens
    return b"".join([b"\r\n%s: %s" % field for field in headers if field[0].lower() not in drop])


# Every field `_DROP_TO_CLIENT` names, with its value, in a raw field block: one regex pass
# finds them all (case-insensitive, as field names are: RFC 9110 §5.1).
_DROPPED_TO_CLIENT = re.compile(
    rb"\r\n("
    + b"|".join(re.escape(n) for n in sorted(_DROP_TO_CLIENT, key=len, reverse=True))
    + rb"):[ \t]*([^\r]*)",
    re.IGNORECASE,
)


def scan_response_fields(raw: bytes) -> tuple[bytes | None, int | None, bool]:
    """For a parser that keeps a response's field block as it arrived (`raw`, every field as
    b"\r\nName: value") and has validated it (CRLF line ends, no obs-fold, no space before a
    colon, one Content-Length: llhttp's strict mode): the fields to forward to the client as
    they are, or None when Connection names further fields to drop (`response_to_client`
    then filters `headers`); the Content-Length; whether the body is chunked."""
    parts = _DROPPED_TO_CLIENT.split(raw)  # [kept, name, value, kept, name, value, ..., kept]
    if len(parts) == 1:
        return raw, None, False
    forward: bytes | None = b"".join(parts[::3])
    content_length = None
    chunked = False
    # Only names `_DROPPED_TO_CLIENT` lists come here: the length tells most of them apart.
    for name, value in zip(parts[1::3], parts[2::3], strict=True):
        n = len(name)
        if n == 14:  # content-length
            content_length = int(value)
        elif n == 17:  # transfer-encoding
            chunked = value.rstrip(b" \t").lower().endswith(b"chunked")
        elif (
            n == 10
            and value.lower() not in _COMMON_CONNECTION_TOKENS
            and name.lower() == b"connection"
            and _tokens(value) - _COMMON_CONNECTION_TOKENS
        ):
            forward = None
    return forward, content_length, chunked


def _fields_of(raw: bytes) -> list[tuple[bytes, bytes]]:
    """A raw field block (every field as b"\r\nName: value") as (name, value) pairs."""
    fields = []
    for line in raw.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        fields.append((name, value.strip(b" \t")))
    return fields


def informational_to_client(head: ResponseHead) -> bytes:
    """A 1xx other than 101 (e.g. 100 Continue, 103 Early Hints), passed on as it came."""
    parts = [b"HTTP/1.1 %d %s\r\n" % (head.status, head.reason)]
    for name, value in head.headers:
        if name.lower() not in HOP_BY_HOP:
            parts.append(b"%s: %s\r\n" % (name, value))
    parts.append(b"\r\n")
    return b"".join(parts)


def response_has_body(method: str, status: int) -> bool:
    """RFC 9112 §6.3: no body after HEAD, 1xx, 204 and 304 whatever the headers say."""
    return not (method == "HEAD" or status < 200 or status in (204, 304))


def encode_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


_NO_TOKENS: frozenset[bytes] = frozenset()


def _tokens(value: bytes | None) -> frozenset[bytes]:
    if not value:
        return frozenset()
    return frozenset(t.strip().lower() for t in value.split(b",") if t.strip())


def _strip_port(host: str) -> str:
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end != -1 else host
    name, _, port = host.rpartition(":")
    return name if name and port.isdigit() else host


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
