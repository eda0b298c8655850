"""HTTP/1.1 edges over real sockets (issue 16): absolute-form targets, transfer codings lb
cannot decode, HTTP/1.0 without Host, header names with underscores, and connections that
send nothing before the header timeout. Every test runs with both parsers."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from tests.conftest import Message, handlers, one_pool, wait_until
from tests.proxy.test_l7_errors import assert_lb_error


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def by_host(*origins, **listener) -> dict:
    """Pool `a` for Host a.example, pool `other` for anything else."""
    a, other = origins
    return {
        "listeners": {"web": listener},
        "routes": [
            {"name": "a", "match": {"host": "a.example"}, "pool": "a"},
            {"name": "rest", "match": {}, "pool": "other"},
        ],
        "pools": {
            "a": {"servers": [{"address": a.address}]},
            "other": {"servers": [{"address": other.address}]},
        },
    }


# RFC 9112 §3.2.2: an absolute-form target's authority wins over Host -----------------------


async def test_absolute_form_routes_on_its_authority_and_goes_on_in_origin_form(
    origin, proxy, connect
):
    a, other = await origin(handlers.echo()), await origin(handlers.echo())
    w = await proxy(by_host(a, other))
    c = await connect(w)
    r = await c.request(b"GET http://a.example/p?q HTTP/1.1\r\nHost: b.example\r\n\r\n")
    assert r.status == 200
    assert not other.requests
    (sent,) = a.requests
    assert sent.target == "/p?q"
    assert sent.all("host") == ["a.example"]
    assert sent.header("x-forwarded-host") == "a.example"
    # An authority with a port and no path; the Host header's case as sent.
    r = await c.request(b"GET HTTP://A.example:8080?x=1 HTTP/1.1\r\nHost: b.example\r\n\r\n")
    assert r.status == 200
    assert (a.requests[-1].target, a.requests[-1].all("host")) == ("/?x=1", ["A.example:8080"])
    # Origin-form is unchanged: Host decides.
    r = await c.request(b"GET /o HTTP/1.1\r\nHost: b.example\r\n\r\n")
    assert r.status == 200
    assert (other.requests[-1].target, other.requests[-1].all("host")) == ("/o", ["b.example"])


@pytest.mark.parametrize(
    "target",
    [b"http://user@a.example/", b"ftp://a.example/", b"http:///p", b"a.example/p"],
)
async def test_a_target_neither_path_nor_http_uri_is_400(origin, proxy, connect, target):
    o = await origin(handlers.echo())
    w = await proxy(one_pool(o))
    c = await connect(w)
    r = await c.request(b"GET %s HTTP/1.1\r\nHost: b.example\r\n\r\n" % target)
    assert_lb_error(r, 400, "bad_request")
    assert not o.requests


# RFC 9112 §6.1: a transfer coding lb does not know is 501 ------------------------------------

NOT_IMPLEMENTED = {
    "gzip": b"gzip",
    "identity": b"identity",
    "gzip_then_chunked": b"gzip, chunked",
    "with_parameter": b"chunked;ext=1",
    "unknown": b"xchunked",
}


@pytest.mark.parametrize("name", list(NOT_IMPLEMENTED))
async def test_unknown_transfer_coding_is_501_and_closes(origin, proxy, connect, name):
    o = await origin(handlers.echo())
    w = await proxy(one_pool(o))
    c = await connect(w)
    coding = NOT_IMPLEMENTED[name]
    await c.send(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: %s\r\n\r\n3\r\nabc\r\n0\r\n\r\n" % coding
    )
    r = await c.response()
    assert_lb_error(r, 501, "not_implemented")
    assert r.header("connection") == "close"
    assert await c.closed()
    assert not o.requests and o.connections == 0


async def test_chunked_not_last_stays_400(origin, proxy, connect):
    o = await origin(handlers.echo())
    w = await proxy(one_pool(o))
    c = await connect(w)
    r = await c.request(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"
    )
    assert_lb_error(r, 400, "bad_request")
    assert not o.requests


# RFC 9112 §3.2: Host is required in HTTP/1.1 only ---------------------------------------------


async def test_http10_without_host_is_routed_as_an_empty_host(origin, proxy, connect):
    a, other = await origin(handlers.echo()), await origin(handlers.echo())
    w = await proxy(by_host(a, other))
    c = await connect(w)
    r = await c.request(b"GET /ten HTTP/1.0\r\n\r\n")
    assert r.status == 200
    assert not a.requests  # the host-matching route does not match an empty host
    (sent,) = other.requests
    assert sent.target == "/ten"
    # lb speaks HTTP/1.1 to the server, where Host is required: the address the client reached.
    host, port = w.addresses["web"]
    assert sent.all("host") == [f"{host}:{port}"]
    assert not sent.has("x-forwarded-host")
    # HTTP/1.1 without Host is still refused.
    c = await connect(w)
    assert_lb_error(await c.request(b"GET / HTTP/1.1\r\n\r\n"), 400, "bad_request")


async def test_http10_without_host_and_no_catch_all_is_404(origin, proxy, connect):
    o = await origin(handlers.echo())
    routes = [{"match": {"host": "a.example"}, "pool": "app"}]
    w = await proxy(one_pool(o, routes=routes))
    c = await connect(w)
    assert_lb_error(await c.request(b"GET / HTTP/1.0\r\n\r\n"), 404, "no_route")


# Header names with underscores ----------------------------------------------------------------

UNDERSCORED = (
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer_Encoding: chunked\r\n"
    b"Content_Length: 99\r\nX_Custom: 1\r\nX-Dashed: 2\r\n\r\nabc"
)


async def test_underscored_header_names_are_dropped_by_default(origin, proxy, connect):
    app, matched = await origin(handlers.echo()), await origin(handlers.echo())
    config = one_pool(app)
    config["pools"]["matched"] = {"servers": [{"address": matched.address}]}
    config["routes"].insert(0, {"match": {"headers": {"x_custom": "1"}}, "pool": "matched"})
    w = await proxy(config)
    c = await connect(w)
    r = await c.request(UNDERSCORED)
    assert r.status == 200
    assert not matched.requests  # dropped before routing: no route sees them
    (sent,) = app.requests
    assert [n for n, _ in sent.headers if "_" in n] == []
    assert sent.header("x-dashed") == "2"
    assert (sent.header("content-length"), sent.body) == ("3", b"abc")


async def test_underscored_header_names_pass(origin, proxy, connect):
    o = await origin(handlers.echo())
    w = await proxy(one_pool(o, listeners={"web": {"underscores_in_headers": "pass"}}))
    c = await connect(w)
    assert (await c.request(UNDERSCORED)).status == 200
    (sent,) = o.requests
    assert sent.header("x_custom") == "1"
    assert sent.header("transfer_encoding") == "chunked"
    assert sent.body == b"abc"


async def test_underscored_header_names_refused(origin, proxy, connect):
    o = await origin(handlers.echo())
    w = await proxy(one_pool(o, listeners={"web": {"underscores_in_headers": "refuse"}}))
    c = await connect(w)
    r = await c.request(UNDERSCORED)
    assert_lb_error(r, 400, "bad_request")
    assert b"Transfer_Encoding" in r.body
    assert await c.closed()
    assert not o.requests
    # Names without one still go through.
    c = await connect(w)
    assert (await c.request(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n")).status == 200


# lb_connection_errors_total{cause="client_header_timeout"} -----------------------------------


async def test_a_connection_that_sends_nothing_counts_as_a_header_timeout(origin, proxy, connect):
    o = await origin()
    timeouts = {"client_header": "200ms", "idle": "200ms"}
    w = await proxy(one_pool(o, defaults={"timeouts": timeouts}))

    def count() -> float:
        return metric("lb_connection_errors_total", listener="web", cause="client_header_timeout")

    before = count()
    silent = await connect(w)
    assert await silent.closed(timeout=5.0)
    assert await silent.reader.read() == b""  # closed without an answer: no request to answer
    await wait_until(lambda: count() == before + 1)
    # An idle keep-alive connection closed after its requests is not a header timeout.
    served = await connect(w)
    assert (await served.request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")).status == 200
    assert await served.closed(timeout=5.0)
    await wait_until(lambda: not w.connections["web"])
    assert count() == before + 1
    # A head begun and not finished is counted, as before, with its 408.
    partial = await connect(w)
    await partial.send(b"GET / HTTP/1.1\r\n")
    r: Message = await partial.response(timeout=5.0)
    assert_lb_error(r, 408, "request_timeout")
    assert count() == before + 2
