"""lb.core.http as tables: heads, framing checks, the bytes sent on each way."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lb.core.errors import HTTPError, Reason, closes_connection, error_response
from lb.core.forwarding import (
    encode_chunk,
    informational_to_client,
    new_request_id,
    request_to_server,
    response_to_client,
    scan_response_fields,
    valid_request_id,
)
from lb.core.framing import check_raw_head, check_request_framing
from lb.core.http import RequestHead, ResponseHead, response_has_body


def req(*headers: tuple[bytes, bytes], version: str = "1.1", target: bytes = b"/") -> RequestHead:
    return RequestHead("GET", target, version, list(headers))


HOST = (b"Host", b"x")


@pytest.mark.parametrize(
    ("target", "path"),
    [
        (b"/", "/"),
        (b"/a/b?c=d", "/a/b"),
        (b"/a%20b", "/a b"),
        (b"http://h.test/p?q", "/p"),
        (b"https://h.test", "/"),
        (b"*", "*"),
    ],
)
def test_path(target: bytes, path: str) -> None:
    assert req(HOST, target=target).path == path


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (b"Example.COM", "example.com"),
        (b"example.com:8080", "example.com"),
        (b"[::1]:8080", "[::1]"),
        (b"[::1]", "[::1]"),
        (b"", ""),
    ],
)
def test_host(host: bytes, expected: str) -> None:
    assert req((b"Host", host)).host == expected
    assert req((b"Host", host)).host == expected  # again: remembered as the same


def test_names_and_hosts_remembered_within_bounds() -> None:
    """Names and hosts are remembered by the bytes received, for a bounded number of them: a
    client inventing thousands of either gets right answers and grows no table past it."""
    from lb.core import http

    for i in range(2000):
        head = req((b"Host", b"H%d.Test:80" % i), (b"X-Name-%d" % i, b"v"))
        assert head.host == f"h{i}.test"
        assert head.index[b"x-name-%d" % i] == b"v"
    assert 0 < len(http._NAMES) <= http._MAX_MEMO
    assert 0 < len(http._HOSTS) <= http._MAX_MEMO
    long_host = b"A" * 300 + b".test"
    assert req((b"Host", long_host)).host == "a" * 300 + ".test"
    assert long_host not in http._HOSTS


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        ("1.1", None, True),
        ("1.1", b"close", False),
        ("1.1", b"Keep-Alive, Close", False),
        ("1.0", None, False),
        ("1.0", b"keep-alive", True),
        ("1.0", b"Keep-Alive", True),
    ],
)
def test_keep_alive(version: str, connection: bytes | None, keep_alive: bool) -> None:
    headers = [HOST] + ([(b"Connection", connection)] if connection else [])
    assert req(*headers, version=version).keep_alive is keep_alive


def test_upgrade_needs_connection_upgrade() -> None:
    assert req(HOST, (b"Upgrade", b"websocket")).upgrade is None
    h = req(HOST, (b"Connection", b"keep-alive, Upgrade"), (b"Upgrade", b"websocket"))
    assert h.upgrade == b"websocket"


@pytest.mark.parametrize(
    ("cookie", "name", "value"),
    [
        (b"a=1; b=2", "b", "2"),
        (b"a=1;b=2", "b", "2"),
        (b"a=1", "b", None),
        (b"ab=1", "a", None),
        (b"a=x=y", "a", "x=y"),
        (b"a=", "a", ""),
    ],
)
def test_cookie(cookie: bytes, name: str, value: str | None) -> None:
    assert req(HOST, (b"Cookie", cookie)).cookie(name) == value


FRAMING_OK = [
    ([HOST], None, False),
    ([HOST, (b"Content-Length", b"0")], 0, False),
    ([HOST, (b"content-length", b" 42 ")], 42, False),
    ([HOST, (b"Transfer-Encoding", b"chunked")], None, True),
    ([HOST, (b"Transfer-Encoding", b"Chunked ")], None, True),
]


@pytest.mark.parametrize(("headers", "length", "chunked"), FRAMING_OK)
def test_framing_accepted(headers: list, length: int | None, chunked: bool) -> None:
    h = req(*headers)
    check_request_framing(h)
    assert (h.content_length, h.chunked) == (length, chunked)
    assert h.has_body is (chunked or bool(length))


FRAMING_BAD = [
    ([HOST, (b"Content-Length", b"1"), (b"Transfer-Encoding", b"chunked")], "both"),
    ([HOST, (b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"1")], "both"),
    ([HOST, (b"Content-Length", b"1"), (b"Content-Length", b"1")], "content-length"),
    ([HOST, (b"Content-Length", b"1, 1")], "invalid"),
    ([HOST, (b"Content-Length", b"")], "invalid"),
    ([HOST, (b"Content-Length", b"-1")], "invalid"),
    ([HOST, (b"Content-Length", b"+1")], "invalid"),
    ([HOST, (b"Content-Length", b"1" * 19)], "invalid"),
    ([HOST, (b"Transfer-Encoding", b"chunked, gzip")], "chunked not last"),
    ([HOST, (b"Transfer-Encoding", b"chunked, chunked")], "chunked not last"),
    ([HOST, (b"Transfer-Encoding", b" , ")], "empty"),
    (
        [HOST, (b"Transfer-Encoding", b"chunked"), (b"Transfer-Encoding", b"chunked")],
        "transfer-encoding",
    ),
    ([], "missing host"),
    ([HOST, HOST], "more than one host"),
]


@pytest.mark.parametrize(("headers", "detail"), FRAMING_BAD)
def test_framing_refused(headers: list, detail: str) -> None:
    with pytest.raises(HTTPError) as info:
        check_request_framing(req(*headers))
    assert info.value.reason is Reason.bad_request
    assert detail.lower() in info.value.detail.lower()


@pytest.mark.parametrize(
    "coding", [b"gzip", b"identity", b"gzip, chunked", b"chunked;ext=1", b"xchunked"]
)
def test_unknown_transfer_coding_is_not_implemented(coding: bytes) -> None:
    """RFC 9112 §6.1: 501 for a coding lb does not decode (and the connection closes)."""
    with pytest.raises(HTTPError) as info:
        check_request_framing(req(HOST, (b"Transfer-Encoding", coding)))
    assert info.value.reason is Reason.not_implemented
    assert closes_connection(Reason.not_implemented)


ABSOLUTE_FORM = [
    # target, Host sent -> target forwarded, Host forwarded, host routed on
    (b"http://a.example/p?q", b"b.example", b"/p?q", b"a.example", "a.example"),
    (b"https://A.Example:8443", b"b", b"/", b"A.Example:8443", "a.example"),
    (b"http://a.example?q=1", b"b", b"/?q=1", b"a.example", "a.example"),
    (b"http://[::1]:81/x", b"b", b"/x", b"[::1]:81", "[::1]"),
]


@pytest.mark.parametrize(("target", "sent", "forwarded", "host", "routed"), ABSOLUTE_FORM)
def test_absolute_form_authority_replaces_host(
    target: bytes, sent: bytes, forwarded: bytes, host: bytes, routed: str
) -> None:
    h = req((b"Host", sent), target=target)
    check_request_framing(h)
    assert (h.target, h.index[b"host"], h.host) == (forwarded, host, routed)
    out = request_to_server(h, "1.2.3.4", b"http", b"id", False)
    assert out.startswith(b"GET %s HTTP/1.1\r\nHost: %s\r\n" % (forwarded, host))
    assert out.count(b"Host:") == 1 and b"x-forwarded-host: %s\r\n" % host in out


@pytest.mark.parametrize(
    "target", [b"http://u@a/", b"ftp://a/", b"http:///p", b"a.example/p", b"http://a b/"]
)
def test_target_neither_origin_nor_absolute_form_refused(target: bytes) -> None:
    with pytest.raises(HTTPError) as info:
        check_request_framing(req(HOST, target=target))
    assert info.value.reason is Reason.bad_request


def test_request_without_host_gets_the_default_host() -> None:
    h = req(version="1.0")
    check_request_framing(h)
    assert h.host == ""
    out = request_to_server(h, "1.2.3.4", b"http", b"id", False, default_host=b"10.0.0.1:80")
    assert b"host: 10.0.0.1:80\r\n" in out and b"x-forwarded-host" not in out
    out = request_to_server(req(HOST), "1.2.3.4", b"http", b"id", False, default_host=b"z:1")
    assert b"z:1" not in out


def test_underscored_fields_found_and_dropped() -> None:
    h = req(HOST, (b"X-A", b"1"), (b"X-B", b"2"))
    assert h.underscored() == []
    underscored = [(b"Transfer_Encoding", b"chunked"), (b"X_A", b"1"), (b"x_a", b"2")]
    h = req(HOST, *underscored, (b"X-B", b"3"))
    assert h.underscored() == [b"Transfer_Encoding", b"X_A", b"x_a"]
    h.drop_fields(h.underscored())
    assert h.headers == [HOST, (b"X-B", b"3")]
    assert set(h.index) == {b"host", b"x-b"} and h.repeated is None


def test_underscored_fields_found_however_often_names_were_seen() -> None:
    """The check trusts the header-name memo (names kept there have no underscore): a name
    with one is found on every request, forwarded under `pass` or not, and after the memo
    fills and starts again, as are clean names then."""
    for flood in range(3):
        for _ in range(3):
            h = req(HOST, (b"X_Seen", b"1"), (b"X-Clean", b"2"))
            assert h.underscored() == [b"X_Seen"]
            request_to_server(h, "1.2.3.4", b"http", b"id", False)  # lower_name on each
            assert req(HOST, (b"X-Clean", b"2")).underscored() == []
        for i in range(600 * flood):  # a flood of distinct names: the memo starts again
            req((b"X-Flood-%d" % i, b"1"))


def test_framing_http10() -> None:
    check_request_framing(req(version="1.0"))  # Host is optional in 1.0
    with pytest.raises(HTTPError):
        check_request_framing(req(HOST, (b"Transfer-Encoding", b"chunked"), version="1.0"))


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\rY: z\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\ty\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\x00\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\x7f\x01\r\n\r\n",
    ],
)
def test_raw_head_refused(raw: bytes) -> None:
    with pytest.raises(HTTPError):
        check_raw_head(raw)


def test_raw_head_accepted() -> None:
    check_raw_head(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\tc\r\n\r\n")


def headers_of(data: bytes) -> list[tuple[bytes, bytes]]:
    lines = data.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]
    return [(n.lower(), v.strip()) for n, _, v in (line.partition(b":") for line in lines)]


IMF_FIXDATE = re.compile(
    rb"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT"
)


def without_date(fields: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The fields but the one Date lb adds to a response that came without (RFC 9110 §6.6.1)."""
    dates = [v for n, v in fields if n == b"date"]
    assert len(dates) == 1 and IMF_FIXDATE.fullmatch(dates[0]), fields
    return [f for f in fields if f[0] != b"date"]


def test_request_to_server_forwarding_and_hop_by_hop() -> None:
    h = req(
        (b"Host", b"Site.test:81"),
        (b"X-Forwarded-For", b"10.0.0.1"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Host", b"evil"),
        (b"X-Request-ID", b"client-id"),
        (b"Connection", b"keep-alive, X-Hop"),
        (b"X-Hop", b"1"),
        (b"Keep-Alive", b"300"),
        (b"TE", b"trailers"),
        (b"Proxy-Connection", b"keep-alive"),
        (b"Content-Length", b"3"),
        (b"X-End", b"kept"),
        target=b"/p?q=1",
    )
    check_request_framing(h)
    data = request_to_server(h, "192.0.2.1", b"http", b"rid", False)
    assert data.startswith(b"GET /p?q=1 HTTP/1.1\r\n")
    assert data.endswith(b"\r\n\r\n")
    assert headers_of(data) == [
        (b"host", b"Site.test:81"),
        (b"x-end", b"kept"),
        (b"x-forwarded-for", b"10.0.0.1, 192.0.2.1"),
        (b"x-forwarded-proto", b"http"),
        (b"x-forwarded-host", b"Site.test:81"),
        (b"x-request-id", b"rid"),
        (b"content-length", b"3"),
    ]


def test_request_to_server_chunked_and_upgrade() -> None:
    h = req(HOST, (b"Transfer-Encoding", b"chunked"))
    check_request_framing(h)
    assert (b"transfer-encoding", b"chunked") in headers_of(
        request_to_server(h, "1.2.3.4", b"http", b"r", False)
    )
    h = req(HOST, (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket"))
    got = headers_of(request_to_server(h, "1.2.3.4", b"https", b"r", True))
    assert (b"connection", b"upgrade") in got and (b"upgrade", b"websocket") in got
    assert (b"x-forwarded-proto", b"https") in got
    # Without the upgrade flag, an Upgrade header is dropped like any hop-by-hop field.
    got = headers_of(request_to_server(h, "1.2.3.4", b"http", b"r", False))
    assert not [n for n, _ in got if n in (b"upgrade", b"connection")]


def resp(*headers: tuple[bytes, bytes], status: int = 200, cl: int | None = None) -> ResponseHead:
    return ResponseHead(status, b"OK", "1.1", list(headers), True, cl, False)


def raw_resp(*headers: tuple[bytes, bytes], status: int = 200) -> ResponseHead:
    """The same head as a parser that keeps the field block as received (httptools) gives it."""
    raw = b"".join(b"\r\n%s: %s" % field for field in headers)
    forward, cl, chunked = scan_response_fields(raw)
    return ResponseHead(status, b"OK", "1.1", None, True, cl, chunked, raw, forward)


HOP_BY_HOP_RESPONSES = [
    [(b"Server", b"s"), (b"Content-Length", b"13"), (b"Connection", b"keep-alive")],
    [(b"X-Hop", b"1"), (b"Connection", b"X-Hop, keep-alive"), (b"Keep-Alive", b"timeout=5")],
    [(b"connection", b"close"), (b"TE", b"x"), (b"Teapot", b"1"), (b"Trailer", b"X-T")],
    [(b"Transfer-Encoding", b"chunked"), (b"X-Request-ID", b"server-id"), (b"Upgrade", b"h2c")],
    [(b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2"), (b"Proxy-Connection", b"keep-alive")],
    [(b"X-Connection", b"1"), (b"Content-Lengthy", b"2"), (b"CONTENT-LENGTH", b"0")],
    [],
]


@pytest.mark.parametrize("headers", HOP_BY_HOP_RESPONSES)
@pytest.mark.parametrize("chunked", [False, True])
def test_raw_response_head_forwarded_as_rebuilt(headers: list, chunked: bool) -> None:
    """A raw field block is forwarded exactly as the field list would be rebuilt."""
    raw = raw_resp(*headers)
    listed = resp(*headers, cl=raw.content_length)
    assert raw.headers == headers
    got = response_to_client(raw, b"rid", chunked=chunked, close=True)
    assert got == response_to_client(listed, b"rid", chunked=chunked, close=True)


@pytest.mark.parametrize(
    ("raw", "framing"),
    [
        (b"\r\nContent-Length: 13 ", (13, False)),
        (b"\r\ntransfer-encoding:gzip, chunked", (None, True)),
        (b"\r\nTransfer-Encoding: gzip", (None, False)),
        (b"\r\nX-Content-Length: 5\r\nX: transfer-encoding: chunked", (None, False)),
    ],
)
def test_scan_response_fields_framing(raw: bytes, framing: tuple) -> None:
    assert scan_response_fields(raw)[1:] == framing


# Names a server sends, the listed hop-by-hop ones among them, and names that only begin or end
# like one; any of them in any case.
_NAMES = [
    b"Server",
    b"Date",
    b"Content-Type",
    b"Set-Cookie",
    b"X-Hop",
    b"Teapot",
    b"X-Connection",
    b"Content-Lengthy",
    b"Connection",
    b"Keep-Alive",
    b"Proxy-Connection",
    b"TE",
    b"Trailer",
    b"Transfer-Encoding",
    b"Upgrade",
    b"X-Request-ID",
]


def _in_any_case(name: bytes) -> st.SearchStrategy[bytes]:
    flips = st.lists(st.booleans(), min_size=len(name), max_size=len(name))
    return flips.map(
        lambda upper: "".join(
            c.upper() if u else c.lower() for c, u in zip(name.decode(), upper, strict=True)
        ).encode()
    )


_field = st.tuples(
    st.sampled_from(_NAMES).flatmap(_in_any_case),
    st.sampled_from(
        [
            b"",
            b"1",
            b" x ",
            b"keep-alive",
            b"close",
            b"X-Hop, keep-alive",
            b"chunked",
            b"gzip, chunked",
            b"chunked\t",
            b"a=b; c",
            b"\xe9t\xe9",
            b"content-length: 1",
        ]
    ),
)


@given(
    st.lists(_field, max_size=8),
    st.none() | st.integers(0, 10**12),
    st.integers(0, 8),
)
def test_scan_response_fields_as_the_field_list_says(
    fields: list[tuple[bytes, bytes]], length: int | None, at: int
) -> None:
    """The scan of a raw block gives what the same fields, listed, say: the fields to forward
    (None when Connection names others), the Content-Length (llhttp allows one), chunked."""
    fields = [f for f in fields if f[0].lower() != b"content-length"]
    if length is not None:
        fields.insert(min(at, len(fields)), (b"Content-Length", b" %d" % length))
    raw = b"".join(b"\r\n%s: %s" % field for field in fields)
    connection = [v for n, v in fields if n.lower() == b"connection"]
    codings = [v for n, v in fields if n.lower() == b"transfer-encoding"]
    names_others = any(
        t not in {"keep-alive", "close", "upgrade", ""}
        for v in connection
        for t in v.decode("latin-1").lower().replace(" ", "").split(",")
    )
    dropped = {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"x-request-id",
    }
    kept = b"".join(b"\r\n%s: %s" % f for f in fields if f[0].lower() not in dropped)
    chunked = bool(codings) and codings[-1].strip(b" \t").lower().endswith(b"chunked")
    forward, content_length, is_chunked = scan_response_fields(raw)
    assert forward == (None if names_others else kept)
    assert content_length == length
    assert is_chunked == chunked


@pytest.mark.parametrize("connection_first", [True, False])
def test_response_to_client_hop_by_hop(connection_first: bool) -> None:
    listed = [(b"X-Hop", b"1"), (b"Connection", b"X-Hop, keep-alive")]
    if connection_first:
        listed.reverse()
    h = resp(
        *listed,
        (b"Keep-Alive", b"timeout=5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"X-Request-ID", b"server-id"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
    )
    data = response_to_client(h, b"rid", chunked=True, close=False)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert without_date(headers_of(data)) == [
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"transfer-encoding", b"chunked"),
        (b"x-request-id", b"rid"),
    ]


@pytest.mark.parametrize(
    ("chunked", "close", "cl", "expected"),
    [
        (False, False, 5, [(b"content-length", b"5"), (b"x-request-id", b"r")]),
        (True, False, None, [(b"transfer-encoding", b"chunked"), (b"x-request-id", b"r")]),
        (False, True, None, [(b"x-request-id", b"r"), (b"connection", b"close")]),
    ],
)
def test_response_to_client_framing(
    chunked: bool, close: bool, cl: int | None, expected: list
) -> None:
    h = resp((b"Content-Length", b"5"), cl=cl)
    got = headers_of(response_to_client(h, b"r", chunked=chunked, close=close))
    assert without_date(got) == expected


def test_content_length_is_each_responses_own_past_the_memo_of_lengths() -> None:
    """The Content-Length field is kept formatted by length (a bounded memo that starts again
    when full): each response still gets its own length, before and after that."""
    for length in [*range(1500), 2**40, 0, 13, 1499]:
        got = headers_of(response_to_client(resp(cl=length), b"r", chunked=False, close=False))
        assert got[0] == (b"content-length", str(length).encode())


@pytest.mark.parametrize("name", [None, b"Date", b"date", b"DATE"])
def test_a_response_without_date_gets_one(name: bytes | None) -> None:
    """RFC 9110 §6.6.1: a recipient with a clock MUST add Date to a response it forwards
    without one; one that has it (any spelling) goes on as it came, with no second."""
    date = b"Thu, 26 Nov 2026 15:00:00 GMT"
    fields = [(b"Server", b"s")] + ([(name, date)] if name else [])
    for head in (resp(*fields, cl=0), raw_resp(*fields)):
        got = headers_of(response_to_client(head, b"r", chunked=False, close=False))
        dates = [v for n, v in got if n == b"date"]
        if name is None:
            assert len(dates) == 1 and IMF_FIXDATE.fullmatch(dates[0])
        else:
            assert dates == [date]


def test_response_101_keeps_upgrade() -> None:
    h = resp((b"Connection", b"Upgrade"), (b"Upgrade", b"websocket"), status=101)
    got = headers_of(response_to_client(h, b"r", chunked=False, close=True))
    assert (b"connection", b"upgrade") in got and (b"upgrade", b"websocket") in got
    assert (b"connection", b"close") not in got


def test_informational() -> None:
    h = ResponseHead(
        103, b"Early Hints", "1.1", [(b"Link", b"</a>"), (b"Connection", b"x")], True, None, False
    )
    assert informational_to_client(h) == b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"


@pytest.mark.parametrize(
    ("method", "status", "body"),
    [
        ("GET", 200, True),
        ("HEAD", 200, False),
        ("GET", 204, False),
        ("GET", 304, False),
        ("GET", 100, False),
        ("POST", 404, True),
    ],
)
def test_response_has_body(method: str, status: int, body: bool) -> None:
    assert response_has_body(method, status) is body


def test_encode_chunk() -> None:
    assert encode_chunk(b"a" * 26) == b"1a\r\n" + b"a" * 26 + b"\r\n"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (b"abc-123", True),
        (b"a" * 200, True),
        (b"a" * 201, False),
        (b"", False),
        (b"a b", False),
        (b"a\r\nb", False),
        (b"\xff", False),
    ],
)
def test_valid_request_id(value: bytes, ok: bool) -> None:
    assert valid_request_id(value) is ok


def test_new_request_ids_are_unique_and_valid() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(valid_request_id(i) for i in ids)


@pytest.mark.parametrize("reason", list(Reason))
def test_error_response(reason: Reason) -> None:
    data = error_response(reason, "why", b"rid")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % reason.status)
    got = dict(headers_of(data))
    assert got[b"x-lb-error"] == reason.name.encode()
    assert got[b"content-type"] == b"text/plain; charset=utf-8"
    assert got[b"content-length"] == b"%d" % len(body)
    assert got[b"x-request-id"] == b"rid"
    assert b"why" in body


STRIP = (b"cdn-cache-control", b"x-cache")


@pytest.mark.parametrize("make", [resp, raw_resp], ids=["parsed", "raw"])
def test_remove_fields_drops_each_named_field_in_any_case(
    make: Callable[..., ResponseHead],
) -> None:
    h = make((b"Server", b"s"), (b"CDN-Cache-Control", b"max-age=60"), (b"X-Cache", b"HIT"))
    h.remove_fields(frozenset(STRIP))
    got = headers_of(response_to_client(h, b"r", chunked=False, close=False))
    assert (b"server", b"s") in got
    assert not [n for n, _ in got if n in STRIP]


def test_remove_fields_leaves_a_raw_block_without_them_forwardable() -> None:
    h = raw_resp((b"Server", b"s"), (b"Content-Type", b"text/plain"))
    forward = h.forward
    h.remove_fields(frozenset(STRIP))
    assert h.forward is forward is not None  # not split into fields: sent on as it came


@pytest.mark.parametrize("make", [resp, raw_resp], ids=["parsed", "raw"])
def test_remove_fields_after_by_name_drops_them_there_too(
    make: Callable[..., ResponseHead],
) -> None:
    # The cache reads a response by name (by_name) before it strips lb's fields off it.
    h = make((b"Server", b"s"), (b"x-cache", b"HIT"), (b"Cache-Control", b"no-store"))
    assert h.by_name.get(b"x-cache") == [b"HIT"]
    h.remove_fields(frozenset(STRIP))
    assert b"x-cache" not in h.by_name and h.by_name.get(b"cache-control") == [b"no-store"]
    got = headers_of(response_to_client(h, b"r", chunked=False, close=False))
    assert (b"server", b"s") in got and not [n for n, _ in got if n in STRIP]


_ASKED = sorted({n.lower() for n in _NAMES} | {b"content-len", b"x-cache", b"length", b"e"})


@given(st.lists(_field, max_size=8))
def test_by_name_of_a_raw_block_as_the_field_list_says(fields: list[tuple[bytes, bytes]]) -> None:
    """A raw block, searched by name (`RawFields`), answers as the same fields, listed and
    put in a dict by lower-case name, do: values in order, without the space around them; a
    name that is only part of another's, or in a value, is not there."""
    listed: dict[bytes, list[bytes]] = {}
    for name, value in fields:
        listed.setdefault(name.lower(), []).append(value.strip(b" \t"))
    raw = raw_resp(*fields).by_name
    parsed = resp(*[(n, v.strip(b" \t")) for n, v in fields]).by_name
    for name in _ASKED:
        assert raw.get(name) == parsed.get(name) == listed.get(name), name
        assert (name in raw) == (name in parsed) == (name in listed)
        if name in listed:
            assert raw[name] == listed[name]
        else:
            with pytest.raises(KeyError):
                raw[name]
