"""Routing over real sockets: each condition of `match`, first match wins, 404 no_route."""

from __future__ import annotations

import pytest

from tests.conftest import handlers

ROUTES = [
    ("host", {"host": "api.example.com"}),
    ("wild", {"host": "*.example.com"}),
    ("path", {"path": "/exact"}),
    ("prefix", {"path_prefix": "/pre/"}),
    ("regex", {"path_regex": "^/v[12]/"}),
    ("method", {"methods": ["DELETE"]}),
    ("header", {"headers": {"x-beta": "1"}}),
    ("present", {"headers": {"x-flag": {"present": True}}}),
    ("hregex", {"headers": {"x-version": {"regex": "^2\\."}}}),
    ("cookie", {"cookies": {"plan": "premium"}}),
    ("both", {"host": "both.test", "path_prefix": "/b", "methods": ["POST"]}),
]


def req(path: str = "/", host: str = "other.test", method: str = "GET", extra: str = "") -> bytes:
    body = "Content-Length: 0\r\n" if method == "POST" else ""
    return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{body}{extra}\r\n".encode()


CASES = [
    (req(host="api.example.com"), "host"),
    (req(host="API.Example.com:8080"), "host"),  # case and port do not matter
    (req(host="www.example.com"), "wild"),
    (req(host="a.b.example.com"), "wild"),
    (req(host="example.com"), None),  # *. needs a label before the suffix
    (req(host="notexample.com"), None),
    (req("/exact"), "path"),
    (req("/exact?q=1"), "path"),  # the query is not part of the path
    (req("/exact/"), None),
    (req("/pre/x/y"), "prefix"),
    (req("/pre"), None),
    (req("/v2/users"), "regex"),
    (req("/v3/users"), None),
    (req("/x", method="DELETE"), "method"),
    (req(extra="X-Beta: 1\r\n"), "header"),
    (req(extra="x-beta: 2\r\n"), None),
    (req(extra="X-Flag: \r\n"), "present"),
    (req(extra="X-Version: 2.5\r\n"), "hregex"),
    (req(extra="X-Version: 1.2\r\n"), None),
    (req(extra="Cookie: a=1; plan=premium\r\n"), "cookie"),
    (req(extra="Cookie: a=1\r\nCookie: plan=premium\r\n"), "cookie"),
    (req(extra="Cookie: plan=free\r\n"), None),
    (req("/b", host="both.test", method="POST"), "both"),
    (req("/b", host="both.test"), None),  # all conditions must hold
    # First match wins: matches "host" and "path" and "header"; "host" is first.
    (req("/exact", host="api.example.com", extra="X-Beta: 1\r\n"), "host"),
    (req("/exact", extra="X-Beta: 1\r\n"), "path"),
]


@pytest.fixture
async def routed(origin, proxy):
    origins = {name: await origin(handlers.fixed(name.encode())) for name, _ in ROUTES}
    worker = await proxy(
        {
            "listeners": {"web": {}},
            "routes": [{"name": n, "match": m, "pool": n} for n, m in ROUTES],
            "pools": {n: {"servers": [{"address": o.address}]} for n, o in origins.items()},
        }
    )
    return worker, origins


async def test_every_condition_and_first_match_wins(routed, connect):
    worker, origins = routed
    c = await connect(worker)
    for raw, expected in CASES:
        r = await c.request(raw)
        if expected is None:
            assert r.status == 404, raw
            assert r.header("x-lb-error") == "no_route"
            assert r.header("content-type").startswith("text/plain")
            assert b"no route" in r.body
            c = await connect(worker)  # lb may close after its own error; start afresh
        else:
            assert (r.status, r.body.decode()) == (200, expected), raw
    assert sum(len(o.requests) for o in origins.values()) == sum(1 for _, e in CASES if e)


async def test_routes_limited_to_listeners(origin, proxy, connect):
    o = await origin(handlers.fixed(b"internal"))
    worker = await proxy(
        {
            "listeners": {"web": {}, "internal": {}},
            "routes": [
                {"listeners": ["internal"], "match": {}, "pool": "app"},
                {"listeners": ["web"], "match": {"host": "web.test"}, "pool": "app"},
            ],
            "pools": {"app": {"servers": [{"address": o.address}]}},
        }
    )
    r = await (await connect(worker, "internal")).request(req())
    assert (r.status, r.body) == (200, b"internal")
    r = await (await connect(worker, "web")).request(req())
    assert (r.status, r.header("x-lb-error")) == (404, "no_route")
    assert o.requests and len(o.requests) == 1
