"""Router: each condition of `match` as a table, first match wins, per-listener route lists."""

from __future__ import annotations

import pytest
import yaml

from lb.config import load_config_text
from lb.core.http import RequestHead
from lb.core.router import Router, compile_router

ROUTES = [
    {"name": "host", "match": {"host": "api.example.com"}},
    {"name": "wild", "match": {"host": "*.example.com"}},
    {"name": "path", "match": {"path": "/exact"}},
    {"name": "prefix", "match": {"path_prefix": "/pre/"}},
    {"name": "regex", "match": {"path_regex": "^/v[12]/"}},
    {"name": "method", "match": {"methods": ["delete", "PATCH"]}},
    {"name": "header", "match": {"headers": {"X-Beta": "1"}}},
    {"name": "present", "match": {"headers": {"x-flag": {"present": True}}}},
    {"name": "absent", "match": {"headers": {"x-absent": {"present": False}}, "path": "/abs"}},
    {"name": "hregex", "match": {"headers": {"x-version": {"regex": "^2\\."}}}},
    {"name": "cookie", "match": {"cookies": {"plan": "premium"}}},
    {"name": "cookie_present", "match": {"cookies": {"beta": {"present": True}}}},
    {"name": "cookie_regex", "match": {"cookies": {"tier": {"regex": "^gold"}}}},
    {
        "name": "all",
        "match": {
            "host": "all.test",
            "path_prefix": "/a",
            "methods": ["POST"],
            "headers": {"x-k": "v"},
            "cookies": {"c": "1"},
        },
    },
]


def router(routes: list[dict], listeners: dict | None = None) -> Router:
    doc = {
        "version": 1,
        "listeners": listeners or {"web": {"bind": "127.0.0.1:0"}},
        "routes": [dict(r, pool="app") for r in routes],
        "pools": {"app": {"servers": [{"address": "127.0.0.1:1"}]}},
    }
    return compile_router(load_config_text(yaml.safe_dump(doc)))


def head(
    path: str = "/", host: str | None = "other.test", method: str = "GET", **headers: str
) -> RequestHead:
    fields = [] if host is None else [(b"Host", host.encode())]
    for name, value in headers.items():
        fields.append((name.replace("_", "-").encode(), value.encode()))
    return RequestHead(method, path.encode(), "1.1", fields)


CASES = [
    (head(host="api.example.com"), "host"),
    (head(host="API.EXAMPLE.COM"), "host"),
    (head(host="api.example.com:8443"), "host"),
    (head(host="www.example.com"), "wild"),
    (head(host="a.b.example.com"), "wild"),
    (head(host="example.com"), None),
    (head(host="badexample.com"), None),
    (head(host=None), None),
    (head("/exact"), "path"),
    (head("/exact?x=1"), "path"),
    (head("/exact/"), None),
    (head("/Exact"), None),
    (head("/pre/"), "prefix"),
    (head("/pre/deep/er"), "prefix"),
    (head("/pre"), None),
    (head("/%70re/x"), "prefix"),  # percent-decoded before matching
    (head("http://api.other/pre/x"), "prefix"),  # absolute-form: the path is matched
    (head("/v1/x"), "regex"),
    (head("/x/v1/"), None),  # anchored
    (head(method="DELETE"), "method"),
    (head(method="PATCH"), "method"),
    (head(method="POST"), None),
    (head(x_beta="1"), "header"),
    (head(X_BETA="1"), "header"),  # header names are case-insensitive
    (head(x_beta="10"), None),
    (head(x_flag=""), "present"),
    (head("/abs"), "absent"),
    (head("/abs", x_absent="1"), None),
    (head(x_version="2.1"), "hregex"),
    (head(x_version="12.1"), None),
    (head(cookie="plan=premium"), "cookie"),
    (head(cookie="a=b; plan=premium; c=d"), "cookie"),
    (head(cookie="plan=premium2"), None),
    (head(cookie="xplan=premium"), None),
    (head(cookie="beta="), "cookie_present"),
    (head(cookie="tier=golden"), "cookie_regex"),
    (head(cookie="tier=silver"), None),
    (head("/a1", host="all.test", method="POST", x_k="v", cookie="c=1"), "all"),
    (head("/a1", host="all.test", method="POST", x_k="v", cookie="c=2"), None),
    (head("/a1", host="all.test", method="POST", cookie="c=1"), None),
    (head("/b", host="all.test", method="POST", x_k="v", cookie="c=1"), None),
    # First match wins: every one of these matches several routes.
    (head("/exact", host="api.example.com", x_beta="1"), "host"),
    (head("/exact", host="www.example.com", x_beta="1"), "wild"),
    (head("/v1/", method="DELETE", cookie="plan=premium"), "regex"),
    (head(method="DELETE", x_beta="1"), "method"),
]


@pytest.mark.parametrize(("request_head", "expected"), CASES, ids=repr)
def test_match(request_head: RequestHead, expected: str | None) -> None:
    route = router(ROUTES).match("web", request_head)
    assert (route.name if route else None) == expected


def test_repeated_cookie_headers_are_joined() -> None:
    h = RequestHead(
        "GET", b"/", "1.1", [(b"Host", b"x"), (b"Cookie", b"a=1"), (b"cookie", b"plan=premium")]
    )
    route = router(ROUTES).match("web", h)
    assert route is not None and route.name == "cookie"


def test_routes_apply_to_their_listeners_in_order() -> None:
    r = router(
        [
            {"name": "only-b", "listeners": ["b"], "match": {"path_prefix": "/"}},
            {"name": "both", "match": {}},
        ],
        listeners={"a": {"bind": "127.0.0.1:0"}, "b": {"bind": "127.0.0.1:0"}},
    )
    assert [x.name for x in r.routes("a")] == ["both"]
    assert [x.name for x in r.routes("b")] == ["only-b", "both"]
    assert r.match("a", head()).name == "both"
    assert r.match("b", head()).name == "only-b"
    assert r.match("nope", head()) is None


def test_route_settings_are_resolved() -> None:
    r = router(
        [
            {"name": "x", "match": {}, "max_body_size": "1KiB", "timeouts": {"request": "1s"}},
        ]
    )
    (route,) = r.routes("web")
    assert route.max_body_size == 1024
    assert route.timeouts.request == 1.0
    assert route.timeouts.connect == 2.0  # from the defaults
