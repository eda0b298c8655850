"""Both parser adapters against one table: bytes in, our events out, the same for each."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lb.core.errors import HTTPError, Reason
from lb.core.forwarding import response_to_client
from lb.core.http import RequestHead, ResponseHead
from lb.protocols import request_parser, response_parser
from tests.proxy.test_l7_errors import SMUGGLING

KINDS = ["httptools", "h11"]


def feed(parser: Any, data: bytes, bytewise: bool) -> None:
    """Feed `data` in one read, or one byte per read."""
    if bytewise:
        for i in range(len(data)):
            parser.feed(data[i : i + 1])
    else:
        parser.feed(data)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_request_head(self, head: RequestHead) -> None:
        self.events.append(("head", (head.method, head.target, head.content_length, head.chunked)))

    def on_response_head(self, head: ResponseHead) -> None:
        self.events.append(("head", (head.status, head.content_length, head.keep_alive)))

    def on_request_body(self, data: bytes) -> None:
        self._data("body", data)

    def on_response_body(self, data: bytes) -> None:
        self._data("body", data)

    def _data(self, kind: str, data: bytes) -> None:
        """Consecutive pieces are joined: how bytes are split into events is free."""
        if self.events and self.events[-1][0] == kind:
            self.events[-1] = (kind, self.events[-1][1] + data)
        else:
            self.events.append((kind, data))

    def on_request_end(self) -> None:
        self.events.append(("end", None))

    def on_response_end(self) -> None:
        self.events.append(("end", None))

    def on_upgrade_data(self, data: bytes) -> None:
        self._data("upgrade", data)


REQUESTS = [
    (
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
        [("head", ("GET", b"/a", None, False)), ("end", None)],
    ),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        [
            ("head", ("POST", b"/", 5, False)),
            ("body", b"hello"),
            ("end", None),
            ("head", ("GET", b"/b", None, False)),
            ("end", None),
        ],
    ),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n",
        [("head", ("POST", b"/", None, True)), ("body", b"abcde"), ("end", None)],
    ),
    (
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n",
        [("head", ("GET", b"/", None, False)), ("end", None)] * 2,
    ),
    (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
        b"\x81\x00raw",
        [("head", ("GET", b"/ws", None, False)), ("end", None), ("upgrade", b"\x81\x00raw")],
    ),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("data", "events"), REQUESTS)
@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
def test_request_events(kind: str, data: bytes, events: list, split: bool) -> None:
    rec = Recorder()
    parser = request_parser(rec, 64 * 1024, kind)
    feed(parser, data, split)
    assert rec.events == events


class Versions(Recorder):
    def on_request_head(self, head: RequestHead) -> None:
        self.events.append(("head", (head.method, head.target, head.version)))


# Bodies and targets that spell a request line's method or version: the httptools adapter
# reads a GET and the version off the read where a request line begins it, and must not be
# fooled by these.
_SPELLED = st.sampled_from(
    [b"", b" HTTP/1.1\r\n", b"x HTTP/1.0\r", b"HTTP/1.1", b"abc", b"GET / HTTP/1.1\r\n"]
)
_MESSAGE = st.tuples(
    st.sampled_from(["GET", "POST", "HEAD", "DELETE", "OPTIONS"]),
    st.sampled_from([b"/", b"/a", b"/HTTP/1.1", b"/x?v=HTTP/1.0", b"*"]),
    st.sampled_from(["1.0", "1.1"]),
    _SPELLED,
    st.sampled_from([b"", b"\r\n", b"\r\n\r\n"]),  # empty lines before it
)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=300, deadline=None)
@given(messages=st.lists(_MESSAGE, min_size=1, max_size=4), cuts=st.lists(st.integers(0, 400)))
def test_request_versions_pipelined_and_split(kind: str, messages: list, cuts: list) -> None:
    """Each request's method and version are the ones its line says, however the reads are
    cut and whatever came before it in a read."""
    data = b""
    expected = []
    for method, target, version, body, blank in messages:
        target = b"*" if method == "OPTIONS" else target.replace(b"*", b"/")
        if method != "POST":
            body = b""
        if data and kind == "httptools":  # llhttp skips empty lines between messages
            data += blank
        data += b"%s %s HTTP/%s\r\nHost: x\r\nConnection: keep-alive\r\n" % (
            method.encode(),
            target,
            version.encode(),
        )
        data += b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        expected.append(("head", (method, target, version)))
    rec = Versions()
    parser = request_parser(rec, 64 * 1024, kind)
    at = 0
    for cut in sorted({c for c in cuts if c < len(data)} | {len(data)}):
        if cut > at:
            parser.feed(data[at:cut])
            at = cut
    assert [e for e in rec.events if e[0] == "head"] == expected


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(SMUGGLING))
def test_smuggling_refused_before_a_head_is_delivered(kind: str, name: str) -> None:
    rec = Recorder()
    data = SMUGGLING[name]
    with pytest.raises(HTTPError) as info:
        request_parser(rec, 64 * 1024, kind).feed(data)
    assert info.value.reason is Reason.bad_request
    if b"\r\n\r\n" in data and not name.startswith("chunk"):
        # A problem in the head is found before the head is handed on.
        assert not [e for e in rec.events if e[0] == "head"]


@pytest.mark.parametrize("kind", KINDS)
def test_head_too_large(kind: str) -> None:
    parser = request_parser(Recorder(), 1024, kind)
    with pytest.raises(HTTPError) as info:
        parser.feed(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 2000 + b"\r\n\r\n")
    assert info.value.reason is Reason.headers_too_large
    parser = request_parser(Recorder(), 1024, kind)
    parser.feed(b"GET / HTTP/1.1\r\nX-A: ")
    assert parser.in_head
    with pytest.raises(HTTPError) as info:
        for _ in range(10):
            parser.feed(b"a" * 200)  # a header line that never ends
    assert info.value.reason is Reason.headers_too_large


@pytest.mark.parametrize("kind", KINDS)
def test_head_too_large_across_reads(kind: str) -> None:
    """A head begun after a body, in the same read, and ended in a later one: still bounded."""
    parser = request_parser(Recorder(), 1024, kind)
    parser.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n")
    parser.feed(b"okGET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 700)
    with pytest.raises(HTTPError) as info:
        parser.feed(b"a" * 700 + b"\r\n\r\n")
    assert info.value.reason is Reason.headers_too_large
    # In one read, within the bound, however many fields: accepted.
    parser = request_parser(rec := Recorder(), 1024, kind)
    parser.feed(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"a:b\r\n" * 150 + b"\r\n")
    assert rec.events[0][0] == "head"


RESPONSES = [
    (
        "GET",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        False,
        [("head", (200, 2, True)), ("body", b"ok"), ("end", None)],
    ),
    (
        "HEAD",
        b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n",
        False,
        [("head", (200, 20, True)), ("end", None)],
    ),
    (
        "GET",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        False,
        [("head", (204, None, True)), ("end", None)],
    ),
    (
        "GET",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
        False,
        [("head", (304, 9, True)), ("end", None)],
    ),
    (
        "GET",
        b"HTTP/1.1 103 Early Hints\r\nLink: <a>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        False,
        [("head", (103, None, True)), ("head", (200, 0, True)), ("end", None)],
    ),
    (
        "GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
        False,
        [("head", (200, None, True)), ("body", b"a"), ("end", None)],
    ),
    (
        "GET",
        b"HTTP/1.1 200 OK\r\n\r\nuntil close",
        True,
        [("head", (200, None, False)), ("body", b"until close"), ("end", None)],
    ),
    (
        "GET",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        False,
        [("head", (200, 0, False)), ("end", None)],
    ),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("method", "data", "eof", "events"), RESPONSES)
def test_response_events(kind: str, method: str, data: bytes, eof: bool, events: list) -> None:
    rec = Recorder()
    parser = response_parser(rec, 64 * 1024, kind)
    parser.expect(method)
    parser.feed(data)
    if eof:
        assert parser.feed_eof()
    assert rec.events == events


@pytest.mark.parametrize("kind", KINDS)
def test_response_101_then_tunnel(kind: str) -> None:
    rec = Recorder()
    parser = response_parser(rec, 64 * 1024, kind)
    parser.expect("GET", upgrade=True)
    parser.feed(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: ws\r\n\r\nab")
    parser.feed(b"cd")
    assert rec.events[0] == ("head", (101, None, True)) or rec.events[0][1][0] == 101
    assert rec.events[-1] == ("upgrade", b"abcd")


@pytest.mark.parametrize("kind", KINDS)
def test_malformed_response(kind: str) -> None:
    parser = response_parser(Recorder(), 64 * 1024, kind)
    parser.expect("GET")
    with pytest.raises(HTTPError) as info:
        parser.feed(b"HTTP/1.1 2x0 OK\r\n\r\n")
    assert info.value.reason is Reason.backend_failed


class HeadRecorder(Recorder):
    """Also records what a response head carries on: reason and fields as the proxy sees them."""

    def on_response_head(self, head: ResponseHead) -> None:
        self.events.append(("head", (head.status, head.reason, head.headers, head.chunked)))


KEPT_ALIVE = [  # (method, bytes of one response), sent one after another on one connection
    ("GET", b"HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 2\r\n\r\nok"),
    (
        "GET",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nA:1\r\nContent-Length: 0\r\n\r\n",
    ),
    ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nB: x y\r\n\r\n"),
    ("GET", b'HTTP/1.1 304 Not Modified\r\nETag: "e"\r\n\r\n'),
    ("GET", b"HTTP/1.1 200\r\nTransfer-Encoding: chunked\r\nC: \t3 \r\n\r\n1\r\nz\r\n0\r\n\r\n"),
]
KEPT_ALIVE_EVENTS = [
    ("head", (200, b"OK", [(b"Server", b"s"), (b"Content-Length", b"2")], False)),
    ("body", b"ok"),
    ("end", None),
    ("head", (100, b"Continue", [], False)),
    ("head", (201, b"Created", [(b"A", b"1"), (b"Content-Length", b"0")], False)),
    ("end", None),
    ("head", (200, b"OK", [(b"Content-Length", b"9"), (b"B", b"x y")], False)),
    ("end", None),
    ("head", (304, b"Not Modified", [(b"ETag", b'"e"')], False)),
    ("end", None),
    ("head", (200, b"-", [(b"Transfer-Encoding", b"chunked"), (b"C", b"3")], True)),
    ("body", b"z"),
    ("end", None),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
def test_kept_alive_response_heads(kind: str, split: bool) -> None:
    """Heads split anywhere across reads, one response after another on one connection."""
    rec = HeadRecorder()
    parser = response_parser(rec, 64 * 1024, kind)
    for method, data in KEPT_ALIVE:
        parser.expect(method)
        feed(parser, data, split)
    assert rec.events == KEPT_ALIVE_EVENTS


def test_httptools_refuses_bytes_after_a_response() -> None:
    """lb sends one request at a time: a second response in the read that ended the first is
    the server speaking out of turn, never taken for the next exchange's answer."""
    rec = HeadRecorder()
    parser = response_parser(rec, 64 * 1024, "httptools")
    parser.expect("GET")
    with pytest.raises(HTTPError) as info:
        parser.feed(KEPT_ALIVE[0][1] * 2)
    assert info.value.reason is Reason.backend_failed
    assert [e[0] for e in rec.events] == ["head", "body", "end"]


@pytest.mark.parametrize("kind", KINDS)
def test_response_head_too_large(kind: str) -> None:
    parser = response_parser(Recorder(), 1024, kind)
    parser.expect("GET")
    with pytest.raises(HTTPError) as info:
        parser.feed(b"HTTP/1.1 200 OK\r\nX-A: ")
        for _ in range(10):
            parser.feed(b"a" * 200)
        parser.feed(b"\r\n\r\n")
    assert info.value.reason is Reason.backend_failed


class Heads(Recorder):
    def on_response_head(self, head: ResponseHead) -> None:
        self.events.append(("head", head))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("fields", "body", "theirs"),
    [
        (b"Date: Thu, 26 Nov 2026 15:00:00 GMT\r\n", b"ok", True),
        (b"date: Thu, 26 Nov 2026 15:00:00 GMT\r\n", b"ok", True),
        (b"DATE: Thu, 26 Nov 2026 15:00:00 GMT\r\n", b"ok", True),
        (b"X-Date: no\r\n", b"ok", False),
        (b"", b"ok", False),
        # The body spells a Date field; the head has none: one is added all the same.
        (b"", b"\r\nDate: Thu, 26 Nov 2026 15:00:00 GMT\r\n", False),
    ],
    ids=["Date", "date", "DATE", "x-date", "none", "in-body"],
)
def test_a_parsed_response_goes_on_with_exactly_one_date(
    kind: str, fields: bytes, body: bytes, theirs: bool
) -> None:
    """RFC 9110 §6.6.1: the server's Date goes on as it came; a head without one (whatever
    its body holds) gets lb's."""
    rec = Heads()
    parser = response_parser(rec, 64 * 1024, kind)
    parser.expect("GET")
    parser.feed(b"HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s" % (fields, len(body), body))
    head = rec.events[0][1]
    sent = response_to_client(head, b"r", chunked=False, close=False).lower()
    dates = [line for line in sent.split(b"\r\n") if line.startswith(b"date:")]
    if theirs:
        assert dates == [b"date: thu, 26 nov 2026 15:00:00 gmt"]
    else:
        assert len(dates) == 1 and b"2026 15:00:00" not in dates[0]
